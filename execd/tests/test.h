/*
 * test.h: a tiny assertion harness for the agent's C unit tests.
 *
 * Every test is a `static void test_x(void)` registered in the list of its file's suite
 * function; test_main.c runs one suite (argv[1]) or all. CHECK records a failure with the
 * location and keeps going, so one run shows every broken expectation.
 */
#ifndef EXECD_TEST_H
#define EXECD_TEST_H

#include <stdio.h>
#include <string.h>

extern int test_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

static inline int test_streq(const char *got, const char *want)
{
    return got && strcmp(got, want) == 0;
}

#define CHECK_STR(got, want) CHECK(test_streq((got), (want)))

void suite_http(void);
void suite_multipart(void);
void suite_lines(void);
void suite_glob(void);
void suite_json(void);
void suite_shell(void);
void suite_ws(void);

#endif
