/*
 * tls: a parser for the TLS ClientHello, used to check the SNI of CONNECT
 * tunnels to TLS ports without decrypting anything.  Pure, no I/O.
 */
#ifndef PORTCULLIS_TLS_H
#define PORTCULLIS_TLS_H

#include <stddef.h>

#include "pclimits.h"

enum tls_peek {
	TLS_PEEK_NEED_MORE,	/* a ClientHello so far; feed more bytes */
	TLS_PEEK_OK,		/* complete; sni filled (or empty: no SNI) */
	TLS_PEEK_NOT_TLS,	/* the first bytes are not a TLS handshake */
	TLS_PEEK_BAD,		/* TLS, but malformed or over the limit */
};

/*
 * Examines the first len bytes a client sent into a tunnel.  The
 * ClientHello may span several TLS records and several reads; call again
 * with the whole buffer so far.  On TLS_PEEK_OK, sni holds the server_name
 * (host_name type) exactly as sent, NUL-terminated, or "" when the
 * extension is absent.  sni must have room for NETADDR_MAX_HOST + 2 bytes.
 */
enum tls_peek tls_peek_clienthello(const unsigned char *buf, size_t len,
    char *sni, size_t snisz);

#endif
