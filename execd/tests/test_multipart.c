/*
 * test_multipart.c: the streaming multipart parser, fed whole and in every split.
 */
#include <stdlib.h>

#include "../src/multipart.h"
#include "test.h"

struct rec {
    char log[4096];
    size_t len;
};

static void rec_add(struct rec *r, const char *p, size_t n)
{
    if (r->len + n < sizeof(r->log)) {
        memcpy(r->log + r->len, p, n);
        r->len += n;
        r->log[r->len] = '\0';
    }
}

static int on_part(void *ud, const struct mp_part *p)
{
    struct rec *r = ud;
    rec_add(r, "[", 1);
    rec_add(r, p->name, strlen(p->name));
    rec_add(r, "|", 1);
    rec_add(r, p->filename, strlen(p->filename));
    rec_add(r, "|", 1);
    rec_add(r, p->content_type, strlen(p->content_type));
    rec_add(r, "]", 1);
    return 0;
}

static int on_data(void *ud, const char *p, size_t n)
{
    rec_add(ud, p, n);
    return 0;
}

static int on_end(void *ud)
{
    rec_add(ud, "<end>", 5);
    return 0;
}

static const struct mp_callbacks cbs = {on_part, on_data, on_end};

static const char body[] =
    "preamble\r\n--XyZ\r\n"
    "Content-Disposition: form-data; name=\"metadata\"; filename=\"metadata\"\r\n"
    "Content-Type: application/json\r\n\r\n"
    "{\"path\":\"/tmp/a\"}\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"file\"; filename=\"a;b\\\".txt\"\r\n\r\n"
    "line1\r\n--XyNotBoundary\r\n--Xy Z\r\n"
    "\r\n--XyZ--\r\nepilogue";

static const char want[] = "[metadata|metadata|application/json]{\"path\":\"/tmp/a\"}<end>"
                           "[file|a;b\".txt|]line1\r\n--XyNotBoundary\r\n--Xy Z\r\n<end>";

static void test_whole_and_splits(void)
{
    size_t n = strlen(body), split;

    for (split = 0; split <= n; split++) {
        struct mp m;
        struct rec r = {{0}, 0};
        CHECK(mp_init(&m, "XyZ", &cbs, &r) == 0);
        CHECK(mp_feed(&m, body, split) == 0);
        CHECK(mp_feed(&m, body + split, n - split) == 0);
        CHECK(mp_finish(&m) == 0);
        if (strcmp(r.log, want) != 0) {
            fprintf(stderr, "split %zu: got %s\n", split, r.log);
            test_failures++;
            mp_free(&m);
            break;
        }
        mp_free(&m);
    }
}

static void test_bytewise(void)
{
    size_t n = strlen(body), i;
    struct mp m;
    struct rec r = {{0}, 0};

    mp_init(&m, "XyZ", &cbs, &r);
    for (i = 0; i < n; i++)
        CHECK(mp_feed(&m, body + i, 1) == 0);
    CHECK(mp_finish(&m) == 0);
    CHECK_STR(r.log, want);
    mp_free(&m);
}

static void test_malformed(void)
{
    struct mp m;
    struct rec r = {{0}, 0};
    const char *trunc = "--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\ndata";
    const char *noname = "--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--";
    const char *badline = "--B\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n--B-x";

    mp_init(&m, "B", &cbs, &r);
    CHECK(mp_feed(&m, trunc, strlen(trunc)) == 0);
    CHECK(mp_finish(&m) < 0); /* no closing boundary */
    mp_free(&m);

    mp_init(&m, "B", &cbs, &r);
    CHECK(mp_feed(&m, noname, strlen(noname)) < 0);
    mp_free(&m);

    mp_init(&m, "B", &cbs, &r);
    CHECK(mp_feed(&m, badline, strlen(badline)) < 0);
    mp_free(&m);
}

static void test_boundary_param(void)
{
    char b[128];
    CHECK(mp_boundary_from_content_type("multipart/form-data; boundary=abc", b, sizeof(b)) == 0);
    CHECK_STR(b, "abc");
    CHECK(mp_boundary_from_content_type("multipart/form-data; charset=x; boundary=\"q r\"", b,
                                        sizeof(b)) == 0);
    CHECK_STR(b, "q r");
    CHECK(mp_boundary_from_content_type("application/json", b, sizeof(b)) < 0);
    CHECK(mp_boundary_from_content_type("multipart/form-data", b, sizeof(b)) < 0);
}

void suite_multipart(void)
{
    test_whole_and_splits();
    test_bytewise();
    test_malformed();
    test_boundary_param();
}
