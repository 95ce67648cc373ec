/*
 * libFuzzer harness for proxy/tls.c: tls_peek_clienthello on arbitrary
 * bytes, checking the contract a caller relies on.  Any violated invariant
 * aborts, which libFuzzer reports as a crash.
 */
#include "netaddr.h"
#include "tls.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void
check(int cond)
{
	if (!cond)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char sni[NETADDR_MAX_HOST + 2], sni2[NETADDR_MAX_HOST + 2];
	enum tls_peek r, rp;
	size_t n;

	r = tls_peek_clienthello(data, size, sni, sizeof(sni));
	n = strnlen(sni, sizeof(sni));
	check(n < sizeof(sni));
	if (r == TLS_PEEK_OK) {
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)sni[i];
			check((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    (c >= '0' && c <= '9') || c == '.' || c == '-' ||
			    c == '_');
		}
	} else {
		check(n == 0);
	}
	/* A caller buffering TLS_MAX_CLIENTHELLO bytes always gets a verdict. */
	if (r == TLS_PEEK_NEED_MORE)
		check(size < TLS_MAX_CLIENTHELLO);

	/* A verdict on a prefix is final: more bytes cannot change it. */
	if (size > 0) {
		rp = tls_peek_clienthello(data, size / 2, sni2, sizeof(sni2));
		if (rp != TLS_PEEK_NEED_MORE) {
			check(rp == r);
			if (r == TLS_PEEK_OK)
				check(strcmp(sni, sni2) == 0);
		}
	}
	return 0;
}
