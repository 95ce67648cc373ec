/*
 * remote: `portcullis run --connect SOCK`'s side of the daemon's control
 * protocol (DESIGN.md §8): session.open with the bridge's listener,
 * session.phase to agent after --setup, session.listen with the agent
 * sandbox's listener.  Each request is one line and gets one reply line
 * within CONTROL_REPLY_TIMEOUT_MS (control_request); anything but
 * {"ok":true,...} is a refusal with the daemon's reason.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "run_internal.h"

/*
 * Sends line (with passfd as SCM_RIGHTS when >= 0; ours stays ours) and
 * parses the reply.  Returns it (the caller frees it) when it says
 * {"ok":true}; NULL with why otherwise.  sockpath, when not NULL, names
 * the socket in a transport error; what, when not NULL, names the thing
 * the daemon refused.
 */
static struct ctl_json *
remote_call(int ctl_fd, const char *sockpath, const char *line, int passfd,
    const char *what, char *why, size_t whylen)
{
	char reply[CONTROL_MAX_LINE];
	struct ctl_json *j;
	const char *jwhy, *err;
	int rc;

	rc = control_request(ctl_fd, line, passfd, reply, sizeof(reply),
	    CONTROL_REPLY_TIMEOUT_MS);
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
	if (ctl_json_parse(reply, strlen(reply), j, &jwhy) != 0) {
		snprintf(why, whylen, "daemon reply: %s", jwhy);
		free(j);
		return NULL;
	}
	if (ctl_json_bool(j, "ok") != 1) {
		err = ctl_json_str(j, "error");
		snprintf(why, whylen, "the daemon refused%s%s: %s",
		    what ? " " : "", what ? what : "",
		    err ? err : "no reason given");
		free(j);
		return NULL;
	}
	return j;
}

/* {"op":"<op>","session":"<sid>"<tail>} into line; 0, or -1 with why. */
static int
session_line(char *line, size_t len, const char *op, const char *sid,
    const char *tail, char *why, size_t whylen)
{
	size_t pos;

	pos = (size_t)snprintf(line, len, "{\"op\":\"%s\",\"session\":", op);
	if (ctl_json_quote(line, len - 64, &pos, sid) != 0) {
		snprintf(why, whylen, "session id too long");
		return -1;
	}
	snprintf(line + pos, len - pos, "%s}", tail);
	return 0;
}

int
remote_open(int ctl_fd, const char *sockpath, int lfd, const char *env,
    enum phase phase, char *sid, size_t sidlen, char *why, size_t whylen)
{
	char line[CONTROL_MAX_LINE];
	struct ctl_json *j;
	const char *v;
	size_t pos;
	int rc = 0;

	pos = (size_t)snprintf(line, sizeof(line), "{\"op\":\"session.open\"");
	if (env != NULL) {
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos, ",\"env\":");
		if (ctl_json_quote(line, sizeof(line) - 64, &pos, env) != 0) {
			snprintf(why, whylen, "env name too long");
			return -1;
		}
	}
	snprintf(line + pos, sizeof(line) - pos, ",\"phase\":\"%s\"}",
	    phase_name(phase));
	j = remote_call(ctl_fd, sockpath, line, lfd, "the session", why, whylen);
	if (j == NULL)
		return -1;
	v = ctl_json_str(j, "session");
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
remote_to_agent(int ctl_fd, const char *sid, char *why, size_t whylen)
{
	char line[CONTROL_MAX_LINE];
	struct ctl_json *j;

	if (session_line(line, sizeof(line), "session.phase", sid,
	    ",\"phase\":\"agent\"", why, whylen) != 0)
		return -1;
	j = remote_call(ctl_fd, NULL, line, -1, NULL, why, whylen);
	if (j == NULL)
		return -1;
	free(j);
	return 0;
}

int
remote_listen(int ctl_fd, const char *sid, int lfd, char *why, size_t whylen)
{
	char line[CONTROL_MAX_LINE];
	struct ctl_json *j;

	if (session_line(line, sizeof(line), "session.listen", sid, "", why,
	    whylen) != 0)
		return -1;
	j = remote_call(ctl_fd, NULL, line, lfd, NULL, why, whylen);
	if (j == NULL)
		return -1;
	free(j);
	return 0;
}
