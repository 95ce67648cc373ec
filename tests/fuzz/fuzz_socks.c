/*
 * libFuzzer harness for the SOCKS5 front end, the daemon's own
 * (proxy/socks.c, linked here as the daemon links it, with conf/netaddr.c
 * for the host normalisation): bytes -> socks_feed() driven as
 * proxy/socksconn.c drives it (after a greeting, feed on with what is
 * left; a request or a refusal ends the conn), then the replies.
 *
 * Invariants (any violation aborts, which libFuzzer reports as a crash):
 *  - socks_feed() never takes more than it was given, takes everything
 *    when it wants more, and after a request or a refusal takes nothing;
 *  - a refusal has a reason text and a code: 0xFF only for a greeting,
 *    0x01, 0x07 or 0x08 for a request;
 *  - a request is a CONNECT with a port and a canonical target: a name
 *    that host_normalise() gives back unchanged, or an address whose
 *    family matches its kind;
 *  - the outcome is the same when the input arrives in one read, split
 *    at any point, or one byte at a time;
 *  - every reply is 10 or 22 bytes, VER 5, RSV 0.
 */
#include "netaddr.h"
#include "pclimits.h"
#include "policy.h"
#include "socks.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
check(int cond)
{
	if (!cond)
		abort();
}

struct outcome {
	enum socks_status last;
	unsigned ngreetings;
	size_t consumed;
	struct socks s;
};

/*
 * Feeds data[0, n) in pieces of at most step bytes (0: all at once), split
 * first at split, as reads would bring them.
 */
static void
drive(const uint8_t *data, size_t n, size_t split, size_t step,
    struct outcome *o)
{
	size_t off = 0;

	memset(o, 0, sizeof(*o));
	socks_init(&o->s);
	o->last = SOCKS_MORE;
	while (off < n) {
		size_t len = n - off, used;
		enum socks_status st;

		if (off < split && split < n)
			len = split - off;
		if (step > 0 && len > step)
			len = step;
		/* One read: consumed in a loop as socksconn_pump() does. */
		while (len > 0) {
			st = socks_feed(&o->s, data + off, len, &used);
			check(used <= len);
			if (st == SOCKS_MORE)
				check(used == len);
			off += used;
			len -= used;
			o->last = st;
			if (st == SOCKS_GREETING) {
				o->ngreetings++;
				continue;
			}
			if (st == SOCKS_REQUEST || st == SOCKS_BAD) {
				o->consumed = off;
				st = socks_feed(&o->s, data + off, n - off, &used);
				check(st == SOCKS_BAD && used == 0);
				return;
			}
		}
	}
	o->consumed = off;
}

static void
check_same(const struct outcome *a, const struct outcome *b)
{
	check(a->last == b->last);
	check(a->ngreetings == b->ngreetings);
	check(a->consumed == b->consumed);
	if (a->last == SOCKS_BAD) {
		check(a->s.rep == b->s.rep);
		check(a->s.why == b->s.why);
	}
	if (a->last == SOCKS_REQUEST || (a->last == SOCKS_BAD &&
	    a->s.have_target)) {
		check(b->s.have_target);
		check(strcmp(a->s.host, b->s.host) == 0);
		check(a->s.kind == b->s.kind && a->s.port == b->s.port);
		check(a->s.cmd == b->s.cmd);
	}
}

static void
check_reply(uint8_t rep, const struct netaddr *a, uint16_t port)
{
	uint8_t out[SOCKS_MAX_REPLY];
	size_t n = socks_reply(rep, a, port, out);

	check(n == 10 || n == 22);
	check(out[0] == 5 && out[1] == rep && out[2] == 0);
	check(out[3] == (n == 10 ? SOCKS_ATYP_IPV4 : SOCKS_ATYP_IPV6));
	check(((out[n - 2] << 8) | out[n - 1]) == port);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct outcome whole, split, bytes;
	char norm[NETADDR_MAX_HOST + 3], v6[NETADDR_MAX_HOST + 3];
	enum host_kind kind;
	struct netaddr na;
	const struct socks *s = &whole.s;

	drive(data, size, 0, 0, &whole);
	check(whole.ngreetings <= 1);
	if (whole.last == SOCKS_BAD) {
		check(s->why != NULL);
		if (whole.ngreetings == 0)
			check(s->rep == SOCKS_METHOD_NONE);
		else
			check(s->rep == SOCKS_REP_FAILURE ||
			    s->rep == SOCKS_REP_CMD || s->rep == SOCKS_REP_ATYP);
		if (s->rep == SOCKS_REP_CMD)
			check(s->have_target && s->cmd != SOCKS_CMD_CONNECT);
	}
	if (whole.last == SOCKS_REQUEST) {
		check(whole.ngreetings == 1);
		check(s->cmd == SOCKS_CMD_CONNECT && s->port != 0);
		check(s->host[0] != '\0');
		/* An IPv6 target is kept without brackets, as an HTTP target's
		 * is; host_normalise() takes it in them. */
		if (s->kind == HOST_IPV6) {
			snprintf(v6, sizeof(v6), "[%s]", s->host);
			check(host_normalise(v6, strlen(v6), norm, sizeof(norm),
			    &kind, &na) == 0);
		} else {
			check(host_normalise(s->host, strlen(s->host), norm,
			    sizeof(norm), &kind, &na) == 0);
		}
		check(strcmp(norm, s->host) == 0 && kind == s->kind);
		if (kind != HOST_NAME) {
			check(na.family == (kind == HOST_IPV4 ? AF_INET : AF_INET6));
			check(netaddr_equal(&na, &s->addr));
		}
		check_reply(SOCKS_REP_OK, kind == HOST_NAME ? NULL : &s->addr,
		    s->port);
	}
	check(whole.consumed <= SOCKS_MAX_GREETING + SOCKS_MAX_REQUEST);

	drive(data, size, size > 0 ? data[0] % (size + 1) : 0, 0, &split);
	check_same(&whole, &split);
	if (size <= SOCKS_MAX_GREETING + SOCKS_MAX_REQUEST + 16) {
		drive(data, size, 0, 1, &bytes);
		check_same(&whole, &bytes);
	}
	for (int r = 0; r < REASON_COUNT; r++) {
		uint8_t rep = socks_rep_for_reason((enum reason)r);

		check(rep <= SOCKS_REP_ATYP);
		check((rep == SOCKS_REP_OK) == (r == REASON_ALLOWED));
		check_reply(rep, NULL, 0);
	}
	return 0;
}
