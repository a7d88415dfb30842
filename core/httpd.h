/*
 * httpd.h: the incoming HTTP server (libmicrohttpd in external-epoll mode) and the `core.http`
 * module.
 */
#ifndef OSB_HTTPD_H
#define OSB_HTTPD_H

#include <lua.h>

/* Stops accepting, lets in-flight requests finish (bounded by drain_timeout), then stops the loop.
 */
void httpd_drain(int code);
/* Releases the daemon and every request context; call after the loop has stopped. */
void httpd_free(void);

int luaopen_core_http(lua_State *L);

#endif
