/*
 * pclimits: THE limits header of portcullis.  Every bound the program
 * enforces lives here, each with a one-line reason.  A limit that can be
 * configured has a default (*_DEF_*), a least value (*_MIN_*) and a hard
 * maximum (*_MAX_*); the config key table (conf/keys.c) takes its rows
 * from these names and refuses a value outside [MIN, MAX].
 *
 * (Named pclimits.h, not limits.h, so that it never shadows the system
 * <limits.h>.  The proxy's fixed limits, still in proxy/limits.h, are to
 * move here too.)
 */
#ifndef PORTCULLIS_PCLIMITS_H
#define PORTCULLIS_PCLIMITS_H

#include <assert.h>

/* ---- configurable: [proxy] ------------------------------------------- */

/* [proxy] workers: event loops; one serves a laptop, "auto" = one per CPU. */
#define PROXY_DEF_WORKERS 1
#define PROXY_MIN_WORKERS 1
/* More worker threads than this is a typo, not a plan. */
#define PROXY_MAX_WORKERS 256

/* ---- configurable: [dns] --------------------------------------------- */

/* [dns] timeout: a resolver that has not answered in 2 s is not coming. */
#define PROXY_DEF_DNS_TIMEOUT_MS 2000
/* Below 100 ms even a healthy LAN resolver would time out under load. */
#define PROXY_MIN_DNS_TIMEOUT_MS 100
/* A client waits up to 3 x this for a dial (conn.c); a minute is plenty. */
#define PROXY_MAX_DNS_TIMEOUT_MS 60000

/* ---- configurable: [limits] ------------------------------------------ */

/* [limits] max_connections: a build farm's worth, far below fd limits. */
#define PROXY_DEF_CONNS 10000
#define PROXY_MIN_CONNS 1
/* Each conn holds two fds and a struct; beyond a million is a mistake. */
#define PROXY_MAX_CONNS 1000000

/* [limits] header_timeout: a client sends its head within 10 s or never. */
#define PROXY_DEF_HEADER_TIMEOUT_MS 10000
/* Timers below 100 ms would cut slow but honest clients on loopback. */
#define PROXY_MIN_HEADER_TIMEOUT_MS 100
/* Ten minutes: longer only lets a slowloris hold a slot. */
#define PROXY_MAX_HEADER_TIMEOUT_MS 600000

/* [limits] connect_timeout: an upstream that takes 10 s to accept is down. */
#define PROXY_DEF_CONNECT_TIMEOUT_MS 10000
#define PROXY_MIN_CONNECT_TIMEOUT_MS 100
/* Five minutes: past the kernel's own SYN retry budget (~2 min). */
#define PROXY_MAX_CONNECT_TIMEOUT_MS 300000

/* [limits] idle_timeout: 5 min without a byte either way ends a conn. */
#define PROXY_DEF_IDLE_TIMEOUT_MS 300000
/* Below a second, a pause between keep-alive requests would cut them. */
#define PROXY_MIN_IDLE_TIMEOUT_MS 1000
/* One day: a tunnel idle longer is a leak, not a session. */
#define PROXY_MAX_IDLE_TIMEOUT_MS 86400000

/* ---- configurable: [audit] ------------------------------------------- */

/* [audit] reserve_mib: space kept allocated past the audit log's end, so a
 * full file system doesn't stop the log at once (design.md §9).  The
 * default holds ~20000 records; the maximum keeps a typo from taking a
 * disk. */
#define AUDIT_DEF_RESERVE_MIB 8
#define AUDIT_MIN_RESERVE_MIB 0
#define AUDIT_MAX_RESERVE_MIB 4096

/* ---- fixed: the config loader (conf/) -------------------------------- */

/* Largest config file read; a policy file is a few KiB. */
#define CFG_MAX_FILE_BYTES (1u << 20)
/* Longest env or preset name: room for a project name, not for prose. */
#define CFG_MAX_NAME 64
/* Errors reported at most per load; the rest are counted. */
#define CFG_MAX_ERRORS 100
/* Preset references nest at most this deep (a cycle is refused anyway). */
#define CFG_MAX_PRESET_DEPTH 8
/*
 * Files read through [proxy] include, at most.  Includes do not nest: an
 * included file may hold only [env] and [preset] sections.
 */
#define CFG_MAX_INCLUDED 64
/* Ceiling violations reported per pattern item (a preset may expand to many). */
#define CFG_MAX_CEIL_ERRS_PER_ITEM 5

static_assert(PROXY_MIN_WORKERS <= PROXY_DEF_WORKERS &&
    PROXY_DEF_WORKERS <= PROXY_MAX_WORKERS, "workers default in range");
static_assert(PROXY_MIN_DNS_TIMEOUT_MS <= PROXY_DEF_DNS_TIMEOUT_MS &&
    PROXY_DEF_DNS_TIMEOUT_MS <= PROXY_MAX_DNS_TIMEOUT_MS,
    "dns timeout default in range");
static_assert(PROXY_MIN_CONNS <= PROXY_DEF_CONNS &&
    PROXY_DEF_CONNS <= PROXY_MAX_CONNS, "max_connections default in range");
static_assert(PROXY_MIN_HEADER_TIMEOUT_MS <= PROXY_DEF_HEADER_TIMEOUT_MS &&
    PROXY_DEF_HEADER_TIMEOUT_MS <= PROXY_MAX_HEADER_TIMEOUT_MS,
    "header timeout default in range");
static_assert(PROXY_MIN_CONNECT_TIMEOUT_MS <= PROXY_DEF_CONNECT_TIMEOUT_MS &&
    PROXY_DEF_CONNECT_TIMEOUT_MS <= PROXY_MAX_CONNECT_TIMEOUT_MS,
    "connect timeout default in range");
static_assert(PROXY_MIN_IDLE_TIMEOUT_MS <= PROXY_DEF_IDLE_TIMEOUT_MS &&
    PROXY_DEF_IDLE_TIMEOUT_MS <= PROXY_MAX_IDLE_TIMEOUT_MS,
    "idle timeout default in range");
static_assert(AUDIT_DEF_RESERVE_MIB <= AUDIT_MAX_RESERVE_MIB,
    "audit reserve default in range");
/* Timeouts are stored in an unsigned (struct cfg); keep them in range. */
static_assert(PROXY_MAX_IDLE_TIMEOUT_MS <= 0xffffffffu, "fits unsigned");

#endif
