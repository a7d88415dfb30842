/*
 * test_main.c: runs the agent's C unit test suites: `execd_unit [suite]`.
 */
#include <stdio.h>
#include <string.h>

#include "test.h"

int test_failures;

static const struct {
    const char *name;
    void (*fn)(void);
} suites[] = {
    {"http", suite_http}, {"multipart", suite_multipart}, {"lines", suite_lines},
    {"glob", suite_glob}, {"json", suite_json},           {"shell", suite_shell},
    {"ws", suite_ws},
};

int main(int argc, char **argv)
{
    size_t i;
    int ran = 0;

    for (i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
        if (argc > 1 && strcmp(argv[1], suites[i].name) != 0)
            continue;
        suites[i].fn();
        ran++;
        printf("suite %s: %s\n", suites[i].name, test_failures ? "FAILURES SO FAR" : "ok");
    }
    if (!ran) {
        fprintf(stderr, "unknown suite %s\n", argv[1]);
        return 2;
    }
    return test_failures ? 1 : 0;
}
