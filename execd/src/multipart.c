/*
 * multipart.c: streaming multipart/form-data parser, see multipart.h.
 *
 * The stream is treated as if it started with "\r\n", so the first boundary line matches the
 * same delimiter ("\r\n--" boundary) as every later one. In the data state the parser searches
 * the buffered bytes for the delimiter; bytes that cannot be the start of a delimiter are
 * emitted at once and only the last delim_len-1 bytes are kept back.
 */
#include "multipart.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

enum { MP_PREAMBLE, MP_AFTER_DELIM, MP_HEADERS, MP_DATA, MP_END, MP_ERROR };

/* Reads one parameter value (quoted or token) starting at s into out. Returns the end. */
static const char *mp_param_value(const char *s, char *out, size_t outsz)
{
    size_t k = 0;

    if (*s == '"') {
        s++;
        while (*s && *s != '"') {
            if (*s == '\\' && s[1])
                s++;
            if (k + 1 < outsz)
                out[k++] = *s;
            s++;
        }
        if (*s == '"')
            s++;
    } else {
        while (*s && *s != ';' && *s != ' ' && *s != '\t') {
            if (k + 1 < outsz)
                out[k++] = *s;
            s++;
        }
    }
    out[k] = '\0';
    return s;
}

/* Finds parameter `name` in a header value like `form-data; name="x"; filename="y"`. */
static int mp_param(const char *v, const char *name, char *out, size_t outsz)
{
    size_t n = strlen(name);
    const char *s = strchr(v, ';');

    while (s) {
        s++;
        while (*s == ' ' || *s == '\t')
            s++;
        if (strncasecmp(s, name, n) == 0 && s[n] == '=') {
            mp_param_value(s + n + 1, out, outsz);
            return 0;
        }
        /* skip this parameter, honouring quotes */
        while (*s && *s != ';') {
            if (*s == '"') {
                s++;
                while (*s && *s != '"') {
                    if (*s == '\\' && s[1])
                        s++;
                    s++;
                }
                if (!*s)
                    break;
            }
            s++;
        }
        s = *s ? s : NULL;
    }
    return -1;
}

int mp_boundary_from_content_type(const char *ctype, char *out, size_t outsz)
{
    size_t n;

    if (!ctype || strncasecmp(ctype, "multipart/form-data", 19) != 0)
        return -1;
    if (mp_param(ctype, "boundary", out, outsz) < 0)
        return -1;
    n = strlen(out);
    if (n == 0 || n > 70 + 100) /* RFC says 70; be lenient but bounded */
        return -1;
    return 0;
}

int mp_init(struct mp *m, const char *boundary, const struct mp_callbacks *cb, void *ud)
{
    size_t n = strlen(boundary);

    memset(m, 0, sizeof(*m));
    if (n == 0 || n > MP_MAX_BOUNDARY)
        return -1;
    memcpy(m->delim, "\r\n--", 4);
    memcpy(m->delim + 4, boundary, n);
    m->delim_len = n + 4;
    m->cb = *cb;
    m->ud = ud;
    m->state = MP_PREAMBLE;
    return buf_append(&m->in, "\r\n", 2);
}

static int mp_fail(struct mp *m, const char *why)
{
    if (!m->error)
        m->error = why;
    m->state = MP_ERROR;
    return -1;
}

static int mp_headers(struct mp *m, const char *p, size_t n)
{
    struct mp_part part;
    const char *line = p, *end = p + n;
    char tmp[2048];

    memset(&part, 0, sizeof(part));
    while (line < end) {
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        size_t len = eol ? (size_t)(eol - line) : (size_t)(end - line);
        if (len >= sizeof(tmp))
            return mp_fail(m, "part header line too long");
        memcpy(tmp, line, len);
        tmp[len] = '\0';
        if (strncasecmp(tmp, "content-disposition:", 20) == 0) {
            const char *v = tmp + 20;
            while (*v == ' ' || *v == '\t')
                v++;
            if (strncasecmp(v, "form-data", 9) != 0)
                return mp_fail(m, "part is not form-data");
            mp_param(v, "name", part.name, sizeof(part.name));
            mp_param(v, "filename", part.filename, sizeof(part.filename));
        } else if (strncasecmp(tmp, "content-type:", 13) == 0) {
            const char *v = tmp + 13;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t vl = strlen(v);
            if (vl >= sizeof(part.content_type))
                vl = sizeof(part.content_type) - 1;
            memcpy(part.content_type, v, vl);
            part.content_type[vl] = '\0';
        }
        line += len + 2;
    }
    if (!part.name[0])
        return mp_fail(m, "part has no Content-Disposition name");
    if (m->cb.on_part && m->cb.on_part(m->ud, &part) < 0)
        return mp_fail(m, "rejected part");
    return 0;
}

/* Runs the state machine over the buffered bytes. */
static int mp_run(struct mp *m)
{
    for (;;) {
        char *d = m->in.data;
        size_t n = m->in.len;
        char *hit;

        switch (m->state) {
        case MP_PREAMBLE:
        case MP_DATA:
            hit = n >= m->delim_len ? memmem(d, n, m->delim, m->delim_len) : NULL;
            if (!hit) {
                size_t keep = m->delim_len - 1, emit = n > keep ? n - keep : 0;
                if (emit && m->state == MP_DATA && m->cb.on_data &&
                    m->cb.on_data(m->ud, d, emit) < 0)
                    return mp_fail(m, "write failed");
                buf_consume(&m->in, emit);
                return 0;
            }
            if (m->state == MP_DATA) {
                if (hit > d && m->cb.on_data && m->cb.on_data(m->ud, d, (size_t)(hit - d)) < 0)
                    return mp_fail(m, "write failed");
                if (m->cb.on_part_end && m->cb.on_part_end(m->ud) < 0)
                    return mp_fail(m, "rejected part");
            }
            buf_consume(&m->in, (size_t)(hit - d) + m->delim_len);
            m->state = MP_AFTER_DELIM;
            break;
        case MP_AFTER_DELIM:
            if (n < 2)
                return 0;
            if (d[0] == '-' && d[1] == '-') {
                m->state = MP_END;
                buf_reset(&m->in);
                return 0;
            }
            /* transport padding (LWSP) after the boundary is allowed */
            if (d[0] == ' ' || d[0] == '\t') {
                buf_consume(&m->in, 1);
                break;
            }
            if (d[0] != '\r' || d[1] != '\n')
                return mp_fail(m, "malformed boundary line");
            buf_consume(&m->in, 2);
            m->state = MP_HEADERS;
            break;
        case MP_HEADERS:
            if (n >= 2 && d[0] == '\r' && d[1] == '\n') {
                hit = d; /* no headers at all */
            } else {
                hit = memmem(d, n, "\r\n\r\n", 4);
                if (!hit) {
                    if (n > MP_MAX_HEADERS)
                        return mp_fail(m, "part headers too large");
                    return 0;
                }
                hit += 2;
            }
            if (mp_headers(m, d, (size_t)(hit - d)) < 0)
                return -1;
            buf_consume(&m->in, (size_t)(hit - d) + 2);
            m->state = MP_DATA;
            break;
        case MP_END:
            buf_reset(&m->in); /* epilogue is ignored */
            return 0;
        default:
            return -1;
        }
    }
}

int mp_feed(struct mp *m, const char *p, size_t n)
{
    if (m->state == MP_ERROR)
        return -1;
    if (m->state == MP_END)
        return 0;
    if (buf_append(&m->in, p, n) < 0)
        return mp_fail(m, "out of memory");
    return mp_run(m);
}

int mp_finish(struct mp *m)
{
    if (m->state == MP_END)
        return 0;
    if (m->state != MP_ERROR)
        mp_fail(m, "multipart body ended before the closing boundary");
    return -1;
}

void mp_free(struct mp *m)
{
    buf_free(&m->in);
}
