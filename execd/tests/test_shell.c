/*
 * test_shell.c: unit tests for shell.c (quoting, session run text, status lines).
 *
 * Besides comparing strings, the run text is fed to a real /bin/sh with descriptor 3 on a pipe,
 * the way session.c drives a session shell, to check that awkward commands survive quoting, that
 * state persists between runs, and that the status line carries the exit code.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shell.h"
#include "test.h"

static void test_quote(void)
{
    struct buf b = {0};

    shell_quote(&b, "plain", 5);
    CHECK_STR(b.data, "'plain'");
    buf_reset(&b);
    shell_quote(&b, "it's", 4);
    CHECK_STR(b.data, "'it'\\''s'");
    buf_reset(&b);
    shell_quote(&b, "", 0);
    CHECK_STR(b.data, "''");
    buf_reset(&b);
    shell_quote(&b, "''", 2);
    CHECK_STR(b.data, "''\\'''\\'''");
    buf_free(&b);
}

static void test_script_text(void)
{
    struct buf b = {0};

    shell_session_script(&b, "echo hi", 7, NULL);
    CHECK_STR(b.data, "eval 'echo hi' </dev/null 3>&-; printf '%d\\n' \"$?\" >&3\n");
    buf_reset(&b);
    shell_session_script(&b, "ls", 2, "/t'mp");
    CHECK(strstr(b.data, "cd -- '/t'\\''mp'") != NULL);
    CHECK(strstr(b.data, "eval 'ls'") != NULL);
    CHECK(b.data[b.len - 1] == '\n');
    buf_free(&b);
}

static void test_ctl_line(void)
{
    struct buf b = {0};
    int code = -7;

    CHECK(shell_ctl_line(&b, &code) == 0);
    buf_puts(&b, "12");
    CHECK(shell_ctl_line(&b, &code) == 0);
    buf_puts(&b, "7\n0\nxx\n\n99999999999\n3");
    CHECK(shell_ctl_line(&b, &code) == 1 && code == 127);
    CHECK(shell_ctl_line(&b, &code) == 1 && code == 0);
    CHECK(shell_ctl_line(&b, &code) == -1);
    CHECK(shell_ctl_line(&b, &code) == -1); /* empty line */
    CHECK(shell_ctl_line(&b, &code) == -1); /* too long */
    CHECK(shell_ctl_line(&b, &code) == 0);
    CHECK(b.len == 1 && b.data[0] == '3');
    buf_free(&b);
}

/* Feeds the run text of each command to one `sh`; returns its stdout and the status lines. */
static void run_sh(const char *const *cmds, const char *const *cwds, int n, struct buf *out,
                   struct buf *ctl)
{
    int in[2], o[2], c[2], i;
    struct buf text = {0};
    char tmp[4096];
    ssize_t r;
    pid_t pid;

    for (i = 0; i < n; i++)
        shell_session_script(&text, cmds[i], strlen(cmds[i]), cwds ? cwds[i] : NULL);
    if (pipe(in) < 0 || pipe(o) < 0 || pipe(c) < 0)
        return;
    pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(o[1], 1);
        dup2(c[1], 3);
        for (i = 4; i < 64; i++)
            close(i); /* the pipe ends (any of them numbered 3 was replaced by dup2) */
        execl("/bin/sh", "sh", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(o[1]);
    close(c[1]);
    if (write(in[1], text.data, text.len) != (ssize_t)text.len)
        CHECK(!"short write");
    close(in[1]);
    while ((r = read(o[0], tmp, sizeof(tmp))) > 0)
        buf_append(out, tmp, (size_t)r);
    while ((r = read(c[0], tmp, sizeof(tmp))) > 0)
        buf_append(ctl, tmp, (size_t)r);
    close(o[0]);
    close(c[0]);
    waitpid(pid, NULL, 0);
    buf_free(&text);
}

static void test_real_shell(void)
{
    static const char *const cmds[] = {
        "cd /tmp && X='a b'; export Y=\"it's\"",
        "pwd; echo \"$X|$Y\"",
        "printf '%s\\n' \"q'uo\\\"te\" '$HOME' && false",
        "read line; echo \"read=[$line]\"",
        "echo >&3 sneaky; echo after",
        "pwd",
        "exit 4",
    };
    static const char *const cwds[] = {NULL, NULL, NULL, NULL, NULL, "/", NULL};
    struct buf out = {0}, ctl = {0};

    run_sh(cmds, cwds, 7, &out, &ctl);
    CHECK_STR(out.data, "/tmp\na b|it's\nq'uo\"te\n$HOME\nread=[]\nafter\n/\n");
    /* status lines: `&& false` gives 1; `read` sees /dev/null, not the shell's input; writing to
     * the closed descriptor 3 fails but the run goes on; `exit 4` ends the shell without one */
    CHECK_STR(ctl.data, "0\n0\n1\n0\n0\n0\n");
    buf_free(&out);
    buf_free(&ctl);

    /* after a run with a cwd override, the shell is back where it was */
    {
        static const char *const c2[] = {"cd /usr", "pwd", "pwd"};
        static const char *const w2[] = {NULL, "/tmp", NULL};
        run_sh(c2, w2, 3, &out, &ctl);
        CHECK_STR(out.data, "/tmp\n/usr\n");
        CHECK_STR(ctl.data, "0\n0\n0\n");
        buf_free(&out);
        buf_free(&ctl);
    }
}

void suite_shell(void)
{
    test_quote();
    test_script_text();
    test_ctl_line();
    test_real_shell();
}
