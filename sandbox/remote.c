/*
 * remote: `portcullis run --connect SOCK`'s side of the daemon's control
 * protocol (DESIGN.md §8): session.open with the bridge's listener and
 * its two DNS sockets (DESIGN.md §12),
 * session.phase to agent after --setup, session.listen with the agent
 * sandbox's listener.  Each request is one line and gets one reply line
 * within CONTROL_REPLY_TIMEOUT_MS (ctl_request); anything but
 * {"ok":true,...} is a refusal with the daemon's reason.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pclimits.h"
#include "control.h"
#include "ctl.h"
#include "json.h"
#include "run_internal.h"

/*
 * Sends line (with passfd as SCM_RIGHTS when >= 0; ours stays ours) and
 * parses the reply.  Returns it (the caller frees it) when it says
 * {"ok":true}; NULL with why otherwise.  sockpath, when not NULL, names
 * the socket in a transport error; what, when not NULL, names the thing
 * the daemon refused.
 */
static struct json_obj *
remote_call_r(int ctl_fd, const char *sockpath, const char *line,
    const int *passfds, size_t npass, const char *what, bool *refused,
    char *why, size_t whylen)
{
	char reply[CONTROL_MAX_LINE];
	struct json_obj *j;
	const char *jwhy, *err;
	int rc;

	rc = ctl_request_fds(ctl_fd, line, passfds, npass, reply,
	    sizeof(reply), CONTROL_REPLY_TIMEOUT_MS);
	if (rc < 0) {
		snprintf(why, whylen, "control socket%s%s: %s",
		    sockpath ? " " : "", sockpath ? sockpath : "",
		    rc == -ETIMEDOUT ? "no reply from the daemon" :
		    rc == -ECONNRESET ? "the daemon closed the connection" :
		    strerror(-rc));
		return NULL;
	}
	j = malloc(sizeof(*j));
	if (j == NULL) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	if (json_parse(reply, strlen(reply), j, &jwhy) != 0) {
		snprintf(why, whylen, "daemon reply: %s", jwhy);
		free(j);
		return NULL;
	}
	if (json_get_bool(j, "ok") != 1) {
		if (refused != NULL)
			*refused = true;
		err = json_get_str(j, "error");
		snprintf(why, whylen, "the daemon refused%s%s: %s",
		    what ? " " : "", what ? what : "",
		    err ? err : "no reason given");
		free(j);
		return NULL;
	}
	return j;
}

/* remote_call_r without telling a refusal from a transport failure. */
static struct json_obj *
remote_call(int ctl_fd, const char *sockpath, const char *line,
    const int *passfds, size_t npass, const char *what, char *why,
    size_t whylen)
{
	return remote_call_r(ctl_fd, sockpath, line, passfds, npass, what,
	    NULL, why, whylen);
}

/* How many of the bridge's fds there are: all, or the listener alone
 * (a sandbox without a resolver, see bridge/main.c). */
static size_t
handoff_nfds(const int fds[HANDOFF_NFDS])
{
	return fds[HANDOFF_FD_DNS_UDP] >= 0 ? HANDOFF_NFDS : 1;
}

/* {"op":"<op>","session":"<sid>"<tail>} into line; 0, or -1 with why. */
static int
session_line(char *line, size_t len, const char *op, const char *sid,
    const char *tail, char *why, size_t whylen)
{
	size_t pos;

	pos = (size_t)snprintf(line, len, "{\"op\":\"%s\",\"session\":", op);
	if (json_quote(line, len - 64, &pos, sid) != 0) {
		snprintf(why, whylen, "session id too long");
		return -1;
	}
	snprintf(line + pos, len - pos, "%s}", tail);
	return 0;
}

int
remote_open(int ctl_fd, const char *sockpath, const int fds[HANDOFF_NFDS],
    const char *env,
    enum phase phase, char *const *command, int ncommand, char *sid,
    size_t sidlen, char *why, size_t whylen)
{
	char line[CONTROL_MAX_LINE], cmd[REMOTE_MAX_COMMAND + 1];
	struct json_obj *j;
	const char *v;
	size_t pos, clen = 0;
	int rc = 0;

	pos = (size_t)snprintf(line, sizeof(line), "{\"op\":\"session.open\"");
	if (env != NULL) {
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos, ",\"env\":");
		if (json_quote(line, sizeof(line) - 64, &pos, env) != 0) {
			snprintf(why, whylen, "env name too long");
			return -1;
		}
	}
	/* Who we are, for `ctl status` (the daemon also sees our pid). */
	cmd[0] = '\0';
	for (int i = 0; i < ncommand && clen < REMOTE_MAX_COMMAND; i++) {
		int n = snprintf(cmd + clen, sizeof(cmd) - clen, "%s%s",
		    i > 0 ? " " : "", command[i]);

		if (n < 0)
			break;
		clen += (size_t)n < sizeof(cmd) - clen ? (size_t)n :
		    sizeof(cmd) - clen - 1;
	}
	pos += (size_t)snprintf(line + pos, sizeof(line) - pos,
	    ",\"pid\":%ld,\"command\":", (long)getpid());
	if (json_quote(line, sizeof(line) - 64, &pos, cmd) != 0) {
		snprintf(why, whylen, "command too long for session.open");
		return -1;
	}
	snprintf(line + pos, sizeof(line) - pos, ",\"phase\":\"%s\"}",
	    phase_name(phase));
	j = remote_call(ctl_fd, sockpath, line, fds, handoff_nfds(fds),
	    "the session",
	    why, whylen);
	if (j == NULL)
		return -1;
	v = json_get_str(j, "session");
	if (v == NULL || strlen(v) == 0 || strlen(v) >= sidlen) {
		snprintf(why, whylen, "daemon reply without a session id");
		rc = -1;
	} else {
		snprintf(sid, sidlen, "%s", v);
	}
	free(j);
	return rc;
}

int
remote_tls_ca(int ctl_fd, const char *sockpath, char **pem, char *why,
    size_t whylen)
{
	struct json_obj *j;
	const char *v;
	bool refused = false;

	*pem = NULL;
	j = remote_call_r(ctl_fd, sockpath, "{\"op\":\"tls.ca\"}", NULL, 0,
	    "tls.ca", &refused, why, whylen);
	if (j == NULL)
		return refused ? -1 : -2;
	v = json_get_str(j, "cert");
	if (v != NULL && strncmp(v, "-----BEGIN CERTIFICATE-----", 27) != 0) {
		snprintf(why, whylen, "daemon reply: tls.ca: not a PEM "
		    "certificate");
		free(j);
		return -1;
	}
	if (v != NULL && (*pem = strdup(v)) == NULL) {
		snprintf(why, whylen, "out of memory");
		free(j);
		return -1;
	}
	free(j);
	return 0;
}

int
remote_to_agent(int ctl_fd, const char *sid, char *why, size_t whylen)
{
	char line[CONTROL_MAX_LINE];
	struct json_obj *j;

	if (session_line(line, sizeof(line), "session.phase", sid,
	    ",\"phase\":\"agent\"", why, whylen) != 0)
		return -1;
	j = remote_call(ctl_fd, NULL, line, NULL, 0, NULL, why, whylen);
	if (j == NULL)
		return -1;
	free(j);
	return 0;
}

int
remote_listen(int ctl_fd, const char *sid, const int fds[HANDOFF_NFDS],
    char *why, size_t whylen)
{
	char line[CONTROL_MAX_LINE];
	struct json_obj *j;

	if (session_line(line, sizeof(line), "session.listen", sid, "", why,
	    whylen) != 0)
		return -1;
	j = remote_call(ctl_fd, NULL, line, fds, handoff_nfds(fds), NULL, why,
	    whylen);
	if (j == NULL)
		return -1;
	free(j);
	return 0;
}
