/*
 * pclimits: THE limits header of portcullis.  Every bound the program
 * enforces lives here, each with a one-line reason.  A limit that can be
 * configured has a default (*_DEF_*), a least value (*_MIN_*) and a hard
 * maximum (*_MAX_*); the config key table (conf/keys.c) takes its rows
 * from these names and refuses a value outside [MIN, MAX].
 *
 * (Named pclimits.h, not limits.h, so that it never shadows the system
 * <limits.h>.)  It lives in conf/, the lowest layer, so that the config
 * loader, the daemon and the launcher all read the same names.  Three
 * kinds of bound live elsewhere, on purpose: the handoff protocol's (in
 * lib/pclib.h) and the bridge's own (in bridge/), because the bridge links
 * nothing of ours but lib/ and includes nothing above it; and facts of a
 * wire format rather than choices of ours (a TLS record's 2^14 bytes, a
 * DNS name's 253), next to the parser that knows the format.
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
/* A paths glob (the part after HOSTPATTERN): a repository endpoint, not a
 * regular expression; the matcher is O(glob x path).  A config line is
 * shorter than inih's INI_MAX_LINE (200) anyway; this leaves room for
 * "paths = " and the host. */
#define CFG_MAX_PATH_GLOB 128
/* A [credential] header name: longer is a typo. */
#define CFG_MAX_CRED_HEADER 64
/* A credential's value (a token or "Bearer ..." line), from env: or file:;
 * longer is refused at load, so a rebuilt head has room for it. */
#define CFG_MAX_CRED_VALUE 4096
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

/* ==== fixed: the daemon (proxy/) ======================================= */

/*
 * Relay buffers.  A direction holds one only while bytes are in flight (an
 * idle tunnel holds none).  Big buffers make bulk transfers cheap (fewer
 * syscalls and wake-ups per GiB: bench rows 5 and 6); there are at most
 * PROXY_BIG_BUFS of them per worker, and once they are all lent out a
 * read gets a small one — so memory stays bounded by
 * PROXY_BIG_BUFS x BIG + 2 x max_connections x SMALL however many peers
 * hold data without reading it.
 */
#define PROXY_RELAY_BUF_BIG (256 * 1024)
#define PROXY_RELAY_BUF_SMALL (16 * 1024)
#define PROXY_BIG_BUFS 512
/* Free buffers of each size kept for reuse; beyond this, back to malloc. */
#define PROXY_POOL_KEEP 64
/* Relay write requests (uv_write_t) kept on a loop's free list for reuse:
 * a write takes one only while it is in flight, so an idle tunnel holds
 * none; beyond this many free ones, back to malloc. */
#define RELAY_WREQ_FREE_MAX 256
/* A loop's requests (struct req, ~1.6 KiB: what a conn holds until it is a
 * tunnel or closes) and an audit queue's record nodes come from slabs
 * (proxy/slab.h) of blocks this big, mapped from the kernel; SLAB_TRIM_MS
 * after one is left empty (a request slab) or the writer went idle (a
 * record slab), the empty blocks but SLAB_KEEP_EMPTY are unmapped: a burst
 * of new conns leaves no resident heap between the tunnels it leaves
 * behind.  (Small blocks: the
 * kept block is resident, and a burst's last block is partly used.) */
#define SLAB_BLOCK_BYTES (16 * 1024)
#define SLAB_KEEP_EMPTY 1
/* The empty blocks go this long after a request left one empty (a trim
 * per this many ms at most, under load): a load that goes up and down
 * doesn't map and unmap blocks, a burst's are gone soon after it. */
#define SLAB_TRIM_MS 200

/*
 * splice(2) for a plain tunnel's bulk (proxy/splice.c, design.md §9
 * "Splice").  A direction whose source gave RELAY_SPLICE_BULK_READS reads
 * in a row of at least RELAY_SPLICE_BULK_READ bytes (or a full relay
 * buffer, when that is smaller) moves socket -> pipe -> socket in the
 * kernel instead of through a relay buffer; after RELAY_SPLICE_IDLE_MS to
 * 2 x that without a byte (its pipe empty) it goes back to copying.
 */
#define RELAY_SPLICE_BULK_READ (32 * 1024)
#define RELAY_SPLICE_BULK_READS 4
#define RELAY_SPLICE_IDLE_MS 1000
/* Pipes open at once, all loops together, kept ones included: each is 2
 * fds, and a spliced tunnel also holds a dup of each of its 2 sockets, so
 * splicing costs at most 4 x this many fds beyond the tunnels' own 2
 * (the daemon's hard limit is often 20,000).  Past it, bulk is copied. */
#define RELAY_PIPES_MAX 32
/* Empty pipes a loop keeps for the next bulk spell; more are closed. */
#define RELAY_PIPES_KEEP 8
/* The size asked of each pipe (F_SETPIPE_SZ): what a spliced direction
 * holds in flight (kernel pages, at most RELAY_PIPES_MAX MiB in all).
 * Measured on bench row 5: 1 MiB 0.32 CPU-s/GiB, 256 KiB 0.41, 64 KiB (the
 * default) 0.55 (fewer, larger sends).  1 MiB is Linux's default
 * fs.pipe-max-size, so an unprivileged daemon gets it too; the kernel may
 * give less (a user past fs.pipe-user-pages-soft): the pipe's own size is
 * used. */
#define RELAY_PIPE_BYTES (1024 * 1024)
/* splice rounds (in, then out) per readiness of a socket: a bulk tunnel
 * lets the loop's other conns in after at most this many pipes' worth (as
 * libuv reads a stream at most 32 times per readiness). */
#define RELAY_SPLICE_ROUNDS 8

/* A request line URL: longer is refused with 414. */
#define PROXY_MAX_URL 8192
/* A whole request or response head (names + values, as stored): longer is
 * refused with 431 (requests) or 502 (responses). */
#define PROXY_MAX_HDR_BYTES 32768
/* Header lines per head: more is refused like an oversized head. */
#define PROXY_MAX_HEADERS 100
/* Head arenas (34 KiB each) a loop keeps for its next requests instead of
 * freeing them: a malloc that size is a glibc large-bin request, which
 * consolidates the fast bins first, on every request (front.c). */
#define PROXY_HEAD_CACHE 16
/* A rebuilt head adds at most this much to what was stored (request line,
 * Host, CRLFs and ": " per header). */
#define PROXY_HEAD_SLACK (PROXY_MAX_URL + 512 + PROXY_MAX_HEADERS * 4)

/* Requests on one keep-alive client connection before it is closed. */
#define PROXY_MAX_REQS_PER_CONN 10000

/* A request method with its NUL: llhttp knows none longer than 13 bytes
 * (GET_PARAMETER); a longer one is refused with 400. */
#define PROXY_MAX_METHOD 24
/* Writing a refusal to a client that does not read: then the conn closes. */
#define PROXY_REFUSE_TIMEOUT_MS 5000
/*
 * DNS queries c-ares still runs for nobody: their conn closed (or their
 * deadline passed) and the query finishes in the background, within
 * N servers x [dns] timeout.  Without a cap a flood of conns that close
 * while resolving would grow this without bound; at the cap, new
 * resolutions are refused (503 overloaded) until some finish.
 */
#define DNS_MAX_DETACHED 1024

/* One audit record, as written (one line).  Every string value is cut to
 * AUDIT_MAX_VALUE before escaping (6x worst case), so a record with
 * AUDIT_MAX_FIELDS fields always fits. */
#define AUDIT_MAX_VALUE 512
#define AUDIT_MAX_FIELDS 24
#define AUDIT_MAX_RECORD (AUDIT_MAX_FIELDS * (AUDIT_MAX_VALUE * 6 + 40) + 64)
/* A request path logged with [audit] paths = yes: enough to see what was
 * fetched; longer is cut and the record says "path_truncated": true. */
#define AUDIT_MAX_PATH AUDIT_MAX_VALUE
/* What a bad_request record keeps of the raw target and Host as received
 * (a refused URL may be PROXY_MAX_URL long and is the client's to choose);
 * longer is cut, with "target_truncated"/"host_header_truncated". */
#define AUDIT_MAX_TARGET 512

/*
 * The audit writer (audit.c): the loop only queues records; one thread per
 * log writes them, so a stalled pipe or a slow disk never stops the loop.
 * Queued bytes count each record plus its node.  Past AUDIT_QUEUE_BYTES
 * new requests are refused (503 audit_unavailable: the log can't keep up,
 * so it fails closed) and refusal records are dropped (counted); records of
 * work already admitted (allows, closes, sessions) still go in up to
 * AUDIT_QUEUE_BYTES + AUDIT_QUEUE_SLACK, so memory stays bounded.  A record
 * dropped past that is counted and reported by a records_lost record.
 */
#define AUDIT_QUEUE_BYTES (2 * 1024 * 1024)
#define AUDIT_QUEUE_SLACK (4 * 1024 * 1024)
/* Refusal records queue in a budget of their own, apart from the bytes that
 * decide admission: a flood of refused requests behind a slow log drops
 * (and counts) refusal records, it can't make everyone's requests 503.  It
 * holds a burst of DNS_MAX_DETACHED refusals made in one loop iteration
 * (conns opened together reach their deadlines together) even when the
 * writer gets no CPU meanwhile. */
#define AUDIT_REFUSAL_BYTES (1024 * 1024)
/* Records per writev(2): one syscall for a whole burst (<= IOV_MAX). */
#define AUDIT_BATCH_IOV 256
/* A loop thread wakes the audit writer once per loop iteration, or at once
 * when this many bytes are queued (a burst of records in one iteration must
 * not fill the queue before the writer starts on it). */
#define AUDIT_WAKE_BYTES (32 * 1024)
/* The writer, once woken for records, lingers this long before it writes
 * them, and the loops do not wake it again while it lingers or writes: under
 * load one batch (one wakeup, one flock, one writev) takes every record of
 * this interval instead of those of one loop iteration.  A record reaches
 * the file at most this much later (plus the write); AUDIT_WAKE_BYTES
 * queued, a refusal, a full batch, a stop or a reopen end the linger at
 * once. */
#define AUDIT_LINGER_US 1000
/* The audit log's lock (several processes on one file) is polled this
 * often; a writer that can't get it for AUDIT_RETRY_MAX_MS counts as a
 * failed write (fail closed) and tries again. */
#define AUDIT_LOCK_POLL_MS 5
/* Queued records that fit AUDIT_REC_CLASS_SMALL or _LARGE bytes (chain
 * tail included) take a node of that size from their queue's slab of that
 * class (proxy/slab.h, under the queue's lock), which the writer gives back
 * once the record is written: a record costs the loop no malloc, the
 * writer no free of another thread's memory, and a burst of records leaves
 * no resident heap behind (the writer trims the slabs once nothing has
 * come for SLAB_TRIM_MS).  Such a node counts its whole size in the
 * queue's bytes.  Longer records are allocated to size. */
#define AUDIT_REC_CLASS_SMALL 640
#define AUDIT_REC_CLASS_LARGE 1152
/* The chain's tail on a record: ,"seq":<20 digits>,"mac":"<64 hex>"} and
 * the newline (proxy/auditchain.h), with room to spare. */
#define AUDIT_CHAIN_TAIL 112
/* The longest line `audit verify` and the writer's tail read take (a
 * record is at most AUDIT_MAX_RECORD + AUDIT_CHAIN_TAIL). */
#define AUDIT_LINE_MAX (AUDIT_MAX_RECORD + AUDIT_CHAIN_TAIL + 64)
/* While the log can't be written: retry on a new record, but not more
 * often than MIN (a refusal flood is not a write flood), and at least every
 * MAX without one (recovery needs no traffic). */
#define AUDIT_RETRY_MIN_MS 20
#define AUDIT_RETRY_MAX_MS 1000
/* A clean stop waits this long for the queue to drain (then gives up and
 * says how many records were not written). */
#define AUDIT_DRAIN_MS 3000
/* The first record is written before serving; a log that takes none in
 * this long (a pipe nobody reads) stops start-up. */
#define AUDIT_START_MS 10000

/* Bytes of a tunnel's first flight kept while its ClientHello is read:
 * the ClientHello itself (TLS_MAX_CLIENTHELLO, split over records of 5
 * header bytes each) plus what a client may send right behind it. */
#define PROXY_PEEK_BUF (16384 + 1024)
/* SOCKS5 (proxy/socks.c): a greeting (VER NMETHODS METHODS) and a request
 * (VER CMD RSV ATYP ADDR PORT) at the largest the wire format allows, a
 * domain of 255 bytes; the header timeout bounds how long they take. */
#define SOCKS_MAX_GREETING (2 + 255)
#define SOCKS_MAX_REQUEST (4 + 1 + 255 + 2)
/* Refusal response bodies (host, reason, env, phase). */
#define PROXY_MAX_REFUSAL 2048

/* Host addresses (hostaddr.c) outside the built-in blocked ranges that the
 * set holds.  A host has a handful; past this the set is incomplete and
 * every address the check would ask it about is refused (fail closed). */
#define HOSTADDR_MAX 1024
/* The full address dump at start (and `portcullis check`): the kernel
 * answers in milliseconds; a start that cannot read it is refused. */
#define HOSTADDR_DUMP_TIMEOUT_MS 2000
/* After a failed re-read, the next try (the set is "unknown" until then). */
#define HOSTADDR_RETRY_MS 1000
/* One netlink read.  The kernel sends dump parts of at most ~8 KiB
 * (NLMSG_GOODSIZE); a message cut short counts as lost events (re-read). */
#define HOSTADDR_NL_BUF 32768
/* Receive buffer asked for the netlink socket, so that a burst of changes
 * overflows (ENOBUFS, then a full re-read) rarely; the kernel caps it at
 * net.core.rmem_max. */
#define HOSTADDR_RCVBUF (1024 * 1024)
/* Netlink reads per loop wake-up: a burst of changes cannot starve conns. */
#define HOSTADDR_READS_PER_WAKE 64

static_assert(PROXY_MAX_URL < PROXY_MAX_HDR_BYTES, "URL is part of the head");
static_assert(AUDIT_MAX_PATH <= AUDIT_MAX_VALUE, "a logged path is one value");
static_assert(AUDIT_MAX_TARGET <= AUDIT_MAX_VALUE, "a logged target is one value");
static_assert(PROXY_RELAY_BUF_SMALL >= 4096, "relay buffer too small to be useful");
static_assert(PROXY_RELAY_BUF_BIG >= PROXY_RELAY_BUF_SMALL, "big >= small");
static_assert(AUDIT_BATCH_IOV <= 1024, "writev takes at most IOV_MAX");
static_assert(AUDIT_LINGER_US < AUDIT_RETRY_MIN_MS * 1000, "a linger is shorter than any retry wait");
static_assert(AUDIT_WAKE_BYTES <= AUDIT_REFUSAL_BYTES / 4, "a burst wakes the writer well before the refusal budget is used");
static_assert(AUDIT_QUEUE_BYTES > 2 * AUDIT_MAX_RECORD, "the queue holds a burst of the largest records");
static_assert(AUDIT_REFUSAL_BYTES >= DNS_MAX_DETACHED * (AUDIT_REC_CLASS_SMALL + 64), "the refusal budget holds one burst of DNS_MAX_DETACHED refusals");
static_assert(PROXY_POOL_KEEP <= PROXY_BIG_BUFS, "keep no more than may be lent");
static_assert(RELAY_PIPES_MAX <= 255, "a conn's splice slot is 8 bits");
static_assert(RELAY_PIPES_KEEP <= RELAY_PIPES_MAX, "keep no more pipes than may be open");
static_assert(RELAY_SPLICE_BULK_READS <= 255, "a dir counts bulk reads in 8 bits");
static_assert(RELAY_PIPE_BYTES <= (1 << 20), "within Linux's default fs.pipe-max-size");

/* ==== fixed: the daemon's control socket, JSON, DNS, check, serve, TLS peek ==== */

/* proxy/json.h */
/* Input the reader takes at most: one control line (control.h
 * CONTROL_MAX_LINE); longer is refused before a byte is looked at. */
#define JSON_MAX_INPUT 4096

/* Members of the object: the largest request has five. */
#define JSON_MAX_FIELDS 16

/* Nesting of skipped values: bounds the reader's recursion. */
#define JSON_MAX_DEPTH 8

/* A number's text (longer is refused, not cut). */
#define JSON_MAX_NUMBER 64

/* proxy/control.h */
/* One request or reply line, newline included; longer is refused. */
#define CONTROL_MAX_LINE 4096

/* A reply (status lists every session); the client reads this much. */
#define CONTROL_MAX_REPLY 65536

/* How long a client waits for a reply. */
#define CONTROL_REPLY_TIMEOUT_MS 5000

/* proxy/control.c */
/* Control connections at once: a local admin interface needs few. */
#define CONTROL_MAX_CONNS 256

/* fds held per connection while waiting for their session.open/.listen
 * line. */
#define CONTROL_MAX_FDS 4

/* Sessions one control connection may own. */
#define CONTROL_MAX_SESSIONS 64

/* session.open "command" kept for `ctl status`: longer is cut (with
 * "...") — it is a label for the admin, not something decided on. */
#define CONTROL_MAX_COMMAND 256

/* The largest pid Linux hands out (PID_MAX_LIMIT on 64-bit). */
#define CONTROL_MAX_PID 4194304

/* Supplementary groups of a peer we look through (NGROUPS_MAX is 65536;
 * a peer with more than this is refused unless root/our uid/its gid). */
#define CONTROL_MAX_PEER_GROUPS 256

/* proxy/dns.h */
/* At most this many addresses (A + AAAA together) are kept per answer. */
#define DNS_MAX_ADDRS 16

/* proxy/check.c */
/* Longest target argument we take apart. */
#define CHECK_MAX_TARGET 2048

/* proxy/serve.c */
/* Room for the ready line's listener list; more listeners than fit are
 * counted ("and N more"), never cut mid-address. */
#define SERVE_READY_MAX 1024

/* proxy/tls.h */
/* A ClientHello larger than this (all its records together) is refused. */
#define TLS_MAX_CLIENTHELLO 16384

/* proxy/tlsca.h: the interception CA (DESIGN.md §11) */
/* Leaf server contexts kept per CA (LRU); one per intercepted host.  A
 * full cache measured about 24 MiB RSS (test_tlsca: ~20 KiB per SSL_CTX). */
#define TLSCA_LEAF_CACHE 1024
/* Leaf validity: from TLSCA_LEAF_BACKDATE_S before issue (clock skew)
 * to TLSCA_LEAF_DAYS after; a cached leaf past half of that is remade. */
#define TLSCA_LEAF_DAYS 7
#define TLSCA_LEAF_BACKDATE_S 3600
/* `portcullis ca init` / the ephemeral CA: validity of the CA cert. */
#define TLSCA_CA_DAYS 3650
#define TLSCA_EPHEMERAL_DAYS 2
/* A CA cert or key file larger than this is refused. */
#define TLSCA_MAX_PEM_BYTES (256 * 1024)

/* ==== fixed: the launcher (sandbox/) ==== */

/* sandbox/mounts.c */
/* Removing a fresh HOME: directory depth we descend (npm trees are far
 * shallower; deeper is left and reported), and how often we retry while
 * a killed sandbox may still be writing (MOUNTS_RM_TRIES x 50 ms). */
#define MOUNTS_RM_MAX_DEPTH 256

/* sandbox/mounts.h */
/* Hidden paths and kernel masks we track (the list is fixed; the ssh host
 * key glob is what makes it variable). */
#define MOUNTS_MAX_PATHS 96
/* Sandbox plans one run builds (the command's and the --setup one's); each
 * keeps its hide paths alive until the run ends. */
#define MOUNTS_MAX_PLANS 2

/* sandbox/runlog.c */
/* Longest value of a record field the summary keeps (longer is cut). */
#define RUNLOG_FIELD_MAX 512

/* sandbox/auditwarn.c */
/* Writable binds named in one warning; more are counted ("and N more"). */
#define AUDITWARN_MAX_NAMED 4

/* sandbox/run_internal.h */
/* Options given more than this many times are refused (argv is bounded
 * anyway; this keeps the plan's arrays fixed-size). */
#define RUN_MAX_REPEAT 64

/* The sandboxes one run starts: COMMAND's, and first CMD's with --setup. */
#define RUN_MAX_STAGES 2

/* How long COMMAND has after SIGTERM/SIGHUP before its sandbox is killed:
 * a run asked to end must end, also when COMMAND ignores the signal. */
#define RUN_SIGNAL_GRACE_MS 10000

/* Largest host /etc/ssh/ssh_config we copy into the sandbox's (real ones
 * are a few KiB). */
#define RUN_SSHCONF_MAX (256 * 1024)

/* sandbox/trust.c: the sandbox's CA bundle (DESIGN.md §11): the system
 * roots (about 200 KiB on Debian), the files the caller's own CA
 * variables name, and the interception CA; a bundle over this is an
 * error (a PEM file cut short is no bundle). */
#define RUN_CA_BUNDLE_MAX (8 * 1024 * 1024)
/* proxy/tlsca.c: the system trust store's file (Debian's is ~220 KiB) is
 * read whole into memory; a bigger one is left out (the hashed directory
 * still serves). */
#define TLSCA_SYSTEM_STORE_MAX (16 * 1024 * 1024)
/* The bundle pipe's buffer asked for (F_SETPIPE_SZ; Linux's default
 * fs.pipe-max-size): a usual bundle fits, so writing it never waits for
 * bwrap to read.  Not a bound: a bigger bundle is written as bwrap reads
 * it (within HANDOFF_FD_TIMEOUT_MS). */
#define RUN_CA_PIPE_BYTES (1024 * 1024)

/* Refusal summary: distinct destinations tracked, and listed (the rest is
 * "and K more"); the longest audit line read (longer ones are skipped) and
 * the most bytes of log read (a huge shared log must not stall the end of
 * a run). */
#define RUN_SUMMARY_TRACK 256
#define RUN_SUMMARY_SHOW 20
#define RUN_SUMMARY_LINE_MAX (64 * 1024)
#define RUN_SUMMARY_READ_MAX (64LL * 1024 * 1024)

/* sandbox/dnsbind.c */
/* How long the helper that binds the sandbox's DNS sockets from outside
 * may take (a fork and a few syscalls; below HANDOFF_ACK_TIMEOUT_MS, so
 * the bridge is still waiting when we refuse it). */
#define RUN_DNSBIND_TIMEOUT_MS 3000

/* sandbox/remote.c */
/* The COMMAND sent with session.open, at most (the daemon keeps 256; the
 * rest of the request must fit CONTROL_MAX_LINE). */
#define REMOTE_MAX_COMMAND 1024

/* proxy/metrics.c ([metrics] listen, design.md §9 "Metrics") */
/* Env names with series of their own; env names beyond these (config
 * after config) are counted under env="_other". */
#define METRICS_MAX_ENVS 64
/* Scrape connections open at once; more are closed at accept. */
#define METRICS_MAX_CONNS 16
/* A scrape's request head, at most; longer → 431 and close. */
#define METRICS_MAX_HEAD 4096
/* Time to send the whole request head; then the conn is closed. */
#define METRICS_HEAD_TIMEOUT_MS 5000
/* Time to take the whole response; then the conn is cut. */
#define METRICS_WRITE_TIMEOUT_MS 10000
/* The largest /metrics body (every series is bounded; this is the cap). */
#define METRICS_MAX_BODY (4 * 1024 * 1024)
/* [metrics] listen addresses, at most. */
#define METRICS_MAX_LISTEN 8
/* proxy/auditsum.c: `portcullis audit summary|suggest`.  Longest audit line
 * read (longer ones are skipped with FILE:LINE; a record is at most
 * AUDIT_MAX_RECORD), distinct groups counted (the rest go to one "(other)"
 * group, said on stderr), distinct refused targets tracked by suggest, the
 * number of distinct hosts under one registrable domain from which suggest
 * widens to a wildcard, malformed lines named on stderr before it only
 * counts them, and the read buffer. */
#define AUDITSUM_MAX_LINE (AUDIT_MAX_RECORD + 1024)
#define AUDITSUM_MAX_GROUPS 100000
#define AUDITSUM_MAX_KEY 512
#define AUDITSUM_MAX_TARGETS 10000
#define AUDITSUM_WIDEN_HOSTS 3
#define AUDITSUM_MAX_COMPLAINTS 100
#define AUDITSUM_READ_BUF (256 * 1024)
/* proxy/auditscan.c: nesting deeper than this in a skipped value is refused. */
#define AUDITSCAN_MAX_DEPTH 32
/* The longest line suggest prints: inih's INI_MAX_LINE (200) less the
 * newline and NUL; the loader refuses longer ones. */
#define AUDITSUM_OUT_LINE 198
static_assert(AUDITSUM_MAX_LINE <= AUDITSUM_READ_BUF, "a whole line fits the read buffer");
static_assert(AUDITSUM_MAX_KEY >= AUDIT_MAX_TARGET, "a host fits a group key");

/* proxy/dnsserve.c, proxy/dnsquery.c: the sandbox's resolver (DESIGN.md
 * §12).  A query and an answer, at most (a stub's query is < 300 bytes;
 * our answers fit 512, the size every client takes over UDP without
 * EDNS, also over TCP). */
#define DNS_SERVE_MSG_MAX 512
/* Address records in one answer (the rest are left out, as resolvers do). */
#define DNS_SERVE_MAX_ANSWERS 8
/* TTL of our answers, seconds: short, so a tool looks again rather than
 * keep an address the proxy would no longer pick. */
#define DNS_SERVE_TTL 5
/* Queries answered per session per second (UDP and TCP together); the
 * rest are dropped, counted, and summed up in one `dns_dropped` record
 * per second that had any. */
#define DNS_SERVE_QPS 100
/* Lookups waiting for the resolver per session; more are dropped (and
 * counted) until some finish. */
#define DNS_SERVE_INFLIGHT 16
/* DNS-over-TCP connections open at once per session; more are closed at
 * accept. */
#define DNS_SERVE_TCP_CONNS 8
/* A DNS-over-TCP connection with nothing to do for this long is closed,
 * and so is one whose query does not arrive whole within it. */
#define DNS_SERVE_TCP_IDLE_MS 5000

/* ==== fixed: TLS interception (proxy/mitm.c) =========================== */

/* Ciphertext read from one side per read call, before it is decrypted
 * (about four full TLS records: fewer syscalls on bulk transfers); the
 * memory BIO holding it is read dry before that side is read again, so
 * one side's undecrypted input is at most this much. */
#define MITM_RAW_BUF (65536 + 512)
/* Handshake and alert flights written outside the data path (not counted
 * against a direction's one write): more queued than this and the peer
 * is not reading its handshake; the conn ends. */
#define MITM_MAX_CTL_WRITES 8

#endif
