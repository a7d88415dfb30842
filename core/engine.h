/*
 * engine.h: run the engine on a Lua script until the server stops; returns the process exit code.
 * (The C test runner's entry; the public API is include/opensandbox.h, implemented in engine.c.)
 */
#ifndef OSB_ENGINE_H
#define OSB_ENGINE_H

int engine_run(const char *script);

#endif
