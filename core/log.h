/*
 * log.h: structured logging, one JSON object per line on stderr.
 */
#ifndef OSB_LOG_H
#define OSB_LOG_H

#include <lua.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARNING = 2, LOG_ERROR = 3 };

/* Writes one line. The variadic part is key, value pairs of C strings, ended by NULL. request_id
 * may be NULL or "". Values are JSON-escaped. */
void log_write(enum log_level level, const char *request_id, const char *msg, ...);
int log_enabled(enum log_level level);
void log_set_level(enum log_level level);
int log_level_parse(const char *name); /* -1 when unknown */

int luaopen_core_log(lua_State *L);

#endif
