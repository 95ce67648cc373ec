/*
 * tlsca: the interception CA (DESIGN.md §11).  One CA (cert + key) and a
 * bounded LRU cache of leaf server contexts signed by it, plus the client
 * context for verified upstream TLS.  A struct tlsca is reference counted
 * and thread-safe (one mutex): every worker loop shares one, and a reload
 * swaps in a new one while connections still hold the old.
 */
#ifndef PORTCULLIS_TLSCA_H
#define PORTCULLIS_TLSCA_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "pclimits.h"

struct tlsca;

/* Loads a PEM cert + PEM key.  Refuses a key file readable by group or
 * others (or not a regular file), a key that does not match the cert, a
 * cert that is not a CA (basicConstraints CA:TRUE, keyCertSign if keyUsage
 * is present), a cert outside its validity.  NULL + why on failure.  The
 * result holds one reference. */
struct tlsca *tlsca_load(const char *cert_pem_path, const char *key_pem_path,
    char *why, size_t whylen);
/* A fresh CA (P-256), in memory only (portcullis run without [tls]
 * ca_cert).  NULL + why on failure. */
struct tlsca *tlsca_ephemeral(char *why, size_t whylen);
/* A new CA for `portcullis ca init` and tlsca_ephemeral: a P-256 key and
 * a self-signed cert (CN "portcullis CA <8 hex>", CA:TRUE critical,
 * pathlen 0, keyCertSign + cRLSign) valid for days.  0, or -1 + why. */
int tlsca_make(int days, X509 **cert, EVP_PKEY **key, char *why,
    size_t whylen);
void tlsca_ref(struct tlsca *ca);
void tlsca_unref(struct tlsca *ca);	/* NULL is fine */

/* The CA cert's SHA-256 fingerprint, 64 lowercase hex digits + NUL (the
 * `config` audit record's "tls_ca"); "" on failure. */
void tlsca_fingerprint(const struct tlsca *ca, char out[65]);
/* Cert PEM (for the sandbox bundle); malloc'd, NUL-terminated; NULL on
 * allocation failure. */
char *tlsca_cert_pem(const struct tlsca *ca);

/*
 * A server SSL_CTX presenting a leaf for host (DNS name or IP literal →
 * SAN of that type), signed by the CA, TLS >= 1.2, ALPN http/1.1 only;
 * from the cache (TLSCA_LEAF_CACHE entries, LRU).  The caller
 * SSL_CTX_free()s its reference.  NULL + why on failure.
 */
SSL_CTX *tlsca_leaf_ctx(struct tlsca *ca, const char *host, char *why,
    size_t whylen);
/* Hit/miss counters of the leaf cache (bench, metrics). */
void tlsca_cache_stats(const struct tlsca *ca, uint64_t *hits,
    uint64_t *misses);

/*
 * Client SSL_CTX for upstream: verifies against upstream_ca_path (PEM file
 * or directory) or, NULL, the system store; SSL_VERIFY_PEER; TLS >= 1.2;
 * ALPN http/1.1.  The caller sets SNI + the expected host (SSL_set1_host /
 * X509_VERIFY_PARAM) per connection.  NULL + why on failure.
 */
SSL_CTX *tlsca_upstream_ctx(const char *upstream_ca_path, char *why,
    size_t whylen);

#endif
