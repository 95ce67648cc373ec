/*
 * front: the request front end — llhttp's request settings and callbacks,
 * the request-line shape checks, the method, the head arena, the pause at a
 * complete head, the head checks (http_check_request()) and the refusal a
 * bad head gets (400, 414 or 431).  No I/O and no conn: the daemon's conn
 * code (relay.c, exchange.c) and the request fuzzer both drive it.
 */
#ifndef PORTCULLIS_FRONT_H
#define PORTCULLIS_FRONT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "http.h"
#include "pclimits.h"

/* What front_feed_head() made of the bytes it was given. */
enum front_status {
	FRONT_MORE,		/* all taken, the head is not complete yet */
	FRONT_HEAD,		/* a complete head that passed the checks */
	FRONT_BAD,		/* refused: see status and why */
};

struct front {
	llhttp_t parser;		/* paused after the head, then the body */
	/* The head arena: allocated at a head's first byte, freed by
	 * front_drop_head() (the response parser borrows it too). */
	struct http_head *head;
	char method[PROXY_MAX_METHOD];
	bool req_done;			/* the request's message ended */
	/* The parser paused after a complete head: FRONT_HEAD, or FRONT_BAD
	 * from the head checks (not from llhttp). */
	bool head_done;
	/* Request-line shape: absolute offsets within the current head, so
	 * that a line split over reads is judged the same as a whole one. */
	const char *feed_base;		/* start of the bytes being parsed */
	uint64_t fed;			/* head bytes parsed before feed_base */
	uint64_t method_end, url_start, url_end;
	bool url_seen, version_seen;
	bool url_complete;		/* llhttp ended the target's span */
	/* Why a callback refused the head: llhttp replaces the reason a span
	 * callback sets with "Span callback error in on_url". */
	const char *cb_why;
	/* FRONT_HEAD: the validated target (points into head). */
	struct http_target target;
	/* Tunnel mode (an intercepted TLS tunnel, mitm.c): requests are
	 * origin-form and must name this authority in Host; NULL: a proxy
	 * request (absolute-form).  Set by the conn, kept across requests. */
	const struct http_target *tunnel;
	/* FRONT_BAD: 400, 414 or 431, and a static reason (may be NULL). */
	int status;
	const char *why;
};

/* Once, before any parser runs (the settings are shared by all threads). */
void front_global_init(void);

/* Initialises f for a new client connection (nothing allocated). */
void front_init(struct front *f);

/* Starts the next request: the parser reset, its head state cleared
 * (the arena, if any, is kept for reuse). */
void front_begin(struct front *f);

/*
 * Parses request head bytes data[0, n).  FRONT_MORE: all n taken
 * (*used = n).  FRONT_HEAD: the head ended after *used bytes, the parser
 * is paused there, and f->target holds the checked target.  FRONT_BAD:
 * f->status and f->why say why; the conn ends.
 */
enum front_status front_feed_head(struct front *f, const char *data,
    size_t n, size_t *used);

/*
 * Parses request body bytes data[0, n) (after front_resume()).  Returns 0
 * with *used the bytes that belong to this request (f->req_done set when
 * its message ended there), or -1 for a malformed body.
 */
int front_feed_body(struct front *f, const char *data, size_t n,
    size_t *used);

/* Lets the parser go on past the head, into the body. */
void front_resume(struct front *f);

/*
 * Allocates (once) and clears the head arena: the on_message_begin of
 * both parsers.  Returns 0, or -1 when out of memory.
 */
int front_head_begin(struct front *f);

/* Gives up the head arena (between requests, in a tunnel, at the end):
 * kept for this thread's next head (up to PROXY_HEAD_CACHE), else freed. */
void front_drop_head(struct front *f);

/* Frees this thread's kept arenas: at the end of each loop's thread. */
void front_head_cache_clear(void);

#endif
