/*
 * test_dns: proxy/dns.c against tests/integration/dnsserver.py on loopback,
 * through a real libuv loop.  Runs with cwd tests/ (ctest sets it).
 *
 * The server runs as a child process; its mode is switched between cases
 * with "mode M" lines on its stdin, and "queries" lists what it received.
 * Every case builds its own loop and ends with dns_close() and
 * uv_loop_close(loop) == 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "cfg.h"
#include "dns.h"
#include "pclimits.h"
#include "check.h"

/* Per-lookup timeout used by most cases: short so the suite stays fast. */
#define T_TIMEOUT_MS 600
/* Slack for loop latency and a loaded machine (valgrind) over the bound. */
#define T_SLACK_MS 700
/* Hard bound for any single uv_run wait in this file. */
#define T_MAX_WAIT_MS 10000
/* Concurrent lookups answered with garbage. */
#define T_GARBAGE 20
/* Concurrent lookups in the "many" case. */
#define T_CONCURRENT 200

static pid_t srv_pid = -1;
static int srv_in = -1;		/* its stdin */
static int srv_out_fd = -1;	/* its stdout */
static int srv_port;

/* ---- the DNS server child ------------------------------------------------ */

/* Reads one line from the server's stdout into buf (bounded wait). */
static bool srv_line(char *buf, size_t sz)
{
	static char in[16384];
	static size_t have;
	char *nl;
	size_t n;
	ssize_t got;

	while ((nl = memchr(in, '\n', have)) == NULL) {
		struct pollfd p = { .fd = srv_out_fd, .events = POLLIN };

		if (have == sizeof(in) || poll(&p, 1, T_MAX_WAIT_MS) <= 0)
			return false;
		got = read(srv_out_fd, in + have, sizeof(in) - have);
		if (got <= 0)
			return false;
		have += (size_t)got;
	}
	n = (size_t)(nl - in);
	snprintf(buf, sz, "%.*s", (int)n, in);
	memmove(in, nl + 1, have - n - 1);
	have -= n + 1;
	return true;
}

/* Sends one command line; returns the server's reply line in buf. */
static bool srv_cmd(const char *cmd, char *buf, size_t sz)
{
	size_t len = strlen(cmd);

	if (write(srv_in, cmd, len) != (ssize_t)len || write(srv_in, "\n", 1) != 1)
		return false;
	return srv_line(buf, sz);
}

static void srv_mode(const char *mode)
{
	char cmd[64], buf[256];

	snprintf(cmd, sizeof(cmd), "mode %s", mode);
	CHECK(srv_cmd(cmd, buf, sizeof(buf)) && strcmp(buf, "OK") == 0);
}

static bool srv_start(void)
{
	int in[2], out[2];
	char line[128];

	if (pipe(in) < 0 || pipe(out) < 0)
		return false;
	srv_pid = fork();
	if (srv_pid < 0)
		return false;
	if (srv_pid == 0) {
		/* Don't outlive a test that crashed or hit its alarm. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		execlp("python3", "python3", "integration/dnsserver.py",
		    "--host", "127.0.0.1", "--port", "0",
		    "--record", "v4.test=127.0.0.2",
		    "--record", "v6.test=::2",
		    "--record", "both.test=::3,127.0.0.3,127.0.0.4",
		    "--record", "empty.test=",
		    "--record", "big.test=127.0.1.1,127.0.1.2,127.0.1.3,"
		    "127.0.1.4,127.0.1.5,127.0.1.6,127.0.1.7,127.0.1.8,"
		    "127.0.1.9,127.0.1.10,127.0.1.11,127.0.1.12,127.0.1.13,"
		    "127.0.1.14,127.0.1.15,127.0.1.16,127.0.1.17,127.0.1.18,"
		    "127.0.1.19,127.0.1.20,127.0.1.21,127.0.1.22,127.0.1.23,"
		    "127.0.1.24,127.0.1.25,127.0.1.26,127.0.1.27,127.0.1.28,"
		    "127.0.1.29,127.0.1.30,127.0.1.31,127.0.1.32,127.0.1.33,"
		    "127.0.1.34,127.0.1.35,127.0.1.36,127.0.1.37,127.0.1.38,"
		    "::1:1,::1:2",
		    "--cname", "alias.test=mid.test",
		    "--cname", "mid.test=both.test",
		    "--cname", "dangling.test=nowhere.test",
		    (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	srv_in = in[1];
	srv_out_fd = out[0];
	line[0] = '\0';
	if (!srv_line(line, sizeof(line)) ||
	    sscanf(line, "READY %d", &srv_port) != 1) {
		fprintf(stderr, "dnsserver.py did not start (got \"%s\")\n", line);
		return false;
	}
	return true;
}

static void srv_stop(void)
{
	int st;

	if (srv_pid > 0) {
		kill(srv_pid, SIGTERM);
		waitpid(srv_pid, &st, 0);
	}
	if (srv_out_fd >= 0)
		close(srv_out_fd);
	if (srv_in >= 0)
		close(srv_in);
}

/* ---- config and loop helpers --------------------------------------------- */

static struct hostport t_server;
static struct netaddr t_static_addrs[2];
static struct dns_static t_static = { "static.test", t_static_addrs, 2 };

static void addr(struct netaddr *a, const char *s)
{
	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, s, a->bytes) == 1)
		a->family = AF_INET;
	else if (inet_pton(AF_INET6, s, a->bytes) == 1)
		a->family = AF_INET6;
}

static bool addr_is(const struct netaddr *a, const char *s)
{
	struct netaddr b;

	addr(&b, s);
	return a->family == b.family &&
	    memcmp(a->bytes, b.bytes, a->family == AF_INET ? 4 : 16) == 0;
}

static void cfg_init(struct cfg *c, unsigned timeout_ms)
{
	memset(c, 0, sizeof(*c));
	addr(&t_server.addr, "127.0.0.1");
	t_server.port = (uint16_t)srv_port;
	c->dns.servers = &t_server;
	c->dns.nservers = 1;
	c->dns.timeout_ms = timeout_ms;
	/* IPv6 listed first: the resolver must still answer IPv4 first. */
	addr(&t_static_addrs[0], "::9");
	addr(&t_static_addrs[1], "127.0.0.9");
	c->dns.statics = &t_static;
	c->dns.nstatics = 1;
}

struct result {
	int calls;
	int status;
	size_t naddrs;
	struct netaddr addrs[DNS_MAX_ADDRS];
	uint64_t done_ms;
	bool *inside;		/* set while dns_resolve() runs */
	bool called_inside;
};

static void on_result(void *arg, int status, const struct netaddr *addrs,
    size_t naddrs)
{
	struct result *r = arg;

	r->calls++;
	r->status = status;
	r->naddrs = naddrs;
	if (naddrs > DNS_MAX_ADDRS)
		naddrs = DNS_MAX_ADDRS;
	if (naddrs)
		memcpy(r->addrs, addrs, naddrs * sizeof(*addrs));
	r->done_ms = uv_hrtime() / 1000000;
	if (r->inside && *r->inside)
		r->called_inside = true;
}

static bool guard_fired;

static void on_guard(uv_timer_t *t)
{
	guard_fired = true;
}

struct waiter {
	int *calls;
	int want;
};

/* Before the loop would block: stop it once the wait is over (callbacks
 * from the timer phase would otherwise leave UV_RUN_ONCE waiting in poll
 * for the next event). */
static void on_prepare(uv_prepare_t *p)
{
	struct waiter *w = p->data;

	if (*w->calls >= w->want || guard_fired)
		uv_stop(p->loop);
}

/* Runs loop until *calls >= want or max_ms passed. */
static void run_until(uv_loop_t *loop, int *calls, int want, unsigned max_ms)
{
	struct waiter w = { calls, want };
	uv_timer_t guard;
	uv_prepare_t prep;

	guard_fired = false;
	uv_timer_init(loop, &guard);
	uv_timer_start(&guard, on_guard, max_ms, 0);
	uv_prepare_init(loop, &prep);
	prep.data = &w;
	uv_prepare_start(&prep, on_prepare);
	while (*calls < want && !guard_fired)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_close((uv_handle_t *)&prep, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
}

/* Runs loop until nothing is active (bounded by a guard timer). */
static void run_idle(uv_loop_t *loop, unsigned max_ms)
{
	uv_timer_t guard;

	guard_fired = false;
	uv_timer_init(loop, &guard);
	uv_timer_start(&guard, on_guard, max_ms, 0);
	uv_unref((uv_handle_t *)&guard);
	while (!guard_fired && uv_run(loop, UV_RUN_ONCE) != 0)
		;
	CHECK(!guard_fired);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
}

static struct dns *setup(uv_loop_t *loop, struct cfg *c, unsigned timeout_ms)
{
	struct dns *d = NULL;

	cfg_init(c, timeout_ms);
	CHECK(uv_loop_init(loop) == 0);
	CHECK(dns_new(loop, c, &d) == 0);
	return d;
}

static void teardown(uv_loop_t *loop, struct dns *d)
{
	dns_close(d);
	run_idle(loop, T_MAX_WAIT_MS);
	CHECK(uv_loop_close(loop) == 0);
}

/* Resolves one name and waits for the answer. */
static void resolve1(struct dns *d, uv_loop_t *loop, const char *name,
    struct result *res)
{
	bool inside = true;
	struct dns_req *r;

	memset(res, 0, sizeof(*res));
	res->inside = &inside;
	r = dns_resolve(d, name, on_result, res);
	inside = false;
	CHECK(r != NULL);
	run_until(loop, &res->calls, 1, T_MAX_WAIT_MS);
	CHECK(res->calls == 1);
	CHECK(!res->called_inside);
	res->inside = NULL;
}

/* ---- cases ---------------------------------------------------------------- */

static void test_answers(void)
{
	uv_loop_t loop;
	struct cfg c;
	struct dns *d = setup(&loop, &c, T_TIMEOUT_MS);
	struct result res;
	size_t i;

	srv_mode("normal");

	resolve1(d, &loop, "v4.test", &res);
	CHECK(res.status == 0);
	CHECK(res.naddrs == 1 && addr_is(&res.addrs[0], "127.0.0.2"));

	resolve1(d, &loop, "v6.test", &res);
	CHECK(res.status == 0);
	CHECK(res.naddrs == 1 && addr_is(&res.addrs[0], "::2"));

	/* A and AAAA, IPv4 first although the server lists ::3 first. */
	resolve1(d, &loop, "both.test", &res);
	CHECK(res.status == 0);
	CHECK(res.naddrs == 3);
	CHECK(addr_is(&res.addrs[0], "127.0.0.3"));
	CHECK(addr_is(&res.addrs[1], "127.0.0.4"));
	CHECK(addr_is(&res.addrs[2], "::3"));

	/* alias.test -> mid.test -> both.test */
	resolve1(d, &loop, "alias.test", &res);
	CHECK(res.status == 0);
	CHECK(res.naddrs == 3);
	CHECK(addr_is(&res.addrs[0], "127.0.0.3"));
	CHECK(addr_is(&res.addrs[2], "::3"));

	resolve1(d, &loop, "nope.test", &res);
	CHECK(res.status == -ENOENT && res.naddrs == 0);

	resolve1(d, &loop, "dangling.test", &res);
	CHECK(res.status == -ENOENT && res.naddrs == 0);

	/* The name exists but has no address records. */
	resolve1(d, &loop, "empty.test", &res);
	CHECK(res.status == -ENOENT && res.naddrs == 0);

	/* 40 addresses: too big for UDP, so c-ares retries over TCP; we keep
	 * DNS_MAX_ADDRS, IPv4 first. */
	resolve1(d, &loop, "big.test", &res);
	CHECK(res.status == 0);
	CHECK(res.naddrs == DNS_MAX_ADDRS);
	for (i = 0; i < res.naddrs && i < DNS_MAX_ADDRS; i++)
		CHECK(res.addrs[i].family == AF_INET);
	CHECK(addr_is(&res.addrs[0], "127.0.1.1"));

	teardown(&loop, d);
}

/* First /etc/hosts name that is not localhost and that the test server
 * does not know (lower-case letters, digits, '-' and '.'), if any. */
static bool hosts_name(char *out, size_t sz)
{
	FILE *f = fopen("/etc/hosts", "r");
	char line[512], *tok, *save;
	int lines = 0;

	if (!f)
		return false;
	while (lines++ < 1000 && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "#")] = '\0';
		tok = strtok_r(line, " \t\n", &save);	/* the address */
		while (tok && (tok = strtok_r(NULL, " \t\n", &save)) != NULL) {
			if (strncmp(tok, "localhost", 9) == 0 ||
			    strlen(tok) >= sz || strspn(tok,
			    "abcdefghijklmnopqrstuvwxyz0123456789-.") != strlen(tok) ||
			    strstr(tok, ".test"))
				continue;
			snprintf(out, sz, "%s", tok);
			fclose(f);
			return true;
		}
	}
	fclose(f);
	return false;
}

static void test_static(void)
{
	uv_loop_t loop;
	struct cfg c;
	struct dns *d = setup(&loop, &c, T_TIMEOUT_MS);
	struct result res;
	char buf[8192];
	char big[NETADDR_MAX_HOST + 2];
	char hname[NETADDR_MAX_HOST + 1], want[NETADDR_MAX_HOST + 8];
	size_t i;

	srv_mode("normal");

	/* The server does not know static.test: only [dns] static answers. */
	resolve1(d, &loop, "static.test", &res);
	CHECK(res.status == 0);
	CHECK(res.naddrs == 2);
	CHECK(addr_is(&res.addrs[0], "127.0.0.9"));
	CHECK(addr_is(&res.addrs[1], "::9"));

	CHECK(srv_cmd("queries", buf, sizeof(buf)));
	CHECK(strncmp(buf, "QUERIES", 7) == 0);
	CHECK(strstr(buf, "static.test") == NULL);
	/* ...while a real lookup does reach it (the check above is live). */
	resolve1(d, &loop, "v4.test", &res);
	CHECK(srv_cmd("queries", buf, sizeof(buf)));
	CHECK(strstr(buf, "v4.test/A") != NULL);

	/* A name /etc/hosts knows (other than localhost, which c-ares
	 * special-cases): the resolver must ask DNS only. */
	if (hosts_name(hname, sizeof(hname))) {
		resolve1(d, &loop, hname, &res);
		CHECK(res.status == -ENOENT);
		snprintf(want, sizeof(want), " %s/A", hname);
		CHECK(srv_cmd("queries", buf, sizeof(buf)));
		CHECK(strstr(buf, want) != NULL);
	} else {
		fprintf(stderr, "note: no usable name in /etc/hosts; skipped\n");
	}

	/* Longer than any DNS name: answered without a query. */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (i = 63; i < sizeof(big) - 1; i += 64)
		big[i] = '.';
	resolve1(d, &loop, big, &res);
	CHECK(res.status == -ENOENT);

	teardown(&loop, d);
}

struct gather {
	int *counter;
	int calls;
	int status;
};

static void on_gather(void *arg, int status, const struct netaddr *addrs,
    size_t naddrs)
{
	struct gather *g = arg;

	g->calls++;
	g->status = status;
	(*g->counter)++;
}

static void test_failures(void)
{
	uv_loop_t loop;
	struct cfg c;
	struct dns *d = setup(&loop, &c, T_TIMEOUT_MS);
	struct result res;
	struct gather gres[T_GARBAGE];
	int i, ngarbage;
	uint64_t t0;

	srv_mode("silent");
	t0 = uv_hrtime() / 1000000;
	resolve1(d, &loop, "v4.test", &res);
	CHECK(res.status == -ETIMEDOUT);
	CHECK(res.done_ms - t0 >= T_TIMEOUT_MS - 50);
	CHECK(res.done_ms - t0 <= T_TIMEOUT_MS + T_SLACK_MS);

	srv_mode("garbage");
	t0 = uv_hrtime() / 1000000;
	resolve1(d, &loop, "v4.test", &res);
	CHECK(res.status == -EIO || res.status == -ETIMEDOUT);
	CHECK(res.naddrs == 0);
	CHECK(res.done_ms - t0 <= T_TIMEOUT_MS + T_SLACK_MS);

	/* Many garbage answers at once: every lookup ends, with an error,
	 * within the bound. */
	t0 = uv_hrtime() / 1000000;
	memset(gres, 0, sizeof(gres));
	ngarbage = 0;
	for (i = 0; i < T_GARBAGE; i++) {
		gres[i].counter = &ngarbage;
		CHECK(dns_resolve(d, i % 2 ? "both.test" : "v6.test", on_gather,
		    &gres[i]) != NULL);
	}
	run_until(&loop, &ngarbage, T_GARBAGE, T_MAX_WAIT_MS);
	CHECK(ngarbage == T_GARBAGE);
	for (i = 0; i < T_GARBAGE; i++)
		CHECK(gres[i].calls == 1 && gres[i].status != 0);
	CHECK(uv_hrtime() / 1000000 - t0 <= T_TIMEOUT_MS + T_SLACK_MS);

	srv_mode("servfail");
	resolve1(d, &loop, "v4.test", &res);
	CHECK(res.status == -EIO);

	srv_mode("nxdomain");
	resolve1(d, &loop, "v4.test", &res);
	CHECK(res.status == -ENOENT);

	srv_mode("normal");
	teardown(&loop, d);
}

/* With the timeout raised, a silent server: the resolver still ends within
 * the configured timeout (its documented bound), not c-ares' retry sum. */
static void test_bound_two_servers(void)
{
	uv_loop_t loop;
	struct cfg c;
	struct hostport two[2];
	struct dns *d;
	struct result res;
	uint64_t t0;

	cfg_init(&c, T_TIMEOUT_MS);
	two[0] = t_server;
	two[1] = t_server;
	c.dns.servers = two;
	c.dns.nservers = 2;
	CHECK(uv_loop_init(&loop) == 0);
	CHECK(dns_new(&loop, &c, &d) == 0);

	srv_mode("silent");
	t0 = uv_hrtime() / 1000000;
	resolve1(d, &loop, "v6.test", &res);
	CHECK(res.status == -ETIMEDOUT);
	CHECK(res.done_ms - t0 <= T_TIMEOUT_MS + T_SLACK_MS);
	srv_mode("normal");
	teardown(&loop, d);
}

static void test_cancel(void)
{
	uv_loop_t loop;
	struct cfg c;
	struct dns *d = setup(&loop, &c, T_TIMEOUT_MS);
	struct result a, b, s, live;
	struct dns_req *ra, *rb, *rs;

	srv_mode("normal");
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&s, 0, sizeof(s));
	memset(&live, 0, sizeof(live));
	ra = dns_resolve(d, "v4.test", on_result, &a);
	rb = dns_resolve(d, "both.test", on_result, &b);
	rs = dns_resolve(d, "static.test", on_result, &s);
	CHECK(ra && rb && rs);
	CHECK(dns_resolve(d, "v6.test", on_result, &live) != NULL);
	dns_cancel(ra);
	dns_cancel(rs);
	dns_cancel(rs);		/* repeated before the loop runs: harmless */
	dns_cancel(rb);
	/* Run until every query has ended (the answers do arrive). */
	run_idle(&loop, T_MAX_WAIT_MS);
	CHECK(a.calls == 0 && b.calls == 0 && s.calls == 0);
	CHECK(live.calls == 1 && live.status == 0);

	/* Cancel while the server is silent and c-ares is still waiting. */
	srv_mode("silent");
	memset(&a, 0, sizeof(a));
	ra = dns_resolve(d, "v4.test", on_result, &a);
	CHECK(ra != NULL);
	uv_run(&loop, UV_RUN_NOWAIT);
	dns_cancel(ra);
	run_idle(&loop, T_MAX_WAIT_MS);
	CHECK(a.calls == 0);
	srv_mode("normal");

	/* dns_close with queries in flight: no callback, nothing left. */
	srv_mode("silent");
	memset(&a, 0, sizeof(a));
	memset(&s, 0, sizeof(s));
	CHECK(dns_resolve(d, "v4.test", on_result, &a) != NULL);
	uv_run(&loop, UV_RUN_NOWAIT);	/* the query is sent */
	CHECK(dns_resolve(d, "static.test", on_result, &s) != NULL);
	dns_close(d);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(a.calls == 0 && s.calls == 0);
	CHECK(uv_loop_close(&loop) == 0);
	srv_mode("normal");
}

/*
 * DNS_MAX_DETACHED: queries cancelled while the server is silent go on
 * detached; at the cap no new query starts (static answers still do), and
 * once c-ares has given up on them, queries start again.
 */
static void test_detached_cap(void)
{
	uv_loop_t loop;
	struct cfg c;
	struct dns *d = setup(&loop, &c, T_TIMEOUT_MS);
	struct result gone, a, s;
	struct dns_req *r;
	unsigned i, made = 0;

	srv_mode("silent");
	memset(&gone, 0, sizeof(gone));
	for (i = 0; i < DNS_MAX_DETACHED - 1; i++) {
		r = dns_resolve(d, i % 2 ? "v4.test" : "both.test", on_result,
		    &gone);
		if (r != NULL)
			made++;
		dns_cancel(r);
	}
	CHECK(made == DNS_MAX_DETACHED - 1);
	/* At the limit minus one: not busy, one more query starts. */
	CHECK(!dns_busy(d));
	r = dns_resolve(d, "v6.test", on_result, &gone);
	CHECK(r != NULL);
	dns_cancel(r);
	/* At the limit: busy; a query is refused, a static answer is not. */
	CHECK(dns_busy(d));
	memset(&a, 0, sizeof(a));
	memset(&s, 0, sizeof(s));
	CHECK(dns_resolve(d, "v4.test", on_result, &a) == NULL);
	CHECK(dns_resolve(d, "static.test", on_result, &s) != NULL);
	run_until(&loop, &s.calls, 1, T_MAX_WAIT_MS);
	CHECK(s.calls == 1 && s.status == 0);
	/* c-ares gives up on the detached queries within the timeout. */
	run_idle(&loop, T_MAX_WAIT_MS);
	CHECK(gone.calls == 0 && a.calls == 0);
	CHECK(!dns_busy(d));
	srv_mode("normal");
	resolve1(d, &loop, "v4.test", &a);
	CHECK(a.status == 0);
	teardown(&loop, d);
}

struct many {
	int calls;
	int bad;
};

struct many_req {
	struct many *m;
	int expect;		/* status */
	int calls;
};

static void on_many(void *arg, int status, const struct netaddr *addrs,
    size_t naddrs)
{
	struct many_req *r = arg;

	r->calls++;
	r->m->calls++;
	if (status != r->expect || (status == 0) != (naddrs > 0))
		r->m->bad++;
}

static void test_many(void)
{
	static const char *names[] = { "v4.test", "both.test", "nope.test",
	    "static.test", "alias.test" };
	static const int expect[] = { 0, 0, -ENOENT, 0, 0 };
	uv_loop_t loop;
	struct cfg c;
	struct dns *d = setup(&loop, &c, 3000);
	struct many m = { 0, 0 };
	struct many_req *rs = calloc(T_CONCURRENT, sizeof(*rs));
	int i, once = 0;

	srv_mode("normal");
	for (i = 0; i < T_CONCURRENT; i++) {
		rs[i].m = &m;
		rs[i].expect = expect[i % 5];
		CHECK(dns_resolve(d, names[i % 5], on_many, &rs[i]) != NULL);
	}
	run_until(&loop, &m.calls, T_CONCURRENT, T_MAX_WAIT_MS);
	CHECK(m.calls == T_CONCURRENT);
	CHECK(m.bad == 0);
	for (i = 0; i < T_CONCURRENT; i++)
		once += rs[i].calls == 1;
	CHECK(once == T_CONCURRENT);
	teardown(&loop, d);
	free(rs);
}

/* Hot reload: in-flight queries finish; new statics apply at once. */
static void test_configure(void)
{
	uv_loop_t loop;
	struct cfg c, c2;
	struct dns *d = setup(&loop, &c, T_TIMEOUT_MS);
	struct netaddr na;
	struct dns_static st2 = { "new.test", &na, 1 };
	struct result before, after, old_static;
	int i;

	srv_mode("normal");
	memset(&before, 0, sizeof(before));
	CHECK(dns_resolve(d, "both.test", on_result, &before) != NULL);

	cfg_init(&c2, T_TIMEOUT_MS);
	addr(&na, "127.0.0.10");
	c2.dns.statics = &st2;
	c2.dns.nstatics = 1;
	CHECK(dns_configure(d, &c2) == 0);

	resolve1(d, &loop, "new.test", &after);
	CHECK(after.status == 0 && after.naddrs == 1 &&
	    addr_is(&after.addrs[0], "127.0.0.10"));
	/* static.test is gone from the new config; the server doesn't know it. */
	resolve1(d, &loop, "static.test", &old_static);
	CHECK(old_static.status == -ENOENT);
	run_until(&loop, &before.calls, 1, T_MAX_WAIT_MS);
	CHECK(before.calls == 1 && before.status == 0 && before.naddrs == 3);

	/* Several reloads in a row, each with a query in flight. */
	for (i = 0; i < 5; i++) {
		memset(&before, 0, sizeof(before));
		CHECK(dns_resolve(d, "v4.test", on_result, &before) != NULL);
		CHECK(dns_configure(d, &c2) == 0);
		run_until(&loop, &before.calls, 1, T_MAX_WAIT_MS);
		CHECK(before.calls == 1 && before.status == 0);
	}
	teardown(&loop, d);
}

/* Callbacks that re-enter the resolver. */
struct reenter {
	struct dns *d;
	int calls;
	struct result inner;
	bool close;
};

static void on_reenter(void *arg, int status, const struct netaddr *addrs,
    size_t naddrs)
{
	struct reenter *re = arg;

	re->calls++;
	if (re->close) {
		dns_close(re->d);
		return;
	}
	CHECK(dns_resolve(re->d, "static.test", on_result, &re->inner) != NULL);
	CHECK(dns_resolve(re->d, "v6.test", on_result, &re->inner) != NULL);
}

static void test_reenter(void)
{
	uv_loop_t loop;
	struct cfg c;
	struct dns *d = setup(&loop, &c, T_TIMEOUT_MS);
	struct reenter re;

	srv_mode("normal");
	memset(&re, 0, sizeof(re));
	re.d = d;
	CHECK(dns_resolve(d, "v4.test", on_reenter, &re) != NULL);
	run_until(&loop, &re.inner.calls, 2, T_MAX_WAIT_MS);
	CHECK(re.calls == 1 && re.inner.calls == 2 && re.inner.status == 0);

	/* dns_close from inside a c-ares answer callback. */
	memset(&re, 0, sizeof(re));
	re.d = d;
	re.close = true;
	CHECK(dns_resolve(d, "both.test", on_reenter, &re) != NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(re.calls == 1);
	CHECK(uv_loop_close(&loop) == 0);
}

#define RUN(fn) do { \
	uint64_t t0_ = uv_hrtime(); \
	fn(); \
	fprintf(stderr, "%s: %llu ms\n", #fn, \
	    (unsigned long long)((uv_hrtime() - t0_) / 1000000)); \
} while (0)

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	/* Hard stop should anything wait forever. */
	alarm(120);
	if (!srv_start()) {
		srv_stop();
		CHECK_FAIL();
		return check_done();
	}
	RUN(test_answers);
	RUN(test_static);
	RUN(test_failures);
	RUN(test_bound_two_servers);
	RUN(test_cancel);
	RUN(test_many);
	RUN(test_detached_cap);
	RUN(test_configure);
	RUN(test_reenter);
	srv_stop();
	return check_done();
}
