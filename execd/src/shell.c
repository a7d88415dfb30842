/*
 * shell.c: building session shell input and parsing its status lines (see shell.h).
 */
#include "shell.h"

#include <limits.h>
#include <string.h>

int shell_quote(struct buf *b, const char *s, size_t n)
{
    size_t i, start = 0;

    if (buf_puts(b, "'") < 0)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] != '\'')
            continue;
        if (buf_append(b, s + start, i - start) < 0 || buf_puts(b, "'\\''") < 0)
            return -1;
        start = i + 1;
    }
    if (buf_append(b, s + start, n - start) < 0 || buf_puts(b, "'") < 0)
        return -1;
    return 0;
}

int shell_session_script(struct buf *b, const char *cmd, size_t n, const char *cwd)
{
    int rc = 0;

    if (cwd) {
        rc |= buf_puts(b, "__osb_wd=$PWD; if cd -- ");
        rc |= shell_quote(b, cwd, strlen(cwd));
        rc |= buf_puts(b, "; then eval ");
        rc |= shell_quote(b, cmd, n);
        rc |= buf_puts(b, " </dev/null 3>&-; __osb_rc=$?; cd -- \"$__osb_wd\"; "
                          "else __osb_rc=1; fi; printf '%d\\n' \"$__osb_rc\" >&3\n");
    } else {
        rc |= buf_puts(b, "eval ");
        rc |= shell_quote(b, cmd, n);
        rc |= buf_puts(b, " </dev/null 3>&-; printf '%d\\n' \"$?\" >&3\n");
    }
    return rc < 0 ? -1 : 0;
}

int shell_ctl_line(struct buf *ctl, int *code)
{
    char *nl = ctl->len ? memchr(ctl->data, '\n', ctl->len) : NULL;
    size_t i, n;
    long v = 0;
    int ok;

    if (!nl)
        return 0;
    n = (size_t)(nl - ctl->data);
    ok = n > 0 && n <= 10;
    for (i = 0; ok && i < n; i++) {
        if (ctl->data[i] < '0' || ctl->data[i] > '9')
            ok = 0;
        else
            v = v * 10 + (ctl->data[i] - '0');
    }
    if (ok && v > INT_MAX)
        ok = 0;
    buf_consume(ctl, n + 1);
    if (!ok)
        return -1;
    *code = (int)v;
    return 1;
}
