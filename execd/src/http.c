/*
 * http.c: HTTP/1.1 request head parser and body decoder, see http.h.
 *
 * The head parser is strict where ambiguity would be dangerous (request smuggling: both
 * Content-Length and Transfer-Encoding, conflicting Content-Length values, unknown
 * transfer codings, bare CR, whitespace before the colon) and lenient elsewhere (optional
 * whitespace around header values, header names in any case).
 */
#include "http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int http_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* 1 if the comma-separated header value v contains token tok (case-insensitive). */
static int http_has_token(const char *v, const char *tok)
{
    size_t n = strlen(tok);

    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        if (strncasecmp(v, tok, n) == 0 &&
            (v[n] == '\0' || v[n] == ',' || v[n] == ' ' || v[n] == '\t'))
            return 1;
        while (*v && *v != ',')
            v++;
    }
    return 0;
}

static int http_parse_framing(struct http_req *r)
{
    const char *connection = NULL;
    int i, have_te = 0;

    r->content_length = -1;
    for (i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name, *v = r->headers[i].value;
        if (strcasecmp(n, "content-length") == 0) {
            char *end;
            long long cl;
            if (*v < '0' || *v > '9')
                return HTTP_ERR_BAD;
            cl = strtoll(v, &end, 10);
            if (*end || cl < 0 || (r->content_length >= 0 && r->content_length != cl))
                return HTTP_ERR_BAD;
            r->content_length = cl;
        } else if (strcasecmp(n, "transfer-encoding") == 0) {
            if (have_te || strcasecmp(v, "chunked") != 0)
                return HTTP_ERR_NOT_IMPL;
            have_te = 1;
        } else if (strcasecmp(n, "connection") == 0) {
            connection = v;
        } else if (strcasecmp(n, "expect") == 0) {
            r->expect_continue = strcasecmp(v, "100-continue") == 0;
        }
    }
    if (have_te && r->content_length >= 0)
        return HTTP_ERR_BAD;
    r->chunked = have_te;
    r->keep_alive = r->minor >= 1;
    if (connection) {
        if (http_has_token(connection, "close"))
            r->keep_alive = 0;
        else if (http_has_token(connection, "keep-alive"))
            r->keep_alive = 1;
        r->upgrade = http_has_token(connection, "upgrade");
    }
    return 0;
}

static int http_parse_request_line(struct http_req *r, char *line)
{
    char *sp1, *sp2, *q;

    sp1 = strchr(line, ' ');
    if (!sp1 || sp1 == line)
        return HTTP_ERR_BAD;
    *sp1 = '\0';
    for (q = line; *q; q++)
        if (!http_tchar((unsigned char)*q))
            return HTTP_ERR_BAD;
    sp2 = strchr(sp1 + 1, ' ');
    if (!sp2 || sp2 == sp1 + 1)
        return HTTP_ERR_BAD;
    *sp2 = '\0';
    if (strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp2[8] < '0' || sp2[8] > '9' || sp2[9])
        return HTTP_ERR_BAD;
    r->minor = sp2[8] - '0';
    r->method = line;
    r->target = sp1 + 1;
    for (q = sp1 + 1; *q; q++)
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q == 0x7f)
            return HTTP_ERR_BAD;
    if (r->target[0] != '/')
        return HTTP_ERR_BAD; /* origin-form only */
    return 0;
}

int http_parse_head(const char *p, size_t n, struct http_req *r)
{
    const char *end = NULL;
    size_t hlen, i, skip = 0;
    char *line, *next, *q;
    int rc;

    memset(r, 0, sizeof(*r));
    /* tolerate (RFC 9112 2.2) empty lines before the request line */
    while (n >= 2 && p[0] == '\r' && p[1] == '\n' && skip < 64) {
        p += 2;
        n -= 2;
        skip += 2;
    }
    for (i = 0; i + 3 < n && i + 4 <= HTTP_MAX_HEAD; i++) {
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
            end = p + i;
            break;
        }
    }
    if (!end)
        return n >= HTTP_MAX_HEAD ? HTTP_ERR_TOO_LARGE : 0;
    hlen = (size_t)(end - p);
    r->head = malloc(hlen + 3);
    if (!r->head)
        return HTTP_ERR_BAD;
    memcpy(r->head, p, hlen);
    r->head[hlen] = '\r';
    r->head[hlen + 1] = '\n';
    r->head[hlen + 2] = '\0';
    for (i = 0; i < hlen; i++)
        if (r->head[i] == '\0' || (r->head[i] == '\r' && r->head[i + 1] != '\n'))
            goto bad;

    line = r->head;
    next = strstr(line, "\r\n");
    *next = '\0';
    rc = http_parse_request_line(r, line);
    if (rc < 0)
        goto fail;
    line = next + 2;
    while (*line) {
        char *colon, *v, *ve;
        next = strstr(line, "\r\n");
        *next = '\0';
        if (*line == ' ' || *line == '\t')
            goto bad; /* obsolete line folding */
        colon = strchr(line, ':');
        if (!colon || colon == line)
            goto bad;
        for (q = line; q < colon; q++)
            if (!http_tchar((unsigned char)*q))
                goto bad;
        *colon = '\0';
        v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        ve = v + strlen(v);
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            *--ve = '\0';
        if (r->nheaders == HTTP_MAX_HEADERS) {
            rc = HTTP_ERR_TOO_LARGE;
            goto fail;
        }
        r->headers[r->nheaders].name = line;
        r->headers[r->nheaders].value = v;
        r->nheaders++;
        line = next + 2;
    }
    rc = http_parse_framing(r);
    if (rc < 0)
        goto fail;
    /* split path and query in a separate copy so target stays intact */
    {
        size_t tl = strlen(r->target);
        char *pq = malloc(tl + 2), *qm;
        if (!pq)
            goto bad;
        memcpy(pq, r->target, tl + 1);
        qm = strchr(pq, '?');
        if (qm) {
            *qm = '\0';
            r->query = qm + 1;
        } else {
            pq[tl + 1] = '\0';
            r->query = pq + tl + 1;
        }
        r->path = pq;
    }
    return (int)(skip + hlen + 4);
bad:
    rc = HTTP_ERR_BAD;
fail:
    free(r->head);
    r->head = NULL;
    return rc;
}

void http_req_free(struct http_req *r)
{
    free(r->head);
    free((char *)r->path);
    r->head = NULL;
    r->path = NULL;
}

const char *http_header(const struct http_req *r, const char *name)
{
    int i;

    for (i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

enum {
    CH_SIZE,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,
    CH_TRAILER_LF,
    CH_DONE
};

void http_body_init(struct http_body *b, const struct http_req *r)
{
    memset(b, 0, sizeof(*b));
    b->chunked = r->chunked;
    b->left = r->content_length > 0 ? (uint64_t)r->content_length : 0;
    b->state = CH_SIZE;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int http_body_feed(struct http_body *b, const char *in, size_t n, size_t *used, const char **out,
                   size_t *outlen)
{
    size_t i = 0;

    *used = 0;
    if (!b->chunked) {
        size_t k;
        if (b->left == 0)
            return HTTP_BODY_DONE;
        if (n == 0)
            return HTTP_BODY_MORE;
        k = n < b->left ? n : (size_t)b->left;
        b->left -= k;
        *out = in;
        *outlen = k;
        *used = k;
        return HTTP_BODY_DATA;
    }
    while (i < n || b->state == CH_DONE) {
        char c;
        if (b->state == CH_DONE) {
            *used = i;
            return HTTP_BODY_DONE;
        }
        c = in[i];
        switch (b->state) {
        case CH_SIZE: {
            int h = hexval(c);
            if (h >= 0) {
                if (b->digits >= 15)
                    return HTTP_ERR_BAD;
                b->left = (b->left << 4) | (uint64_t)h;
                b->digits++;
                i++;
                break;
            }
            if (!b->digits)
                return HTTP_ERR_BAD;
            if (c == '\r') {
                b->state = CH_SIZE_LF;
            } else if (c == ';' || c == ' ' || c == '\t') {
                b->state = CH_EXT;
            } else {
                return HTTP_ERR_BAD;
            }
            i++;
            break;
        }
        case CH_EXT:
            if (c == '\r')
                b->state = CH_SIZE_LF;
            else if (++b->line > 4096 || c == '\n')
                return HTTP_ERR_BAD;
            i++;
            break;
        case CH_SIZE_LF:
            if (c != '\n')
                return HTTP_ERR_BAD;
            i++;
            b->digits = 0;
            b->line = 0;
            b->state = b->left ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA: {
            size_t k = n - i < b->left ? n - i : (size_t)b->left;
            b->left -= k;
            if (!b->left)
                b->state = CH_DATA_CR;
            *out = in + i;
            *outlen = k;
            *used = i + k;
            return HTTP_BODY_DATA;
        }
        case CH_DATA_CR:
            if (c != '\r')
                return HTTP_ERR_BAD;
            b->state = CH_DATA_LF;
            i++;
            break;
        case CH_DATA_LF:
            if (c != '\n')
                return HTTP_ERR_BAD;
            b->state = CH_SIZE;
            i++;
            break;
        case CH_TRAILER:
            /* trailer fields are read and ignored; an empty line ends the body */
            if (c == '\r') {
                b->state = CH_TRAILER_LF;
            } else if (++b->line > 8192) {
                return HTTP_ERR_BAD;
            }
            i++;
            break;
        case CH_TRAILER_LF:
            if (c != '\n')
                return HTTP_ERR_BAD;
            i++;
            if (b->line == 0)
                b->state = CH_DONE;
            else
                b->state = CH_TRAILER;
            b->line = 0;
            break;
        }
    }
    *used = i;
    return HTTP_BODY_MORE;
}

int http_pct_decode(struct buf *out, const char *s, size_t n, int form)
{
    size_t i;

    for (i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -1;
            hi = hexval(s[i + 1]);
            lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (form && c == '+') {
            c = ' ';
        }
        if (buf_append(out, &c, 1) < 0)
            return -1;
    }
    return buf_append(out, "", 0);
}

int http_query_getall(const char *query, const char *key, char **vals, int max)
{
    const char *p = query;
    int count = 0;
    struct buf k = {0}, v = {0};

    while (p && *p && count < max) {
        const char *amp = strchr(p, '&'), *eq;
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        eq = memchr(p, '=', seg);
        buf_reset(&k);
        if (http_pct_decode(&k, p, eq ? (size_t)(eq - p) : seg, 1) == 0 && k.data &&
            strcmp(k.data, key) == 0) {
            buf_reset(&v);
            if (eq)
                http_pct_decode(&v, eq + 1, seg - (size_t)(eq - p) - 1, 1);
            else
                buf_append(&v, "", 0);
            vals[count++] = v.data;
            v.data = NULL;
            v.len = v.cap = 0;
        }
        p = amp ? amp + 1 : NULL;
    }
    buf_free(&k);
    buf_free(&v);
    return count;
}

char *http_query_get(const char *query, const char *key)
{
    char *v = NULL;

    if (http_query_getall(query, key, &v, 1) == 1)
        return v;
    return NULL;
}
