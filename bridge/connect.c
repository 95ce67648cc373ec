/*
 * connect: `portcullis-bridge connect HOST PORT`, a CONNECT client on
 * stdin/stdout for ssh's ProxyCommand.  The proxy is the one named by
 * $HTTP_PROXY (http://ADDR:PORT), default 127.0.0.1:3128.  On a refusal it
 * prints the proxy's X-Portcullis-Reason and exits 1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bridge.h"
#include "pclib.h"

/* The proxy's response head; refusals are a few hundred bytes. */
#define CONNECT_HEAD_MAX 8192
/* Relay chunk per direction. */
#define CONNECT_BUF 16384
/* Longest HOST we send (DNS names are <= 253). */
#define CONNECT_HOST_MAX 255

/* One line "portcullis-bridge connect: what[: detail]"; returns 1. */
static int
fail(const char *what, const char *detail)
{
	pc_warnx("%s%s%s", what, detail ? ": " : "", detail ? detail : "");
	return 1;
}

/* Splits http://HOST:PORT[/...] into host and port; 0 or -1. */
static int
parse_proxy(const char *url, char *host, size_t hostlen, char *port,
    size_t portlen)
{
	const char *p = url, *hend, *colon;
	size_t n;

	if (strncasecmp(p, "http://", 7) == 0)
		p += 7;
	hend = p + strcspn(p, "/");
	if (*p == '[') {
		const char *rb = memchr(p, ']', (size_t)(hend - p));

		if (rb == NULL)
			return -1;
		n = (size_t)(rb - p - 1);
		if (n >= hostlen)
			return -1;
		memcpy(host, p + 1, n);
		host[n] = '\0';
		colon = rb + 1 < hend && rb[1] == ':' ? rb + 1 : NULL;
	} else {
		colon = memchr(p, ':', (size_t)(hend - p));
		n = (size_t)((colon ? colon : hend) - p);
		if (n == 0 || n >= hostlen)
			return -1;
		memcpy(host, p, n);
		host[n] = '\0';
	}
	if (colon != NULL) {
		n = (size_t)(hend - colon - 1);
		if (n == 0 || n >= portlen)
			return -1;
		memcpy(port, colon + 1, n);
		port[n] = '\0';
	} else {
		snprintf(port, portlen, "80");
	}
	return 0;
}

static int
dial(const char *host, const char *port)
{
	struct addrinfo hints, *res, *ai;
	int fd = -1, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		errno = EHOSTUNREACH;
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		rc = errno;
		close(fd);
		fd = -1;
		errno = rc;
	}
	freeaddrinfo(res);
	return fd;
}

static bool
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* Copies a header's value (case-insensitive name) out of head, or "". */
static void
header_value(const char *head, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	const char *p = strstr(head, "\r\n");

	out[0] = '\0';
	while (p != NULL && p[2] != '\r') {
		p += 2;
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1, *e;

			while (*v == ' ' || *v == '\t')
				v++;
			e = strstr(v, "\r\n");
			if (e == NULL)
				e = v + strlen(v);
			snprintf(out, outlen, "%.*s", (int)(e - v), v);
			return;
		}
		p = strstr(p, "\r\n");
	}
}

/* Relays stdin -> fd and fd -> stdout until the proxy side ends. */
static int
relay(int fd, const char *extra, size_t nextra)
{
	char buf[CONNECT_BUF];
	bool in_open = true;

	if (nextra > 0 && !write_all(STDOUT_FILENO, extra, nextra))
		return 1;
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = fd, .events = POLLIN },
			{ .fd = in_open ? STDIN_FILENO : -1, .events = POLLIN },
		};
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			n = read(fd, buf, sizeof(buf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return 0;
			if (!write_all(STDOUT_FILENO, buf, (size_t)n))
				return 1;
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			n = read(STDIN_FILENO, buf, sizeof(buf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				/* Half-close: the remote side may still talk. */
				in_open = false;
				(void)shutdown(fd, SHUT_WR);
			} else if (!write_all(fd, buf, (size_t)n)) {
				return 1;
			}
		}
	}
}

int
bridge_connect_main(int argc, char **argv)
{
	char phost[CONNECT_HOST_MAX + 1], pport[16];
	char head[CONNECT_HEAD_MAX + 1], req[2 * CONNECT_HOST_MAX + 128];
	char reason[128], *end;
	const char *url, *host, *port;
	size_t have = 0;
	long portnum;
	int fd, n, status;

	pc_progname = "portcullis-bridge connect";
	if (argc != 3) {
		fputs("usage: portcullis-bridge connect HOST PORT\n", stderr);
		return 2;
	}
	host = argv[1];
	port = argv[2];
	portnum = strtol(port, &end, 10);
	if (*port == '\0' || *end != '\0' || portnum < 1 || portnum > 65535)
		return fail("bad port", port);
	if (strlen(host) == 0 || strlen(host) > CONNECT_HOST_MAX ||
	    strpbrk(host, " \r\n\t/@") != NULL)
		return fail("bad host", host);
	url = getenv("HTTP_PROXY");
	if (url == NULL || *url == '\0')
		url = getenv("http_proxy");
	if (url == NULL || *url == '\0')
		url = HANDOFF_PROXY_URL;
	if (parse_proxy(url, phost, sizeof(phost), pport, sizeof(pport)) != 0)
		return fail("cannot parse proxy URL", url);
	fd = dial(phost, pport);
	if (fd < 0)
		return fail("cannot reach the proxy", strerror(errno));

	if (strchr(host, ':') != NULL)
		n = snprintf(req, sizeof(req), "CONNECT [%s]:%ld HTTP/1.1\r\n"
		    "Host: [%s]:%ld\r\n\r\n", host, portnum, host, portnum);
	else
		n = snprintf(req, sizeof(req), "CONNECT %s:%ld HTTP/1.1\r\n"
		    "Host: %s:%ld\r\n\r\n", host, portnum, host, portnum);
	if (!write_all(fd, req, (size_t)n))
		return fail("write to the proxy", strerror(errno));

	/* Read the response head; what follows it belongs to the tunnel. */
	for (;;) {
		ssize_t r;
		char *eoh;

		if (have == CONNECT_HEAD_MAX)
			return fail("proxy response head too long", NULL);
		r = read(fd, head + have, CONNECT_HEAD_MAX - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return fail("proxy closed the connection", NULL);
		have += (size_t)r;
		head[have] = '\0';
		eoh = strstr(head, "\r\n\r\n");
		if (eoh == NULL)
			continue;
		if (sscanf(head, "HTTP/1.%*d %d", &status) != 1)
			return fail("malformed proxy response", NULL);
		if (status / 100 != 2) {
			header_value(head, "X-Portcullis-Reason", reason,
			    sizeof(reason));
			pc_warnx("%s:%ld refused by the proxy: %d (%s)", host,
			    portnum, status,
			    reason[0] ? reason : "no reason given");
			return 1;
		}
		eoh += 4;
		return relay(fd, eoh, have - (size_t)(eoh - head));
	}
}
