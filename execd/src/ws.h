/*
 * ws.h: the server side of WebSocket (RFC 6455) for the agent's PTY sessions: the handshake's
 * Sec-WebSocket-Accept value and frame (de)coding. No I/O: functions take bytes and return
 * results, which is what the unit tests and the fuzz target drive.
 *
 * SHA-1 and base64 are implemented here (ws.c) because the agent is one static musl binary: no
 * crypto library is installed as a static musl archive (Debian's libssl/libcrypto/nettle static
 * archives are built against glibc), and the handshake needs nothing else from one.
 */
#ifndef EXECD_WS_H
#define EXECD_WS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA
};

#define WS_MAX_PAYLOAD (1024 * 1024) /* a larger client frame (or message) is refused: 1009 */

#define WS_ERR_PROTOCOL (-1002)
#define WS_ERR_TOO_BIG (-1009)

struct ws_frame {
    int fin;
    int opcode;
    char *payload; /* unmasked in place, inside the input */
    size_t len;
};

void sha1(const void *data, size_t n, unsigned char out[20]);
/* Standard base64 with padding; out must hold 4 * ((n + 2) / 3) + 1 bytes. */
void base64_encode(const unsigned char *in, size_t n, char *out);
/* Sec-WebSocket-Accept for a client key: base64(SHA-1(key + GUID)); out holds 29 bytes. */
void ws_accept_key(const char *key, char out[29]);

/*
 * Parses one client frame at p[0..n). Returns the frame's total length (> 0) with f filled and
 * its payload unmasked in place, 0 when more bytes are needed, or WS_ERR_* (unmasked client
 * frame, reserved bits or opcodes, fragmented or oversized control frame, payload over
 * WS_MAX_PAYLOAD).
 */
long ws_parse_frame(char *p, size_t n, struct ws_frame *f);
/* Appends the head of an unmasked server frame (FIN set) whose payload of len bytes follows. */
int ws_put_head(struct buf *out, int opcode, size_t len);
/* Appends an unmasked server frame (FIN set). */
int ws_put_frame(struct buf *out, int opcode, const void *payload, size_t len);
/* Appends a close frame with a status code and reason. */
int ws_put_close(struct buf *out, unsigned code, const char *reason);

#endif
