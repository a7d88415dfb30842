/*
 * main.c: process start-up. Finds the install root (the directory holding lua/main.lua), creates
 * the Lua state with the core modules preloaded, runs lua/main.lua as the first task, and runs the
 * loop until the server stops. All policy (configuration, routes, what to do with --check-config)
 * is in Lua.
 *
 * Root discovery, first match wins: $OPENSANDBOX_ROOT; the executable's directory; its parent (a
 * build directory inside the source tree); <prefix>/share/opensandbox for an executable in
 * <prefix>/bin.
 */
#define _GNU_SOURCE
#include "engine.h"
#include "server.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int has_main_lua(const char *dir)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/lua/main.lua", dir);
    return access(p, R_OK) == 0;
}

static int find_root(const char *argv0)
{
    char exe[PATH_MAX], dir[PATH_MAX], cand[PATH_MAX_OSB];
    const char *env = getenv("OPENSANDBOX_ROOT");
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n < 0) {
        if (!realpath(argv0, exe))
            snprintf(exe, sizeof(exe), "%s", argv0);
    } else {
        exe[n] = '\0';
    }
    snprintf(server_paths.exe, sizeof(server_paths.exe), "%s", exe);
    snprintf(dir, sizeof(dir), "%s", exe);
    char *d = dirname(dir);
    const char *cands[4];
    int nc = 0;
    char c1[PATH_MAX + 32], c2[PATH_MAX + 32];
    if (env && *env)
        cands[nc++] = env;
    cands[nc++] = d;
    snprintf(c1, sizeof(c1), "%s/..", d);
    cands[nc++] = c1;
    snprintf(c2, sizeof(c2), "%s/../share/opensandbox", d);
    cands[nc++] = c2;
    for (int i = 0; i < nc; i++) {
        if (has_main_lua(cands[i])) {
            if (!realpath(cands[i], cand))
                snprintf(cand, sizeof(cand), "%s", cands[i]);
            snprintf(server_paths.root, sizeof(server_paths.root), "%s", cand);
            snprintf(server_paths.lua, sizeof(server_paths.lua), "%s/lua", cand);
            return 0;
        }
    }
    return -1;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    server_set_argv(argc, argv);
    if (find_root(argv[0]) < 0) {
        fprintf(stderr,
                "opensandbox-server: cannot find lua/main.lua next to %s "
                "(set OPENSANDBOX_ROOT)\n",
                server_paths.exe);
        return 1;
    }
    raise_nofile();
    umask(077); /* the store holds access tokens: files we create are ours alone */
    char mainlua[PATH_MAX_OSB + 32];
    snprintf(mainlua, sizeof(mainlua), "%s/main.lua", server_paths.lua);
    return engine_run(mainlua);
}
