/*
 * core_scenario.c: runs one Lua scenario on the real engine (loop, libmicrohttpd, libcurl, timers)
 * and exits with the engine's exit code. A scenario calls core.stop(0) when every check passed; a
 * failed assertion raises in the boot task, which makes the engine exit 1.
 */
#include "engine.h"
#include "server.h"

#include <stdio.h>
#include <string.h>

#ifndef OSB_SOURCE_DIR
#define OSB_SOURCE_DIR "."
#endif

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s scenario.lua\n", argv[0]);
        return 2;
    }
    server_set_argv(argc, argv);
    snprintf(server_paths.root, sizeof(server_paths.root), "%s", OSB_SOURCE_DIR);
    snprintf(server_paths.lua, sizeof(server_paths.lua), "%s/lua", OSB_SOURCE_DIR);
    return engine_run(argv[1]);
}
