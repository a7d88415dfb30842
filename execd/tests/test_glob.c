/*
 * test_glob.c: the glob matcher used by GET /files/search.
 */
#include "../src/glob.h"
#include "test.h"

void suite_glob(void)
{
    CHECK(glob_match("*.txt", "a.txt"));
    CHECK(!glob_match("*.txt", "dir/a.txt"));
    CHECK(glob_match("**/*.txt", "dir/sub/a.txt"));
    CHECK(glob_match("**/*.txt", "a.txt"));
    CHECK(glob_match("**", "any/thing"));
    CHECK(glob_match("dir/**", "dir/x/y"));
    CHECK(glob_match("a?c", "abc"));
    CHECK(!glob_match("a?c", "a/c"));
    CHECK(glob_match("[a-c]x", "bx"));
    CHECK(!glob_match("[!a-c]x", "bx"));
    CHECK(glob_match("[!a-c]x", "dx"));
    CHECK(glob_match("\\*", "*"));
    CHECK(!glob_match("\\*", "a"));
    CHECK(!glob_match("abc", "abcd"));
    CHECK(glob_match("", ""));
    CHECK(!glob_match("", "a"));
    CHECK(glob_match("*a*b*c*", "xxaxxbxxcxx"));
    /* pathological backtracking stays fast */
    CHECK(!glob_match("*a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}
