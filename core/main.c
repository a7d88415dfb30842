/*
 * main.c: opensandbox-server, a thin main over libopensandbox (include/opensandbox.h): the engine
 * with the command line, the process's signals (TERM/INT drain, HUP reload), a raised fd limit and
 * a private umask. Where the Lua tree is found, and all policy (configuration, routes, what to do
 * with --check-config), is in the library and in Lua.
 */
#include "opensandbox.h"

#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>

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
    osb_engine *e = osb_new();
    if (!e || osb_set_args(e, argc, argv) < 0 || osb_set_signals(e, 1) < 0) {
        fprintf(stderr, "opensandbox-server: cannot create the engine\n");
        return 1;
    }
    raise_nofile();
    umask(077); /* the store holds access tokens: files we create are ours alone */
    int code = osb_run(e);
    osb_free(e);
    return code;
}
