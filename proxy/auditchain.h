/*
 * auditchain: the audit log's tamper evidence (DESIGN.md §13, design.md §9
 * "Audit chain and rotation"), shared by the writer (audit.c) and
 * `portcullis audit verify` (auditverify.c).
 *
 * Every record ends `,"seq":N,"mac":"HEX"}`: mac = HMAC-SHA256(key,
 * PREV || BODY) in lower-case hex, where BODY is the line from its `{` up
 * to (not including) `,"mac":` — so it covers seq — and PREV is the
 * previous record's mac (64 hex characters).  A `chain` record starts a
 * file: its `prev_mac` is the last mac of the file before it (rotation),
 * or null for a new chain, and PREV for it is that value (64 '0's for
 * null).
 */
#ifndef PORTCULLIS_AUDITCHAIN_H
#define PORTCULLIS_AUDITCHAIN_H

#include <stdbool.h>
#include <stddef.h>

#define AUDIT_KEY_BYTES 32
#define AUDIT_MAC_HEX 64

struct evp_mac_ctx_st;

/* The key, and the HMAC state made from it at its first use (reused for
 * every record: the digest fetch and the key's pads once, not per record);
 * auditkey_clear() frees it.  One thread at a time. */
struct auditkey {
	unsigned char k[AUDIT_KEY_BYTES];
	struct evp_mac_ctx_st *ctx;
};

/* Loads the key file at path (64 hex digits and a newline): a regular
 * file, not a symlink, not readable or writable by group or others.  With
 * create, a missing file is made (0600, O_EXCL: two processes racing get
 * the same key).  0, or -errno with a message in err. */
int auditkey_load(const char *path, bool create, struct auditkey *k,
    char *err, size_t errlen);

/* out = hex HMAC-SHA256(k, prev[0..64) || p[0..n)), NUL-terminated.
 * 0 or -1 (OpenSSL failure). */
int auditchain_mac(struct auditkey *k, const char *prev,
    const char *p, size_t n, char out[AUDIT_MAC_HEX + 1]);

/* Frees the HMAC state and wipes the key. */
void auditkey_clear(struct auditkey *k);

/* The chain fields of one line (without its newline): *body = bytes the
 * mac covers, *seq, *mac (64 hex digits inside line).  0, or -1 when the
 * line does not end `,"seq":N,"mac":"HEX"}`. */
int auditchain_split(const char *line, size_t len, size_t *body,
    unsigned long long *seq, const char **mac);

/* 64 '0's: PREV of a new chain. */
extern const char auditchain_zero[AUDIT_MAC_HEX + 1];

#endif
