/*
 * test_lines.c: line splitting (all terminators, across chunk splits) and UTF-8 repair.
 */
#include "../src/lines.h"
#include "test.h"

struct out {
    char s[512];
    size_t n;
};

static void emit(void *ud, const char *line, size_t len)
{
    struct out *o = ud;
    if (o->n + len + 1 < sizeof(o->s)) {
        memcpy(o->s + o->n, line, len);
        o->n += len;
        o->s[o->n++] = '|';
        o->s[o->n] = '\0';
    }
}

/* Splits `in` into lines, feeding it in pieces of `step` bytes. */
static void split(const char *in, size_t step, struct out *o)
{
    struct lines l = {{0}, 0, 0};
    size_t n = strlen(in), i;

    memset(o, 0, sizeof(*o));
    for (i = 0; i < n; i += step)
        lines_feed(&l, in + i, n - i < step ? n - i : step, emit, o);
    lines_flush(&l, emit, o);
    lines_free(&l);
}

static void test_terminators(void)
{
    struct out o;
    size_t step;

    for (step = 1; step <= 16; step++) {
        split("a\nb\r\nc\rd\n\ne", step, &o);
        CHECK_STR(o.s, "a|b|c|d||e|");
        split("x\r\r\ny\r", step, &o);
        CHECK_STR(o.s, "x||y|");
    }
    split("", 1, &o);
    CHECK(o.n == 0);
}

static void test_long_line_is_cut(void)
{
    struct lines l = {{0}, 0, 4};
    struct out o;

    memset(&o, 0, sizeof(o));
    lines_feed(&l, "abcdefghij\n", 11, emit, &o);
    lines_flush(&l, emit, &o);
    CHECK_STR(o.s, "abcd|efgh|ij|");
    lines_free(&l);
}

static void test_utf8(void)
{
    struct buf b = {0};

    CHECK(utf8_seq_len((const unsigned char *)"\xC3\xA9", 2) == 2);
    CHECK(utf8_seq_len((const unsigned char *)"\xE4\xB8\xAD", 3) == 3);
    CHECK(utf8_seq_len((const unsigned char *)"\xF0\x9F\x98\x80", 4) == 4);
    CHECK(utf8_seq_len((const unsigned char *)"\xC0\xAF", 2) == 0);     /* overlong */
    CHECK(utf8_seq_len((const unsigned char *)"\xED\xA0\x80", 3) == 0); /* surrogate */
    CHECK(utf8_seq_len((const unsigned char *)"\xE4\xB8", 2) == 0);     /* truncated */
    utf8_fix(&b,
             "a\xFF"
             "b\xC3",
             4);
    CHECK_STR(b.data, "a\xEF\xBF\xBD"
                      "b\xEF\xBF\xBD");
    buf_reset(&b);
    utf8_fix(&b, "ok \xC3\xA9", 5);
    CHECK_STR(b.data, "ok \xC3\xA9");
    buf_free(&b);
}

void suite_lines(void)
{
    test_terminators();
    test_long_line_is_cut();
    test_utf8();
}
