/*
 * dnsquery: parse one DNS query, build our answer (dnsquery.h).  Every
 * read is checked against the packet's length before it happens; a name
 * is read once, forwards, and a compression pointer in it is a FORMERR,
 * so there is no loop to follow.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "dnsquery.h"

#define HDR_LEN 12
#define FLAG_QR 0x8000u
#define FLAG_OPCODE 0x7800u
#define FLAG_RD 0x0100u
#define FLAG_RA 0x0080u
#define FLAG_AA 0x0400u
#define TYPE_OPT 41
/* An answer record: pointer (2), type, class (4), ttl (4), rdlength (2). */
#define RR_FIXED 12

/* The largest answer we build fits the buffer dnsserve.c hands us. */
static_assert(HDR_LEN + DNSQ_MAX_WIRE_NAME + 4 +
    DNS_SERVE_MAX_ANSWERS * (RR_FIXED + 16) <= DNS_SERVE_MSG_MAX,
    "an answer with DNS_SERVE_MAX_ANSWERS AAAA records fits DNS_SERVE_MSG_MAX");

static uint16_t
get16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static void
put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Reads the question's name at pkt[*off]; 0, or -1 (FORMERR). */
static int
parse_name(const uint8_t *pkt, size_t len, size_t *off, struct dnsq *q)
{
	size_t pos = *off, start = *off, out = 0;

	q->name_ok = 1;
	for (;;) {
		uint8_t l;

		if (pos >= len)
			return -1;
		l = pkt[pos++];
		if (l == 0)
			break;
		/* 0xc0: a compression pointer; 0x40, 0x80: extended
		 * label types (RFC 6891 deprecated them).  None belongs in
		 * a stub's question. */
		if (l & 0xc0)
			return -1;
		if (l > len - pos)
			return -1;
		if (pos + l - start + 1 > DNSQ_MAX_WIRE_NAME)
			return -1;
		if (out > 0)
			q->name[out++] = '.';
		for (uint8_t i = 0; i < l; i++) {
			uint8_t c = pkt[pos + i];

			if (c >= 'A' && c <= 'Z')
				c = (uint8_t)(c - 'A' + 'a');
			if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			    c == '-' || c == '_')) {
				q->name_ok = 0;
				if (c < 0x21 || c > 0x7e || c == '.')
					c = '?';
			}
			q->name[out++] = (char)c;
		}
		pos += l;
	}
	q->name[out] = '\0';
	if (out == 0)
		q->name_ok = 0;
	*off = pos;
	return 0;
}

enum dnsq_status
dnsq_parse(const uint8_t *pkt, size_t len, struct dnsq *q)
{
	size_t off = HDR_LEN, qend;
	uint16_t qd, an, ns, ar;

	memset(q, 0, sizeof(*q));
	if (pkt == NULL || len < HDR_LEN)
		return DNSQ_DROP;
	q->id = get16(pkt);
	q->flags = get16(pkt + 2);
	if (q->flags & FLAG_QR)
		return DNSQ_DROP;
	if (len > DNS_SERVE_MSG_MAX)
		return DNSQ_FORMERR;
	if ((q->flags & FLAG_OPCODE) != 0)
		return DNSQ_NOTIMP;
	qd = get16(pkt + 4);
	an = get16(pkt + 6);
	ns = get16(pkt + 8);
	ar = get16(pkt + 10);
	if (qd != 1 || an != 0 || ns != 0 || ar > 1)
		return DNSQ_FORMERR;
	if (parse_name(pkt, len, &off, q) != 0)
		return DNSQ_FORMERR;
	if (len - off < 4)
		return DNSQ_FORMERR;
	q->qtype = get16(pkt + off);
	q->qclass = get16(pkt + off + 2);
	off += 4;
	qend = off;
	if (ar == 1) {
		/* EDNS (RFC 6891): root name, type OPT, class (UDP size),
		 * ttl (ext. rcode, version, flags), rdlength, options.  We
		 * read none of it: answers stay within 512 bytes. */
		if (len - off < 11 || pkt[off] != 0 ||
		    get16(pkt + off + 1) != TYPE_OPT)
			return DNSQ_FORMERR;
		if (get16(pkt + off + 9) != len - off - 11)
			return DNSQ_FORMERR;
		q->edns = 1;
		off = len;
	}
	if (off != len)
		return DNSQ_FORMERR;
	/* Only now: a refusal is a bare header (dnsq_answer). */
	q->question = pkt + HDR_LEN;
	q->question_len = qend - HDR_LEN;
	return DNSQ_OK;
}

size_t
dnsq_answer(const struct dnsq *q, int rcode, const struct netaddr *addrs,
    size_t naddrs, uint32_t ttl, uint8_t *out, size_t outsz)
{
	size_t pos = HDR_LEN;
	uint16_t nans = 0, flags;
	int want = 0;

	if (outsz < HDR_LEN)
		return 0;
	/* QR, the opcode asked, AA (we are the authority the sandbox
	 * has), RD echoed, RA, the rcode. */
	flags = (uint16_t)(FLAG_QR | (q->flags & (FLAG_OPCODE | FLAG_RD)) |
	    FLAG_RA | (rcode & 0xf));
	if (rcode == DNSQ_RCODE_NOERROR || rcode == DNSQ_RCODE_NXDOMAIN)
		flags |= FLAG_AA;
	put16(out, q->id);
	put16(out + 2, flags);
	memset(out + 4, 0, 8);
	if (q->question == NULL)
		return pos;
	if (q->question_len > outsz - pos)
		return 0;
	memcpy(out + pos, q->question, q->question_len);
	pos += q->question_len;
	put16(out + 4, 1);
	if (rcode != DNSQ_RCODE_NOERROR || q->qclass != DNSQ_CLASS_IN)
		return pos;
	if (q->qtype == DNSQ_TYPE_A)
		want = AF_INET;
	else if (q->qtype == DNSQ_TYPE_AAAA)
		want = AF_INET6;
	for (size_t i = 0; i < naddrs && want != 0 &&
	    nans < DNS_SERVE_MAX_ANSWERS; i++) {
		size_t alen = want == AF_INET ? 4 : 16;

		if (addrs[i].family != want)
			continue;
		if (RR_FIXED + alen > outsz - pos)
			return 0;
		put16(out + pos, 0xc000 | HDR_LEN);	/* the question's name */
		put16(out + pos + 2, q->qtype);
		put16(out + pos + 4, DNSQ_CLASS_IN);
		put16(out + pos + 6, (uint16_t)(ttl >> 16));
		put16(out + pos + 8, (uint16_t)ttl);
		put16(out + pos + 10, (uint16_t)alen);
		memcpy(out + pos + RR_FIXED, addrs[i].bytes, alen);
		pos += RR_FIXED + alen;
		nans++;
	}
	put16(out + 6, nans);
	return pos;
}

const char *
dnsq_type_name(uint16_t qtype, char *buf, size_t len)
{
	static const struct {
		uint16_t t;
		const char *name;
	} names[] = {
		{ 1, "A" }, { 2, "NS" }, { 5, "CNAME" }, { 6, "SOA" },
		{ 12, "PTR" }, { 15, "MX" }, { 16, "TXT" }, { 28, "AAAA" },
		{ 33, "SRV" }, { 64, "SVCB" }, { 65, "HTTPS" }, { 255, "ANY" },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].t == qtype)
			return names[i].name;
	snprintf(buf, len, "TYPE%u", (unsigned)qtype);
	return buf;
}
