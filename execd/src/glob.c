/*
 * glob.c: glob matcher, see glob.h.
 *
 * A plain "*" uses the classic two-pointer algorithm: remember the position after the last
 * star and the input position it was tried at; on mismatch, let the star swallow one more byte
 * and retry, but never a "/". "**" recurses over every suffix of the name instead, so the
 * number of "**" in a pattern is capped (GLOB_MAX_DEEP) to bound the work.
 */
#include "glob.h"

#include <string.h>

#define GLOB_MAX_DEEP 4

static int glob_rec(const char *pat, const char *name, int deep_left);

/* Matches one class at *pp against c; advances *pp past the class. -1 on a malformed class. */
static int glob_class(const char **pp, unsigned char c)
{
    const char *p = *pp + 1;
    int neg = 0, hit = 0;

    if (*p == '!' || *p == '^') {
        neg = 1;
        p++;
    }
    if (*p == ']') { /* a leading ']' is literal */
        hit |= (c == ']');
        p++;
    }
    while (*p && *p != ']') {
        unsigned char lo = (unsigned char)*p, hi;
        if (lo == '\\' && p[1])
            lo = (unsigned char)*++p;
        hi = lo;
        if (p[1] == '-' && p[2] && p[2] != ']') {
            hi = (unsigned char)p[2];
            p += 2;
        }
        if (c >= lo && c <= hi)
            hit = 1;
        p++;
    }
    if (*p != ']')
        return -1;
    *pp = p + 1;
    return hit ^ neg;
}

int glob_match(const char *pat, const char *name)
{
    return glob_rec(pat, name, GLOB_MAX_DEEP);
}

static int glob_rec(const char *pat, const char *name, int deep_left)
{
    const char *p = pat, *n = name;
    const char *star_p = NULL, *star_n = NULL;

    while (*n) {
        if (*p == '*' && p[1] == '*') {
            while (*p == '*')
                p++;
            if (--deep_left < 0)
                return 0;
            /* "**\/" also matches zero directories */
            if (*p == '/' && glob_rec(p + 1, n, deep_left))
                return 1;
            for (;; n++) {
                if (glob_rec(p, n, deep_left))
                    return 1;
                if (!*n)
                    return 0;
            }
        }
        if (*p == '*') {
            p++;
            star_p = p;
            star_n = n;
            continue;
        }
        if (*p == '?' && *n != '/') {
            p++;
            n++;
            continue;
        }
        if (*p == '[' && *n != '/') {
            const char *q = p;
            int r = glob_class(&q, (unsigned char)*n);
            if (r == 1) {
                p = q;
                n++;
                continue;
            }
            if (r < 0 && *n == '[') { /* malformed class: literal '[' */
                p++;
                n++;
                continue;
            }
        } else if (*p == '\\' && p[1] && p[1] == *n) {
            p += 2;
            n++;
            continue;
        } else if (*p && *p != '?' && *p != '[' && *p != '\\' && *p == *n) {
            p++;
            n++;
            continue;
        }
        /* mismatch: backtrack into the last star */
        if (!star_p || *star_n == '/')
            return 0;
        star_n++;
        p = star_p;
        n = star_n;
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}
