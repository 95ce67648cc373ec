/*
 * control: the control socket (DESIGN.md §8) on the daemon side, and
 * `portcullis ctl` on the client side; plus the small client helpers and
 * flat-JSON reader that `portcullis run --connect` shares with ctl.
 */
#ifndef PORTCULLIS_CONTROL_H
#define PORTCULLIS_CONTROL_H

#include <stddef.h>

struct server;

/* One request or reply line, newline included; longer is refused. */
#define CONTROL_MAX_LINE 4096
/* How long a client waits for a reply. */
#define CONTROL_REPLY_TIMEOUT_MS 5000

/*
 * Listens on path for the server: creates the directory if missing (0755),
 * replaces a stale socket file, mode 0600 (0660 + group when [proxy]
 * control_group is set).  Peers are checked with SO_PEERCRED: root, the
 * daemon's uid, or a member of control_group.  0 or -errno.
 */
int control_start(struct server *s, const char *path);
/* Closes the control listener and control conns, closing their sessions
 * (asynchronous handle closes).  Idempotent. */
void control_stop(struct server *s);

/* `portcullis ctl ...`; argv[0] is "ctl". Returns the exit status. */
int ctl_main(int argc, char **argv);

/* Client side: a blocking connection to the control socket, or -errno. */
int control_connect(const char *path);
/*
 * Sends line (one JSON object, without newline) on fd, with passfd as
 * SCM_RIGHTS when passfd >= 0, then reads one reply line (newline
 * stripped) into reply within timeout_ms.  0 or -errno (-ETIMEDOUT,
 * -ECONNRESET on EOF, -EMSGSIZE for an overlong reply).
 */
int control_request(int fd, const char *line, int passfd, char *reply,
    size_t replylen, int timeout_ms);

/*
 * A flat JSON object reader: string, number, true/false/null values
 * (nested arrays/objects are skipped, kind CTL_JSON_OTHER).  Strings are
 * unescaped (\uXXXX to UTF-8; \u0000 is refused) into the struct's own
 * storage.  At most CTL_JSON_MAX_FIELDS members; input at most
 * CONTROL_MAX_LINE bytes.
 */
#define CTL_JSON_MAX_FIELDS 16
#define CTL_JSON_MAX_DEPTH 8
enum ctl_json_kind {
	CTL_JSON_STRING, CTL_JSON_NUMBER, CTL_JSON_TRUE, CTL_JSON_FALSE,
	CTL_JSON_NULL, CTL_JSON_OTHER,
};
struct ctl_json {
	size_t n;
	struct {
		const char *key;
		const char *val;	/* string/number text; NULL otherwise */
		enum ctl_json_kind kind;
	} f[CTL_JSON_MAX_FIELDS];
	char store[CONTROL_MAX_LINE * 2];
};
/* 0, or -EINVAL with a static message in *why. */
int ctl_json_parse(const char *text, size_t len, struct ctl_json *j,
    const char **why);
/* The member's string value, or NULL (absent or not a string). */
const char *ctl_json_str(const struct ctl_json *j, const char *key);
/* 1 for true, 0 for false, -1 otherwise. */
int ctl_json_bool(const struct ctl_json *j, const char *key);
/* Appends s as a JSON string literal (quotes included) to buf at *pos;
 * returns -EMSGSIZE if it does not fit. */
int ctl_json_quote(char *buf, size_t len, size_t *pos, const char *s);

#endif
