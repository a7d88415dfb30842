/*
 * engine.h: run the engine on a Lua script until the server stops; returns the process exit code.
 */
#ifndef OSB_ENGINE_H
#define OSB_ENGINE_H

int engine_run(const char *script);

#endif
