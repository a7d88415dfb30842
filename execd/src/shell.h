/*
 * shell.h: text the agent feeds to a persistent session shell, and the status lines it reads back.
 *
 * A session (session.c) is one long-lived `bash` (or `sh`) reading commands from a pipe on its
 * stdin, with a control pipe on descriptor 3. Each run is one line of shell text built here: it
 * evaluates the user's command (single-quoted, so any bytes but NUL survive) with stdin from
 * /dev/null and descriptor 3 closed, then prints the exit status as a decimal line to
 * descriptor 3. The agent parses those lines with shell_ctl_line.
 */
#ifndef EXECD_SHELL_H
#define EXECD_SHELL_H

#include <stddef.h>

#include "buf.h"

/* Appends s[0..n) as one single-quoted POSIX shell word ('it'\''s'). */
int shell_quote(struct buf *b, const char *s, size_t n);

/* Appends the text for one run of cmd[0..n), ending in '\n'. With cwd, the command runs there
 * and the shell returns to its previous directory afterwards. */
int shell_session_script(struct buf *b, const char *cmd, size_t n, const char *cwd);

/* Takes one status line off the front of ctl. 1: *code set; 0: no complete line yet; -1: the
 * line was not a status (it is dropped). */
int shell_ctl_line(struct buf *ctl, int *code);

#endif
