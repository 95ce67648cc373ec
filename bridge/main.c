/*
 * portcullis-bridge: runs first inside the sandbox (DESIGN.md §1, §7).
 *
 *   portcullis-bridge --handoff-fd N [--allow-unix-sockets]
 *       [--check-read-only PATH]... -- COMMAND [ARG...]
 *   portcullis-bridge connect HOST PORT
 *
 * Set-up mode, in order:
 *   0. check that each --check-read-only PATH is on a read-only mount (or
 *      absent): the /proc entries `portcullis run` left to bwrap's own
 *      read-only binds;
 *   1. bring `lo` up if it is down;
 *   2. check the namespace: `lo` is the only interface and no route leaves
 *      through anything else (a sandbox that could bypass the proxy must
 *      not start);
 *   3. bind and listen on 127.0.0.1:3128, and bind UDP and listen on TCP
 *      127.0.0.1:53 for the sandbox's resolver (DESIGN.md §12; any of them
 *      taken: refuse, see lib/pclib.h; port 53 not permitted, an
 *      unprivileged run: the launcher binds it, see main), then drop every
 *      capability (bwrap gave us only CAP_NET_BIND_SERVICE for port 53 and
 *      CAP_SETPCAP to drop it from the bounding set) and check that none
 *      is left;
 *   4. send the three fds over the handoff socket (SCM_RIGHTS) and wait,
 *      bounded, for the proxy's ack carrying the session id;
 *   5. close our copies: from now on the proxy holds the only ones, so if
 *      the proxy dies connections are refused and queries go unanswered,
 *      never queued;
 *   6. check the namespace again, set the proxy environment, install the
 *      seccomp filter (with --filtered: check that bwrap's is in force),
 *      close every fd but 0-2, exec COMMAND.
 * Any failure: one line "portcullis-bridge: no proxy route: <why>" and exit
 * 125; COMMAND never ran.  COMMAND itself not found: 127, not executable:
 * 126 (a shell's statuses), with "portcullis run: COMMAND: ..." on stderr.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <linux/capability.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bridge.h"
#include "pclib.h"

#if defined(__SANITIZE_ADDRESS__)
#define BRIDGE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BRIDGE_ASAN 1
#endif
#endif

#ifdef BRIDGE_ASAN
/*
 * Sanitizer builds only.  The bridge runs under the sandbox's seccomp
 * filter from its first instruction (bwrap installs it, --add-seccomp-fd)
 * and the filter refuses ptrace, which LeakSanitizer needs at exit: it
 * would print an error instead of a leak report.  ASan and UBSan still run.
 */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
	return "detect_leaks=0";
}
#endif

/* Longest GIT_SSH_COMMAND we compose (ours appended to the caller's). */
#define BRIDGE_GIT_SSH_MAX 65536

/* Longest /proc/net/{route,ipv6_route} line we accept (real ones: < 160). */
#define BRIDGE_ROUTE_LINE_MAX 512

static const char usage[] =
"usage: portcullis-bridge " HANDOFF_FD_OPTION " N [--allow-unix-sockets]\n"
"           [" BRIDGE_FILTERED_OPTION "] [" BRIDGE_RO_OPTION " PATH]...\n"
"           -- COMMAND [ARG...]\n"
"       portcullis-bridge connect HOST PORT\n"
"\n"
"The in-sandbox helper of `portcullis run`; not meant to be started by hand.\n"
"connect: a CONNECT client on stdin/stdout through $HTTP_PROXY, for ssh's\n"
"ProxyCommand (see GIT_SSH_COMMAND inside the sandbox).\n";

/* Every set-up failure: "portcullis-bridge: no proxy route: <why>", exit
 * HANDOFF_EXIT (fmt must be a string literal). */
#define refuse(...) pc_die("no proxy route: " __VA_ARGS__)

/* Brings lo up if it is down.  bwrap --unshare-net already did; a netns
 * made by `ip netns add` has it down. */
static void
lo_up(void)
{
	struct ifreq ifr;
	int fd, saved;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		refuse("socket: %s", strerror(errno));
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) {
		saved = errno;
		close(fd);
		refuse("lo: %s", strerror(saved));
	}
	if (!(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) {
			saved = errno;
			close(fd);
			refuse("bring lo up: %s", strerror(saved));
		}
	}
	close(fd);
}

/*
 * Refuses unless `lo` is the only interface and neither routing table has
 * an entry through any other device.  /proc/net/route lists the main IPv4
 * table (loopback routes live in the local table and are not shown);
 * /proc/net/ipv6_route lists all IPv6 tables, whose last field is the
 * device.  A missing ipv6_route means IPv6 is disabled: nothing to check.
 */
static void
check_namespace(void)
{
	struct if_nameindex *ifs, *p;
	static const char *const files[] = { "/proc/net/route",
	    "/proc/net/ipv6_route" };
	char line[BRIDGE_ROUTE_LINE_MAX];
	size_t i;

	ifs = if_nameindex();
	if (ifs == NULL)
		refuse("list interfaces: %s", strerror(errno));
	for (p = ifs; p->if_index != 0; p++) {
		if (strcmp(p->if_name, "lo") != 0) {
			char name[IF_NAMESIZE + 1];

			snprintf(name, sizeof(name), "%s", p->if_name);
			if_freenameindex(ifs);
			refuse("interface %s in the sandbox namespace "
			    "(only lo is allowed)", name);
		}
	}
	if_freenameindex(ifs);

	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		FILE *f = fopen(files[i], "re");
		bool header = (i == 0);

		if (f == NULL) {
			if (errno == ENOENT && i == 1)
				continue;
			refuse("%s: %s", files[i], strerror(errno));
		}
		while (fgets(line, sizeof(line), f) != NULL) {
			char dev[IF_NAMESIZE + 1] = "";
			char *tok, *save = NULL, *last = NULL;

			if (strchr(line, '\n') == NULL) {
				fclose(f);
				refuse("%s: overlong line", files[i]);
			}
			if (header) {
				header = false;
				continue;
			}
			if (i == 0) {
				tok = strtok_r(line, " \t\n", &save);
				last = tok;
			} else {
				for (tok = strtok_r(line, " \t\n", &save);
				    tok != NULL;
				    tok = strtok_r(NULL, " \t\n", &save))
					last = tok;
			}
			if (last == NULL)
				continue;
			snprintf(dev, sizeof(dev), "%s", last);
			if (strcmp(dev, "lo") != 0) {
				fclose(f);
				refuse("%s has a route through %s", files[i], dev);
			}
		}
		fclose(f);
	}
}

/* Returns a socket of type (SOCK_STREAM: listening) bound to
 * 127.0.0.1:port, or refuses; with eacces_ok, -1 when the bind fails with
 * EACCES (see main). */
static int
bind_loopback(int type, int port, bool eacces_ok)
{
	struct sockaddr_in sin;
	int fd, one = 1, saved;

	fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		refuse("socket: %s", strerror(errno));
	/* SO_REUSEADDR only lets us reuse TIME_WAIT; a live listener on the
	 * port still fails the bind (and a UDP socket is never shared:
	 * SO_REUSEADDR is not set on it). */
	if (type == SOCK_STREAM)
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
		    sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		saved = errno;
		close(fd);
		if (saved == EACCES && eacces_ok)
			return -1;
		refuse("bind %s %s:%d: %s", type == SOCK_STREAM ? "TCP" : "UDP",
		    HANDOFF_ADDR, port, strerror(saved));
	}
	if (type == SOCK_STREAM && listen(fd, SOMAXCONN) != 0) {
		saved = errno;
		close(fd);
		refuse("listen: %s", strerror(saved));
	}
	return fd;
}

/*
 * Gives up every capability for good: bwrap started us with
 * CAP_NET_BIND_SERVICE (port 53 is below the namespace's
 * ip_unprivileged_port_start) and CAP_SETPCAP (to drop it from the
 * bounding set, so that COMMAND, also as uid 0, can never get it back).
 * Then checks /proc/self/status: any capability left in any set refuses.
 */
static void
drop_caps(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];
	static const char *const sets[] = { "CapInh:", "CapPrm:", "CapEff:",
	    "CapBnd:", "CapAmb:" };
	char line[BRIDGE_ROUTE_LINE_MAX];
	unsigned seen = 0;
	FILE *f;

	(void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	for (int c = 0; c <= 63; c++)
		if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1 &&
		    prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0)
			refuse("drop capability %d: %s", c, strerror(errno));
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) != 0)
		refuse("drop capabilities: %s", strerror(errno));
	f = fopen("/proc/self/status", "re");
	if (f == NULL)
		refuse("/proc/self/status: %s", strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL)
		for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
			size_t n = strlen(sets[i]);

			if (strncmp(line, sets[i], n) != 0)
				continue;
			seen |= 1u << i;
			if (strspn(line + n, "\t 0") != strlen(line + n) - 1) {
				fclose(f);
				refuse("capabilities left after dropping: %s",
				    line);
			}
		}
	fclose(f);
	if (seen != (1u << (sizeof(sets) / sizeof(sets[0]))) - 1)
		refuse("/proc/self/status lacks a capability set");
}

/*
 * Sends the fds over sock and waits, bounded, for the ack; copies the
 * session id into sid.  Refuses on anything else.
 */
static void
handoff(int sock, const int fds[HANDOFF_NFDS], size_t nfds, char *sid,
    size_t sidlen)
{
	char why[HANDOFF_MSG_MAX + 64];
	int rc;

	rc = pc_handoff_offer(sock, fds, nfds);
	if (rc < 0)
		refuse("hand the listeners to the proxy: %s", strerror(-rc));
	if (pc_handoff_wait_ack(sock, sid, sidlen, why, sizeof(why)) != 0)
		refuse("%s", why);
}

static void set_git_ssh(const char *self);

static void
set_env(const char *name, const char *value)
{
	if (setenv(name, value, 1) != 0)
		refuse("setenv %s: %s", name, strerror(errno));
}

/* The environment of DESIGN.md §7. */
static void
set_proxy_env(const char *sid)
{
	static const char *const proxy_vars[] = {
		"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
		"http_proxy", "https_proxy", "all_proxy",
		"npm_config_proxy", "npm_config_https_proxy",
		"PIP_PROXY", "YARN_HTTP_PROXY", "YARN_HTTPS_PROXY",
	};
	char self[PATH_MAX];
	ssize_t n;
	size_t i;

	for (i = 0; i < sizeof(proxy_vars) / sizeof(proxy_vars[0]); i++)
		set_env(proxy_vars[i], HANDOFF_PROXY_URL);
	set_env("NO_PROXY", "localhost,127.0.0.1,::1");
	set_env("no_proxy", "localhost,127.0.0.1,::1");
	set_env("NODE_USE_ENV_PROXY", "1");
	set_env("PORTCULLIS_SESSION", sid);

	/* Our own path as the sandbox sees it (the new /proc's view). */
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		refuse("readlink /proc/self/exe: %s", strerror(errno));
	self[n] = '\0';
	if (strpbrk(self, "\"'\\$` ") != NULL)
		refuse("bridge path %s needs shell quoting; install it "
		    "elsewhere", self);
	set_git_ssh(self);
}

/* Does GIT_SSH_COMMAND's word w already pick its own proxy? */
static bool
ssh_word_proxies(const char *w, size_t n)
{
	static const char *const keys[] = { "proxycommand", "proxyjump" };

	if (n >= 2 && w[0] == '-' && w[1] == 'J')
		return true;
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		size_t kl = strlen(keys[k]);

		for (size_t i = 0; i + kl <= n; i++)
			if (strncasecmp(w + i, keys[k], kl) == 0)
				return true;
	}
	return false;
}

/*
 * GIT_SSH_COMMAND (docs/sandbox.md, "ssh and git over ssh"): the caller's
 * is kept, never substituted.
 *   - none (and no GIT_SSH): `ssh -o ProxyCommand="BRIDGE connect %h %p"`;
 *   - GIT_SSH only: left alone (git runs that program; the ssh it runs
 *     reads the sandbox's ssh_config, whose ProxyCommand is ours);
 *   - theirs runs ssh itself (first word `ssh` or `.../ssh`) and picks no
 *     proxy of its own: ours is appended as `-o ProxyCommand=...` (git adds
 *     its own options and the host after it, and -o before the host is
 *     where ssh takes it); this also covers a `-F FILE` of theirs, which
 *     makes ssh skip the sandbox's ssh_config;
 *   - theirs names a ProxyCommand / ProxyJump / -J, or is a wrapper
 *     (first word anything else): kept unchanged.  A wrapper that ends in
 *     ssh gets the ProxyCommand from the sandbox's ssh_config; a proxy of
 *     their own must reach 127.0.0.1:3128, there is no other route.
 */
static void
set_git_ssh(const char *self)
{
	const char *theirs = getenv("GIT_SSH_COMMAND");
	const char *p, *w, *first = NULL;
	size_t firstlen = 0;
	bool proxies = false;
	char *ssh;
	int len;

	if (theirs == NULL || *theirs == '\0') {
		if (getenv("GIT_SSH") != NULL && *getenv("GIT_SSH") != '\0')
			return;
		theirs = "ssh";
	} else {
		for (p = theirs; *p != '\0';) {
			while (*p == ' ' || *p == '\t')
				p++;
			if (*p == '\0')
				break;
			w = p;
			while (*p != '\0' && *p != ' ' && *p != '\t')
				p++;
			if (first == NULL) {
				first = w;
				firstlen = (size_t)(p - w);
			}
			proxies |= ssh_word_proxies(w, (size_t)(p - w));
		}
		if (first == NULL || proxies)
			return;
		if (!((firstlen == 3 && strncmp(first, "ssh", 3) == 0) ||
		    (firstlen > 4 && strncmp(first + firstlen - 4, "/ssh", 4) == 0)))
			return;
	}
	len = snprintf(NULL, 0, "%s -o ProxyCommand=\"%s connect %%h %%p\"",
	    theirs, self);
	if (len < 0 || (size_t)len > BRIDGE_GIT_SSH_MAX)
		refuse("GIT_SSH_COMMAND is longer than %d bytes",
		    BRIDGE_GIT_SSH_MAX);
	ssh = malloc((size_t)len + 1);
	if (ssh == NULL)
		refuse("out of memory");
	snprintf(ssh, (size_t)len + 1, "%s -o ProxyCommand=\"%s connect %%h %%p\"",
	    theirs, self);
	set_env("GIT_SSH_COMMAND", ssh);
	free(ssh);
}

/* Closes every fd above 2, so COMMAND inherits only stdio. */
static void
close_extra_fds(void)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
		return;
#endif
	for (long fd = 3, max = sysconf(_SC_OPEN_MAX); fd < max && fd < 65536; fd++)
		(void)close((int)fd);
}

/*
 * COMMAND could not be executed: the route was fine, so this is not "no
 * proxy route".  Like a shell: 127 when it is not there (ENOENT, or a
 * missing interpreter), 126 when it is there but cannot be run (EACCES,
 * ENOEXEC, ...).  The message is the run's, not the bridge's: it is what
 * the user typed that failed.
 */
static _Noreturn void
exec_failed(const char *cmd, int err)
{
	if (err == ENOENT || err == ENOTDIR) {
		fprintf(stderr, "portcullis run: %s: not found in the sandbox\n",
		    cmd);
		exit(BRIDGE_EXIT_NOTFOUND);
	}
	fprintf(stderr, "portcullis run: %s: %s in the sandbox\n", cmd,
	    err == EACCES ? "permission denied" : strerror(err));
	exit(BRIDGE_EXIT_NOEXEC);
}

/*
 * Each path must be on a read-only mount, or not exist: the host-wide
 * /proc entries `portcullis run` left to bwrap's own read-only binds
 * (bwrap's --proc makes them so when it could write them itself).  A
 * bwrap that did not: refuse, COMMAND never runs.
 */
static void
check_read_only(const char *const *paths, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct statvfs sv;

		if (statvfs(paths[i], &sv) != 0) {
			if (errno == ENOENT)
				continue;
			refuse("%s: %s", paths[i], strerror(errno));
		}
		if ((sv.f_flag & ST_RDONLY) == 0)
			refuse("%s is not read-only in the sandbox", paths[i]);
	}
}

static int
parse_fd(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *s == '\0' || *end != '\0' || v < 3 || v > INT_MAX)
		return -1;
	return (int)v;
}

int
main(int argc, char **argv)
{
	char sid[HANDOFF_MSG_MAX];
	const char *ro[BRIDGE_MAX_RO];
	bool allow_unix = false, filtered = false;
	int sock = -1, fds[HANDOFF_NFDS], i, rc;
	size_t nfds, nro = 0;

	pc_progname = "portcullis-bridge";
	if (argc >= 2 && strcmp(argv[1], "connect") == 0)
		return bridge_connect_main(argc - 1, argv + 1);
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		if (strcmp(argv[i], "--help") == 0) {
			fputs(usage, stdout);
			return 0;
		}
		if (strcmp(argv[i], HANDOFF_FD_OPTION) == 0 && i + 1 < argc) {
			sock = parse_fd(argv[++i]);
			if (sock < 0)
				refuse("bad %s value '%s'", HANDOFF_FD_OPTION,
				    argv[i]);
		} else if (strcmp(argv[i], "--allow-unix-sockets") == 0) {
			allow_unix = true;
		} else if (strcmp(argv[i], BRIDGE_FILTERED_OPTION) == 0) {
			filtered = true;
		} else if (strcmp(argv[i], BRIDGE_RO_OPTION) == 0 &&
		    i + 1 < argc) {
			if (nro == BRIDGE_MAX_RO)
				refuse("more than %d %s", BRIDGE_MAX_RO,
				    BRIDGE_RO_OPTION);
			ro[nro++] = argv[++i];
		} else {
			fputs(usage, stderr);
			refuse("unknown argument '%s'", argv[i]);
		}
	}
	if (sock < 0)
		refuse("no %s given", HANDOFF_FD_OPTION);
	if (i >= argc)
		refuse("no COMMAND given");

	pc_mark("bridge main");
	check_read_only(ro, nro);
	lo_up();
	check_namespace();
	fds[HANDOFF_FD_HTTP] = bind_loopback(SOCK_STREAM, HANDOFF_PORT, false);
	/*
	 * Port 53 needs CAP_NET_BIND_SERVICE in the user namespace that owns
	 * the network namespace.  bwrap run by an unprivileged user makes
	 * that namespace as uid 0 (for /dev/pts) and runs us in a second one
	 * nested inside, where our capability does not reach the network:
	 * EACCES.  Then we hand out the listener alone and `portcullis run`,
	 * whose uid owns both namespaces, binds the two DNS sockets in ours
	 * from outside before it acknowledges (sandbox/dnsbind.c), or refuses
	 * us.  Any other failure (the port taken, ...) refuses here.
	 */
	nfds = HANDOFF_NFDS;
	fds[HANDOFF_FD_DNS_UDP] = bind_loopback(SOCK_DGRAM, HANDOFF_DNS_PORT,
	    true);
	fds[HANDOFF_FD_DNS_TCP] = fds[HANDOFF_FD_DNS_UDP] < 0 ? -1 :
	    bind_loopback(SOCK_STREAM, HANDOFF_DNS_PORT, true);
	if (fds[HANDOFF_FD_DNS_TCP] < 0) {
		if (fds[HANDOFF_FD_DNS_UDP] >= 0)
			close(fds[HANDOFF_FD_DNS_UDP]);
		nfds = 1;
	}
	pc_mark("bridge bound");
	drop_caps();
	handoff(sock, fds, nfds, sid, sizeof(sid));
	/* The proxy owns the sockets now; ours must not keep them alive. */
	for (size_t k = 0; k < nfds; k++)
		close(fds[k]);
	close(sock);
	check_namespace();
	set_proxy_env(sid);
	close_extra_fds();
	/* bwrap installed the filter before exec'ing us (told so): check
	 * it is there rather than stack a second copy on COMMAND. */
	rc = filtered ? pc_filter_check(allow_unix) :
	    pc_filter_install(allow_unix);
	if (rc < 0 && filtered)
		refuse("%s given but the sandbox's seccomp filter (or "
		    "no_new_privs) is not in force", BRIDGE_FILTERED_OPTION);
	if (rc < 0)
		refuse("install seccomp filter: %s", strerror(-rc));
	pc_mark("bridge exec COMMAND");
	execvp(argv[i], argv + i);
	exec_failed(argv[i], errno);
}
