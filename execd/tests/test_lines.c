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

/* Selects lines [offset, offset+limit) of `in`, fed in pieces of `step` bytes. */
static int range(const char *in, size_t step, long long offset, long long limit, struct buf *out)
{
    struct line_range r;
    size_t n = strlen(in), i;
    int done = 0;

    buf_reset(out);
    line_range_init(&r, offset, limit);
    for (i = 0; i < n && !done; i += step)
        done = line_range_feed(&r, in + i, n - i < step ? n - i : step, out);
    if (!done)
        line_range_eof(&r);
    buf_append(out, "", 0);
    return (int)r.emitted;
}

static void test_line_range(void)
{
    struct buf b = {0};
    size_t step;

    for (step = 1; step <= 9; step++) {
        CHECK(range("l1\nl2\nl3\nl4\n", step, 2, 2, &b) == 2);
        CHECK_STR(b.data, "l2\nl3");
        range("l1\nl2\nl3\nl4\n", step, 1, -1, &b); /* no limit: all, no trailing newline */
        CHECK_STR(b.data, "l1\nl2\nl3\nl4");
        range("l1\nl2\nlast", step, 2, 10, &b); /* last line without newline */
        CHECK_STR(b.data, "l2\nlast");
        CHECK(range("l1\nl2\n", step, 3, 5, &b) == 0); /* offset past EOF: empty */
        CHECK_STR(b.data, "");
        CHECK(range("l1\nl2", step, 9, -1, &b) == 0);
        CHECK_STR(b.data, "");
        range("a\r\nb\r\nc\r\n", step, 1, 2, &b); /* CRLF: the "\r" goes */
        CHECK_STR(b.data, "a\nb");
        range("a\r\nb\r", step, 2, -1, &b); /* "\r" at EOF goes too */
        CHECK_STR(b.data, "b");
        range("x\ry\n\r\r\nz\n", step, 1, -1, &b); /* a lone "\r" is content */
        CHECK_STR(b.data, "x\ry\n\r\nz");
        CHECK(range("\n\nc\n", step, 1, 3, &b) == 3); /* empty lines count */
        CHECK_STR(b.data, "\n\nc");
        range("one\ntwo\n", step, 2, 1, &b);
        CHECK_STR(b.data, "two");
    }
    CHECK(range("", 1, 1, -1, &b) == 0);
    CHECK_STR(b.data, "");
    buf_free(&b);

    CHECK(line_param("1") == 1);
    CHECK(line_param("42") == 42);
    CHECK(line_param("0") == -1);
    CHECK(line_param("-3") == -1);
    CHECK(line_param("+3") == -1);
    CHECK(line_param("3x") == -1);
    CHECK(line_param(" 3") == -1);
    CHECK(line_param("") == -1);
    CHECK(line_param(NULL) == -1);
    CHECK(line_param("99999999999999999999999") == -1);
}

void suite_lines(void)
{
    test_line_range();
    test_terminators();
    test_long_line_is_cut();
    test_utf8();
}
