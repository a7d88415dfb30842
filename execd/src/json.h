/*
 * json.h: a small JSON reader (request bodies) and writer helpers (responses, events).
 *
 * The reader builds a tree of struct json nodes. Strings are decoded (escapes, surrogate pairs)
 * and NUL-terminated, but may contain NUL bytes, so `len` is authoritative. Input must be valid
 * UTF-8 and nest at most JSON_MAX_DEPTH deep. Duplicate object keys: json_get returns the last.
 *
 * The writer side appends to a struct buf; json_put_str escapes and repairs invalid UTF-8 with
 * U+FFFD, so any byte string (file names, command output) can be emitted safely.
 */
#ifndef EXECD_JSON_H
#define EXECD_JSON_H

#include <stddef.h>

#include "buf.h"

#define JSON_MAX_DEPTH 64

enum json_type {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT
};

struct json {
    enum json_type type;
    char *key; /* member name when the parent is an object */
    size_t key_len;
    char *str; /* JSON_STRING */
    size_t len;
    double num;         /* JSON_NUMBER */
    struct json *child; /* first element/member */
    struct json *next;  /* next sibling */
};

/* Parses n bytes; NULL on malformed input. The caller frees with json_free. */
struct json *json_parse(const char *p, size_t n);
void json_free(struct json *j);
/* Last member named key of an object, or NULL. */
struct json *json_get(const struct json *obj, const char *key);
/* 1 if j is a number with an integral value in [lo, hi], storing it in *out. */
int json_int(const struct json *j, long long lo, long long hi, long long *out);

int json_put_str(struct buf *b, const char *s, size_t n);
int json_put_cstr(struct buf *b, const char *s);

#endif
