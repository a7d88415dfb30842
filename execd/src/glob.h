/*
 * glob.h: shell-style pattern matching for GET /files/search.
 *
 * Supports "*" (any run of bytes except "/"), "**" (any run including "/"; "**\/" also matches
 * zero directories), "?" (one byte except "/"), "[...]" classes with ranges and "!"/"^"
 * negation, and "\" escapes. Matching is iterative with bounded backtracking so a hostile
 * pattern cannot blow the stack.
 */
#ifndef EXECD_GLOB_H
#define EXECD_GLOB_H

/* 1 if `name` matches `pat`, else 0. */
int glob_match(const char *pat, const char *name);

#endif
