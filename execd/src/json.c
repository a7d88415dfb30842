/*
 * json.c: JSON reader and writer helpers, see json.h.
 *
 * A recursive-descent parser with an explicit depth limit. It is only used on request bodies
 * that the HTTP layer has already capped at 1 MiB, so a tree of heap nodes is fine.
 */
#include "json.h"

#include <stdlib.h>
#include <string.h>

#include "lines.h"

struct jp {
    const char *p;
    const char *end;
};

static struct json *jp_value(struct jp *s, int depth);

static void jp_ws(struct jp *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int jp_hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    int i;

    for (i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static int put_utf8(struct buf *b, unsigned cp)
{
    char t[4];
    size_t n;

    if (cp < 0x80) {
        t[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        t[0] = (char)(0xF0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buf_append(b, t, n);
}

/* Parses a string at s->p (which points at the opening quote) into out. */
static int jp_string(struct jp *s, struct buf *out)
{
    s->p++;
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            return buf_append(out, "", 0);
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            unsigned cp, lo;
            if (s->end - s->p < 2)
                return -1;
            c = (unsigned char)s->p[1];
            s->p += 2;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                buf_append(out, &c, 1);
                continue;
            case 'b':
                buf_append(out, "\b", 1);
                continue;
            case 'f':
                buf_append(out, "\f", 1);
                continue;
            case 'n':
                buf_append(out, "\n", 1);
                continue;
            case 'r':
                buf_append(out, "\r", 1);
                continue;
            case 't':
                buf_append(out, "\t", 1);
                continue;
            case 'u':
                break;
            default:
                return -1;
            }
            if (s->end - s->p < 4 || jp_hex4(s->p, &cp) < 0)
                return -1;
            s->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' ||
                    jp_hex4(s->p + 2, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                s->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return -1;
            }
            if (put_utf8(out, cp) < 0)
                return -1;
            continue;
        }
        {
            size_t k = utf8_seq_len((const unsigned char *)s->p, (size_t)(s->end - s->p));
            if (!k || buf_append(out, s->p, k) < 0)
                return -1;
            s->p += k;
        }
    }
    return -1;
}

static struct json *jp_node(enum json_type t)
{
    struct json *j = calloc(1, sizeof(*j));
    if (j)
        j->type = t;
    return j;
}

static struct json *jp_number(struct jp *s)
{
    const char *q = s->p;
    char tmp[64];
    struct json *j;
    size_t n;

    if (q < s->end && *q == '-')
        q++;
    if (q >= s->end || !(*q >= '0' && *q <= '9'))
        return NULL;
    if (*q == '0')
        q++;
    else
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    if (q < s->end && *q == '.') {
        q++;
        if (q >= s->end || !(*q >= '0' && *q <= '9'))
            return NULL;
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < s->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < s->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= s->end || !(*q >= '0' && *q <= '9'))
            return NULL;
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    }
    n = (size_t)(q - s->p);
    if (n >= sizeof(tmp))
        return NULL;
    memcpy(tmp, s->p, n);
    tmp[n] = '\0';
    j = jp_node(JSON_NUMBER);
    if (!j)
        return NULL;
    j->num = strtod(tmp, NULL);
    s->p = q;
    return j;
}

static int jp_lit(struct jp *s, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static struct json *jp_container(struct jp *s, int depth, int is_obj)
{
    struct json *j = jp_node(is_obj ? JSON_OBJECT : JSON_ARRAY), **tail, *v;
    struct buf key = {0};
    char close = is_obj ? '}' : ']';

    if (!j)
        return NULL;
    tail = &j->child;
    s->p++;
    jp_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return j;
    }
    for (;;) {
        jp_ws(s);
        if (is_obj) {
            buf_reset(&key);
            if (s->p >= s->end || *s->p != '"' || jp_string(s, &key) < 0)
                goto fail;
            jp_ws(s);
            if (s->p >= s->end || *s->p != ':')
                goto fail;
            s->p++;
        }
        v = jp_value(s, depth + 1);
        if (!v)
            goto fail;
        if (is_obj) {
            v->key = key.data;
            v->key_len = key.len;
            key.data = NULL;
            key.len = key.cap = 0;
        }
        *tail = v;
        tail = &v->next;
        jp_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == close) {
            s->p++;
            buf_free(&key);
            return j;
        }
        goto fail;
    }
fail:
    buf_free(&key);
    json_free(j);
    return NULL;
}

static struct json *jp_value(struct jp *s, int depth)
{
    struct json *j;
    struct buf str = {0};

    if (depth > JSON_MAX_DEPTH)
        return NULL;
    jp_ws(s);
    if (s->p >= s->end)
        return NULL;
    switch (*s->p) {
    case '{':
        return jp_container(s, depth, 1);
    case '[':
        return jp_container(s, depth, 0);
    case '"':
        if (jp_string(s, &str) < 0 || !(j = jp_node(JSON_STRING))) {
            buf_free(&str);
            return NULL;
        }
        j->str = str.data;
        j->len = str.len;
        return j;
    case 't':
        return jp_lit(s, "true") < 0 ? NULL : jp_node(JSON_TRUE);
    case 'f':
        return jp_lit(s, "false") < 0 ? NULL : jp_node(JSON_FALSE);
    case 'n':
        return jp_lit(s, "null") < 0 ? NULL : jp_node(JSON_NULL);
    default:
        return jp_number(s);
    }
}

struct json *json_parse(const char *p, size_t n)
{
    struct jp s = {p, p + n};
    struct json *j = jp_value(&s, 0);

    if (!j)
        return NULL;
    jp_ws(&s);
    if (s.p != s.end) {
        json_free(j);
        return NULL;
    }
    return j;
}

void json_free(struct json *j)
{
    while (j) {
        struct json *next = j->next;
        json_free(j->child);
        free(j->key);
        free(j->str);
        free(j);
        j = next;
    }
}

struct json *json_get(const struct json *obj, const char *key)
{
    struct json *c, *found = NULL;
    size_t n = strlen(key);

    if (!obj || obj->type != JSON_OBJECT)
        return NULL;
    for (c = obj->child; c; c = c->next)
        if (c->key_len == n && memcmp(c->key, key, n) == 0)
            found = c;
    return found;
}

int json_int(const struct json *j, long long lo, long long hi, long long *out)
{
    long long v;

    if (!j || j->type != JSON_NUMBER || !(j->num >= (double)lo && j->num <= (double)hi))
        return 0;
    v = (long long)j->num;
    if ((double)v != j->num)
        return 0;
    *out = v;
    return 1;
}

int json_put_str(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0, k;

    if (buf_append(b, "\"", 1) < 0)
        return -1;
    while (i < n) {
        unsigned char c = u[i];
        const char *esc = NULL;
        char tmp[6];

        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            k = utf8_seq_len(u + i, n - i);
            if (k) {
                i += k;
                continue;
            }
            esc = "\xEF\xBF\xBD";
        } else if (c == '"') {
            esc = "\\\"";
        } else if (c == '\\') {
            esc = "\\\\";
        } else if (c == '\n') {
            esc = "\\n";
        } else if (c == '\r') {
            esc = "\\r";
        } else if (c == '\t') {
            esc = "\\t";
        } else {
            tmp[0] = '\\';
            tmp[1] = 'u';
            tmp[2] = '0';
            tmp[3] = '0';
            tmp[4] = hex[c >> 4];
            tmp[5] = hex[c & 15];
            if (buf_append(b, s + run, i - run) < 0 || buf_append(b, tmp, 6) < 0)
                return -1;
            run = ++i;
            continue;
        }
        if (buf_append(b, s + run, i - run) < 0 || buf_puts(b, esc) < 0)
            return -1;
        run = ++i;
    }
    if (buf_append(b, s + run, n - run) < 0)
        return -1;
    return buf_append(b, "\"", 1);
}

int json_put_cstr(struct buf *b, const char *s)
{
    return json_put_str(b, s, strlen(s));
}
