/*
 * tls: a strict parser for the TLS ClientHello, to read the SNI of a CONNECT
 * tunnel without decrypting anything.  See tls.h for the contract.
 *
 * What counts as what:
 * - NOT_TLS: the first byte is not 0x16 (handshake record).  That is all
 *   that separates "this is not TLS" (plain HTTP, SSH, an SSLv2-style hello
 *   starting 0x80) from "this is TLS".  Once a client has claimed a TLS
 *   handshake, anything wrong after that is BAD.
 * - BAD: every length is checked against its container and any mismatch is
 *   BAD, as are: a record version other than 0x0301..0x0304 (0x0300, SSLv3,
 *   is refused as BAD: RFC 7568 forbids it, and it is a TLS-family
 *   handshake, not plaintext); an empty record or one longer than 2^14
 *   bytes (RFC 8446 §5.1, TLSPlaintext; the ClientHello is never
 *   encrypted, so the larger TLSCiphertext limits do not apply); a record
 *   of another content type before the ClientHello is complete (§5.1
 *   forbids interleaving); a handshake message that is not a ClientHello;
 *   bytes after the ClientHello inside its last record (a client sends
 *   nothing else in the handshake before the server answers); a duplicate
 *   extension of any type (§4.2), which includes a duplicate server_name;
 *   two host_name entries in one server_name list (RFC 6066 §3); an empty
 *   host_name, one longer than NETADDR_MAX_HOST + 1 bytes, or one with a
 *   byte outside [A-Za-z0-9._-].
 * - The limit: all records that carry the ClientHello, headers included,
 *   fit in TLS_MAX_CLIENTHELLO bytes.  Therefore NEED_MORE is only ever
 *   returned for len < TLS_MAX_CLIENTHELLO: a caller that buffers up to
 *   TLS_MAX_CLIENTHELLO bytes always gets a verdict.
 * - Records after the one that completes the ClientHello (a TLS 1.3
 *   middlebox-compat ChangeCipherSpec, early data) are not examined.
 */
#include "tls.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "netaddr.h"

#define TLS_RECORD_HDR 5		/* type, version(2), length(2) */
#define TLS_HANDSHAKE_HDR 4		/* msg_type, length(3) */
#define TLS_MAX_RECORD 16384		/* 2^14, RFC 8446 §5.1 */
#define TLS_CT_HANDSHAKE 22
#define TLS_HT_CLIENT_HELLO 1
#define TLS_RANDOM_LEN 32
#define TLS_MAX_SESSION_ID 32		/* RFC 8446 §4.1.2 */
#define TLS_EXT_SERVER_NAME 0
#define TLS_SNI_HOST_NAME 0
/* A host_name may carry a trailing dot; the caller normalises it. */
#define TLS_MAX_SNI (NETADDR_MAX_HOST + 1)

_Static_assert(TLS_MAX_CLIENTHELLO > TLS_RECORD_HDR + TLS_HANDSHAKE_HDR,
    "limit must hold at least one record with a handshake header");

/* A bounded read cursor over the reassembled handshake message. */
struct tls_rd {
	const uint8_t *p;
	size_t n;
};

static bool
tls_rd_u8(struct tls_rd *r, unsigned *v)
{
	if (r->n < 1)
		return false;
	*v = r->p[0];
	r->p++;
	r->n--;
	return true;
}

static bool
tls_rd_u16(struct tls_rd *r, unsigned *v)
{
	if (r->n < 2)
		return false;
	*v = (unsigned)r->p[0] << 8 | r->p[1];
	r->p += 2;
	r->n -= 2;
	return true;
}

/* Splits the next n bytes off r into sub. */
static bool
tls_rd_sub(struct tls_rd *r, size_t n, struct tls_rd *sub)
{
	if (r->n < n)
		return false;
	sub->p = r->p;
	sub->n = n;
	r->p += n;
	r->n -= n;
	return true;
}

/* A vector with a u8 or u16 length prefix (RFC 8446 §3.4). */
static bool
tls_rd_vec8(struct tls_rd *r, struct tls_rd *sub)
{
	unsigned n;

	return tls_rd_u8(r, &n) && tls_rd_sub(r, n, sub);
}

static bool
tls_rd_vec16(struct tls_rd *r, struct tls_rd *sub)
{
	unsigned n;

	return tls_rd_u16(r, &n) && tls_rd_sub(r, n, sub);
}

static bool
tls_sni_byte_ok(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

/*
 * Parses the server_name extension body (RFC 6066 §3).  Copies the
 * host_name entry, if any, to sni.  Entries of other name types are
 * length-checked and skipped.  Returns false on any malformation.
 */
static bool
tls_parse_sni(struct tls_rd ext, char *sni, size_t snisz)
{
	struct tls_rd list, name;
	bool have_host = false;
	unsigned type;

	if (!tls_rd_vec16(&ext, &list) || ext.n != 0 || list.n == 0)
		return false;
	while (list.n > 0) {
		if (!tls_rd_u8(&list, &type) || !tls_rd_vec16(&list, &name))
			return false;
		if (type != TLS_SNI_HOST_NAME)
			continue;
		if (have_host || name.n == 0 || name.n > TLS_MAX_SNI)
			return false;
		for (size_t i = 0; i < name.n; i++)
			if (!tls_sni_byte_ok(name.p[i]))
				return false;
		if (sni != NULL) {
			if (name.n + 1 > snisz)
				return false;
			memcpy(sni, name.p, name.n);
			sni[name.n] = '\0';
		}
		have_host = true;
	}
	return true;
}

/*
 * Parses a complete ClientHello body (after the 4-byte handshake header),
 * RFC 8446 §4.1.2 / RFC 5246 §7.4.1.2.  Returns OK or BAD.
 */
static enum tls_peek
tls_parse_body(struct tls_rd r, char *sni, size_t snisz)
{
	/* One bit per extension type, to refuse duplicates (§4.2). */
	uint8_t seen[65536 / 8];
	struct tls_rd sub, exts;
	unsigned version, major, minor;

	if (!tls_rd_u16(&r, &version))
		return TLS_PEEK_BAD;
	major = version >> 8;
	minor = version & 0xff;
	/*
	 * legacy_version: 0x0301..0x0303 are what TLS 1.0-1.3 clients send;
	 * 0x0304 is tolerated like the record version.  SSLv3 is not.
	 */
	if (major != 3 || minor < 1 || minor > 4)
		return TLS_PEEK_BAD;
	if (!tls_rd_sub(&r, TLS_RANDOM_LEN, &sub))
		return TLS_PEEK_BAD;
	if (!tls_rd_vec8(&r, &sub) || sub.n > TLS_MAX_SESSION_ID)
		return TLS_PEEK_BAD;
	if (!tls_rd_vec16(&r, &sub) || sub.n < 2 || sub.n % 2 != 0)
		return TLS_PEEK_BAD;
	if (!tls_rd_vec8(&r, &sub) || sub.n < 1)
		return TLS_PEEK_BAD;

	/* A TLS 1.2 hello may end here: no extensions at all. */
	if (r.n == 0)
		return TLS_PEEK_OK;
	if (!tls_rd_vec16(&r, &exts) || r.n != 0)
		return TLS_PEEK_BAD;

	memset(seen, 0, sizeof(seen));
	while (exts.n > 0) {
		unsigned type;
		struct tls_rd body;

		if (!tls_rd_u16(&exts, &type) || !tls_rd_vec16(&exts, &body))
			return TLS_PEEK_BAD;
		if (seen[type / 8] & (1u << (type % 8)))
			return TLS_PEEK_BAD;
		seen[type / 8] |= (uint8_t)(1u << (type % 8));
		if (type == TLS_EXT_SERVER_NAME && !tls_parse_sni(body, sni,
		    snisz))
			return TLS_PEEK_BAD;
	}
	return TLS_PEEK_OK;
}

enum tls_peek
tls_peek_clienthello(const unsigned char *buf, size_t len, char *sni,
    size_t snisz)
{
	/* The handshake message, reassembled from the fragments of records. */
	uint8_t hs[TLS_MAX_CLIENTHELLO];
	size_t hslen = 0, off = 0;
	enum tls_peek res;

	if (sni != NULL && snisz > 0)
		sni[0] = '\0';
	if (len == 0)
		return TLS_PEEK_NEED_MORE;
	if (buf[0] != TLS_CT_HANDSHAKE)
		return TLS_PEEK_NOT_TLS;

	for (;;) {
		size_t avail = len - off, rlen, take, need = 0;

		/* Another record is needed; it must fit with at least 1 byte. */
		if (off + TLS_RECORD_HDR + 1 > TLS_MAX_CLIENTHELLO)
			return TLS_PEEK_BAD;
		if (avail == 0)
			return TLS_PEEK_NEED_MORE;
		/* Judge the header bytes we have, so junk fails early. */
		if (buf[off] != TLS_CT_HANDSHAKE)
			return TLS_PEEK_BAD;
		if (avail >= 2 && buf[off + 1] != 3)
			return TLS_PEEK_BAD;
		if (avail >= 3 && (buf[off + 2] < 1 || buf[off + 2] > 4))
			return TLS_PEEK_BAD;
		if (avail < TLS_RECORD_HDR)
			return TLS_PEEK_NEED_MORE;

		rlen = (size_t)buf[off + 3] << 8 | buf[off + 4];
		if (rlen == 0 || rlen > TLS_MAX_RECORD)
			return TLS_PEEK_BAD;
		if (off + TLS_RECORD_HDR + rlen > TLS_MAX_CLIENTHELLO)
			return TLS_PEEK_BAD;

		/* hs cannot overflow: hslen + rlen <= off + 5 + rlen <= limit. */
		take = avail - TLS_RECORD_HDR < rlen ? avail - TLS_RECORD_HDR :
		    rlen;
		memcpy(hs + hslen, buf + off + TLS_RECORD_HDR, take);

		if (hslen + take >= 1 && hs[0] != TLS_HT_CLIENT_HELLO)
			return TLS_PEEK_BAD;
		if (hslen + take >= TLS_HANDSHAKE_HDR) {
			need = TLS_HANDSHAKE_HDR + ((size_t)hs[1] << 16 |
			    (size_t)hs[2] << 8 | hs[3]);
			/* Whole record counts: nothing may follow the hello. */
			if (hslen + rlen > need)
				return TLS_PEEK_BAD;
		}
		hslen += take;
		if (take < rlen)
			return TLS_PEEK_NEED_MORE;
		off += TLS_RECORD_HDR + rlen;
		if (need != 0 && hslen == need)
			break;
	}

	res = tls_parse_body((struct tls_rd){ hs + TLS_HANDSHAKE_HDR,
	    hslen - TLS_HANDSHAKE_HDR }, sni, snisz);
	if (res != TLS_PEEK_OK && sni != NULL && snisz > 0)
		sni[0] = '\0';
	return res;
}
