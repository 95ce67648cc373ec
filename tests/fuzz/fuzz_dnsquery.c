/*
 * libFuzzer harness for the sandbox resolver's wire format, proxy/dnsquery.c:
 * the very dnsq_parse() the daemon runs on every datagram and TCP message
 * a sandbox sends to 127.0.0.1:53 (dnsserve.c), and dnsq_answer() on what
 * it parsed.  Aborts on a broken invariant:
 *
 *  - a parsed question lies inside the packet; the name is NUL-terminated
 *    within its buffer, printable, no longer than the wire name; name_ok
 *    means [a-z0-9-_.] only; an input longer than DNS_SERVE_MSG_MAX or
 *    with QR set is never DNSQ_OK;
 *  - an answer, for every rcode and with DNS_SERVE_MAX_ANSWERS + 2
 *    addresses of each family, fits DNS_SERVE_MSG_MAX, carries the query's
 *    id with QR set, at most DNS_SERVE_MAX_ANSWERS records, and is never
 *    larger than the question plus those records (no amplification);
 *  - an answer into a buffer too small returns 0, never writes past it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dnsquery.h"

#define ENSURE(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: invariant failed: %s\n",	\
		    __FILE__, __LINE__, #cond);				\
		abort();						\
	}								\
} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int rcodes[] = { DNSQ_RCODE_NOERROR, DNSQ_RCODE_FORMERR,
	    DNSQ_RCODE_SERVFAIL, DNSQ_RCODE_NXDOMAIN, DNSQ_RCODE_NOTIMP,
	    DNSQ_RCODE_REFUSED };
	struct netaddr addrs[2 * (DNS_SERVE_MAX_ANSWERS + 2)];
	uint8_t out[DNS_SERVE_MSG_MAX];
	uint8_t small[64];
	struct dnsq q;
	enum dnsq_status st;
	size_t n, namelen;

	st = dnsq_parse(data, size, &q);
	if (size > DNS_SERVE_MSG_MAX || (size >= 3 && (data[2] & 0x80)))
		ENSURE(st != DNSQ_OK);
	if (st == DNSQ_DROP)
		return 0;
	ENSURE(size >= 12);
	namelen = strnlen(q.name, sizeof(q.name));
	ENSURE(namelen < sizeof(q.name));
	if (st == DNSQ_OK) {
		ENSURE(q.question == data + 12);
		ENSURE(q.question_len >= 5 && q.question_len <= size - 12);
		ENSURE(namelen + 1 <= q.question_len - 4);
		for (size_t i = 0; i < namelen; i++) {
			unsigned char c = (unsigned char)q.name[i];

			ENSURE(c >= 0x21 && c <= 0x7e);
			if (q.name_ok)
				ENSURE((c >= 'a' && c <= 'z') ||
				    (c >= '0' && c <= '9') || c == '-' ||
				    c == '_' || c == '.');
		}
	} else {
		ENSURE(q.question == NULL);
	}
	memset(addrs, 0, sizeof(addrs));
	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		addrs[i].family = i % 2 ? AF_INET6 : AF_INET;
		addrs[i].bytes[0] = (uint8_t)i;
	}
	for (size_t r = 0; r < sizeof(rcodes) / sizeof(rcodes[0]); r++) {
		n = dnsq_answer(&q, rcodes[r], addrs,
		    sizeof(addrs) / sizeof(addrs[0]), 5, out, sizeof(out));
		ENSURE(n >= 12 && n <= sizeof(out));
		ENSURE(out[0] == (uint8_t)(q.id >> 8) &&
		    out[1] == (uint8_t)q.id);
		ENSURE(out[2] & 0x80);
		ENSURE(((out[6] << 8) | out[7]) <= DNS_SERVE_MAX_ANSWERS);
		ENSURE(n <= 12 + q.question_len + DNS_SERVE_MAX_ANSWERS * 28);
		memset(small, 0xa5, sizeof(small));
		n = dnsq_answer(&q, rcodes[r], addrs,
		    sizeof(addrs) / sizeof(addrs[0]), 5, small, 40);
		ENSURE(n <= 40);
		for (size_t i = 40; i < sizeof(small); i++)
			ENSURE(small[i] == 0xa5);
	}
	return 0;
}
