/*
 * ctl: the client side of the control socket (ctl.h): `portcullis ctl`,
 * and the blocking connect / request calls `portcullis run --connect`
 * shares with it.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "control.h"
#include "ctl.h"
#include "pclib.h"
#include "json.h"

int
ctl_connect(const char *path)
{
	struct sockaddr_un sun;
	int fd, saved;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		saved = errno;
		close(fd);
		return -saved;
	}
	return fd;
}

int
ctl_request(int fd, const char *line, int passfd, char *out,
    size_t outlen, int timeout_ms)
{
	return ctl_request_fds(fd, line, &passfd, passfd >= 0 ? 1 : 0, out,
	    outlen, timeout_ms);
}

int
ctl_request_fds(int fd, const char *line, const int *passfds, size_t npass,
    char *out, size_t outlen, int timeout_ms)
{
	char msg[CONTROL_MAX_LINE + 1];
	size_t len = strlen(line), have = 0, off = 0;
	long long deadline = pc_mono_ms() + timeout_ms;

	if (len + 1 > CONTROL_MAX_LINE)
		return -EMSGSIZE;
	memcpy(msg, line, len);
	msg[len++] = '\n';
	while (off < len) {
		/* The fds travel with the first byte. */
		ssize_t n = pc_send_fds(fd, msg + off, len - off, passfds,
		    off == 0 ? npass : 0);

		/* A daemon that refuses a peer answers at once and closes;
		 * its reply is still queued for us, so read it. */
		if (n == -EPIPE)
			break;
		if (n < 0)
			return (int)n;
		off += (size_t)n;
	}
	/* Read byte-wise up to the newline: what follows is not ours. */
	for (;;) {
		ssize_t n;
		int rc = pc_wait_readable(fd, deadline);

		if (rc < 0)
			return rc;
		if (rc == 0)
			return -ETIMEDOUT;
		n = read(fd, out + have, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		if (out[have] == '\n') {
			out[have] = '\0';
			return 0;
		}
		if (++have + 1 >= outlen)
			return -EMSGSIZE;
	}
}

static const char ctl_usage[] =
"usage: portcullis ctl [--control SOCK] status\n"
"       portcullis ctl [--control SOCK] phase SESSION agent [--force]\n"
"       portcullis ctl [--control SOCK] close SESSION [--force]\n"
"       portcullis ctl [--control SOCK] reload\n"
"\n"
"Talks to a running `portcullis serve` over its control socket\n"
"(default " CFG_DEFAULT_CONTROL ") and prints the reply (one JSON line).\n"
"\n"
"  status                 per session: id, env, phase, pid (and peer_pid, the\n"
"                         opener's) and command of the run, started (UTC),\n"
"                         conns open, requests, refusals, bytes_up (from the\n"
"                         sandbox) and bytes_down; and the live connection count\n"
"  phase SESSION agent    one-way switch setup -> agent: every connection the\n"
"                         session opened in setup is cut (close error\n"
"                         \"phase_changed\"); later requests use the agent rules.\n"
"                         Only the control connection that opened the session\n"
"                         may switch it (`portcullis run` does); --force is the\n"
"                         admin override, for root or the daemon's own uid\n"
"  close SESSION          end the session: its listener closes and every\n"
"                         connection it has is cut (close error\n"
"                         \"session_closed\"); same owner rule and --force\n"
"                         as phase\n"
"  reload                 re-read the daemon's config file (as SIGHUP); an\n"
"                         invalid file is refused with every FILE:LINE error\n"
"                         (newline-separated in \"error\"), old stays\n"
"\n"
"Exit status: 0 when the daemon answered ok, 1 otherwise, 2 on usage errors.\n";

int
ctl_main(int argc, char **argv)
{
	const char *path = CFG_DEFAULT_CONTROL;
	char line[CONTROL_MAX_LINE], *out;
	struct json_obj *j;
	const char *why;
	size_t pos;
	int i = 1, fd, rc, ok;
	bool force = false;

	/* `ctl status --help` too: --help anywhere prints the usage. */
	for (int k = 1; k < argc; k++)
		if (strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0) {
			fputs(ctl_usage, stdout);
			return 0;
		}
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "--control") == 0 && i + 1 < argc) {
			path = argv[i + 1];
			i += 2;
			continue;
		}
		fputs(ctl_usage, stderr);
		return 2;
	}
	/* `phase SESSION agent --force`, `close SESSION --force`: the option
	 * may also come last. */
	if (((argc - i == 4 && strcmp(argv[i], "phase") == 0) ||
	    (argc - i == 3 && strcmp(argv[i], "close") == 0)) &&
	    strcmp(argv[argc - 1], "--force") == 0) {
		force = true;
		argc--;
	}
	if (i < argc && strcmp(argv[i], "status") == 0 && argc - i == 1) {
		snprintf(line, sizeof(line), "{\"op\":\"status\"}");
	} else if (i < argc && strcmp(argv[i], "reload") == 0 && argc - i == 1) {
		snprintf(line, sizeof(line), "{\"op\":\"reload\"}");
	} else if (i < argc && strcmp(argv[i], "phase") == 0 && argc - i == 3) {
		pos = (size_t)snprintf(line, sizeof(line),
		    "{\"op\":\"session.phase\",\"session\":");
		if (json_quote(line, sizeof(line) - 64, &pos, argv[i + 1]) != 0)
			return 2;
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos,
		    ",\"phase\":");
		if (json_quote(line, sizeof(line) - 2, &pos, argv[i + 2]) != 0)
			return 2;
		snprintf(line + pos, sizeof(line) - pos, "%s}",
		    force ? ",\"force\":true" : "");
	} else if (i < argc && strcmp(argv[i], "close") == 0 && argc - i == 2) {
		pos = (size_t)snprintf(line, sizeof(line),
		    "{\"op\":\"session.close\",\"session\":");
		if (json_quote(line, sizeof(line) - 64, &pos, argv[i + 1]) != 0)
			return 2;
		snprintf(line + pos, sizeof(line) - pos, "%s}",
		    force ? ",\"force\":true" : "");
	} else {
		fputs(ctl_usage, stderr);
		return 2;
	}
	fd = ctl_connect(path);
	if (fd < 0) {
		fprintf(stderr, "portcullis ctl: %s: %s\n", path, strerror(-fd));
		return 1;
	}
	out = malloc(CONTROL_MAX_REPLY);
	j = malloc(sizeof(*j));
	if (out == NULL || j == NULL) {
		free(out);
		free(j);
		close(fd);
		return 1;
	}
	rc = ctl_request(fd, line, -1, out, CONTROL_MAX_REPLY,
	    CONTROL_REPLY_TIMEOUT_MS);
	close(fd);
	if (rc < 0) {
		fprintf(stderr, "portcullis ctl: %s: %s\n", path, strerror(-rc));
		ok = 0;
	} else {
		printf("%s\n", out);
		/* The status reply's size may exceed what the reader takes;
		 * then fall back to the fixed prefix every reply has. */
		if (json_parse(out, strlen(out), j, &why) == 0)
			ok = json_get_bool(j, "ok") == 1;
		else
			ok = strncmp(out, "{\"ok\":true", 10) == 0;
	}
	free(out);
	free(j);
	return ok ? 0 : 1;
}
