/*
 * dnsquery: the DNS wire format of the sandbox's resolver (DESIGN.md §12,
 * docs/design.md §9 "DNS in the sandbox"): a strict parser for one query
 * as a stub resolver sends it, and the builder of our answer to it.  Pure:
 * no I/O, no allocation, no libuv, so tests/fuzz/fuzz_dnsquery.c links the
 * same code the daemon runs (dnsserve.c is the glue).
 *
 * What is accepted: a 12-byte header with QR = 0 and opcode QUERY;
 * exactly one question whose name is uncompressed labels (no pointer, no
 * extended label type), at most DNSQ_MAX_WIRE_NAME bytes on the wire;
 * no answer or authority records; at most one additional record, which
 * must be an EDNS OPT at the root filling the rest of the packet; no
 * trailing bytes.  The whole query at most DNSQ_MAX_QUERY bytes.
 */
#ifndef PORTCULLIS_DNSQUERY_H
#define PORTCULLIS_DNSQUERY_H

#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"
#include "pclimits.h"

#define DNSQ_TYPE_A 1
#define DNSQ_TYPE_AAAA 28
#define DNSQ_CLASS_IN 1

#define DNSQ_RCODE_NOERROR 0
#define DNSQ_RCODE_FORMERR 1
#define DNSQ_RCODE_SERVFAIL 2
#define DNSQ_RCODE_NXDOMAIN 3
#define DNSQ_RCODE_NOTIMP 4
#define DNSQ_RCODE_REFUSED 5

/* Names on the wire: RFC 1035's 255 bytes (labels and their lengths). */
#define DNSQ_MAX_WIRE_NAME 255

enum dnsq_status {
	DNSQ_OK,	/* one question parsed: answer it */
	DNSQ_DROP,	/* not worth an answer: too short for a header, or
			 * a response (QR = 1; answering would make loops) */
	DNSQ_FORMERR,	/* answer FORMERR (header only) */
	DNSQ_NOTIMP,	/* answer NOTIMP (opcode other than QUERY) */
};

struct dnsq {
	uint16_t id;
	uint16_t flags;		/* as received (RD is echoed) */
	uint16_t qtype, qclass;
	/* The question as received (name, type, class), echoed in answers. */
	const uint8_t *question;
	size_t question_len;
	/*
	 * The name as dotted text, lower case, NUL-terminated; bytes outside
	 * 0x21..0x7e and '.' inside a label are replaced by '?' and make
	 * name_ok 0 (the name can never match a rule).  "" for the root.
	 */
	char name[DNSQ_MAX_WIRE_NAME + 1];
	int name_ok;		/* 1: only [a-z0-9-_] labels (host_normalise
				 * still decides whether it is a host name) */
	int edns;		/* an OPT record came with it */
};

/* Parses pkt (len bytes).  DNSQ_OK fills *q; DNSQ_FORMERR and DNSQ_NOTIMP
 * fill q->id and q->flags (when the header was there). */
enum dnsq_status dnsq_parse(const uint8_t *pkt, size_t len, struct dnsq *q);

/*
 * Writes the answer to q into out (outsz bytes): header (same id, QR, RD
 * as asked, RA, the rcode), the question echoed when q->question is set,
 * then one A or AAAA record (name as a pointer to the question, class IN,
 * ttl) per address of addrs whose family fits q->qtype, at most
 * DNS_SERVE_MAX_ANSWERS.  No EDNS OPT in answers: they fit 512 bytes.
 * Returns the length, or 0 when out is too small (never for outsz >=
 * DNS_SERVE_MSG_MAX).
 */
size_t dnsq_answer(const struct dnsq *q, int rcode, const struct netaddr *addrs,
    size_t naddrs, uint32_t ttl, uint8_t *out, size_t outsz);

/* "A", "AAAA", "MX", ... or "TYPE<n>" into buf (at least 12 bytes). */
const char *dnsq_type_name(uint16_t qtype, char *buf, size_t len);

#endif
