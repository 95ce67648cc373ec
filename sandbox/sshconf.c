/*
 * sshconf: the ssh_config the sandbox sees at /etc/ssh/ssh_config, so that
 * plain `ssh HOST`, `scp` and `git` over ssh go through the proxy with no
 * options (docs/sandbox.md, "ssh and git over ssh").
 *
 * ssh finds ~/.ssh through the passwd entry, not $HOME: inside, that is
 * the hidden, empty /root (root) or /nonexistent (nobody), so a file in the
 * run's HOME is never read by itself.  The system file is read by every
 * user; we bind ours over it (bwrap --ro-bind-data, from a memfd: nothing
 * on disk), made of, in ssh's first-value-wins order:
 *   1. Include of the run's HOME/.ssh/config (what ~/.ssh/config would be:
 *      a user's Host aliases, and their own ProxyJump/ProxyCommand, win);
 *   2. Host *: ProxyCommand BRIDGE connect %h %p; UserKnownHostsFile and
 *      IdentityFile in the run's HOME/.ssh (writable, and where --home DIR
 *      keeps keys); StrictHostKeyChecking accept-new (a fresh HOME knows no
 *      host: "ask" would fail every first connection with no terminal; a
 *      key that *changed* is still refused);
 *   3. the host's /etc/ssh/ssh_config as it is (its Include of
 *      ssh_config.d/ *.conf keeps working: those files are visible).
 * Nothing here is a security boundary: the network namespace is; a ssh
 * that ignores this file (`-F FILE`) just has no route.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "run_internal.h"
#include "sshconf.h"

/* Default identities ssh would look for in ~/.ssh. */
static const char *const idents[] = {
	"id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk",
};

/* Safe in a quoted ssh_config argument that ssh also token-expands. */
static bool
plain(const char *s)
{
	return strpbrk(s, "\"%\n\r\\") == NULL;
}

static int
put(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

int
sshconf_make(const char *bridge, const char *home, char *why, size_t whylen)
{
	char *buf, dir[PATH_MAX];
	size_t len = 0, cap = RUN_SSHCONF_MAX + 8192;
	ssize_t n;
	int fd, in;

	if (access(SSHCONF_PATH, F_OK) != 0)
		return -1;	/* no ssh client config here: nothing to cover */
	if (!plain(bridge) || !plain(home) || strchr(bridge, ' ') != NULL) {
		snprintf(why, whylen, "the run's HOME %.200s or the bridge path "
		    "needs quoting in ssh_config; plain ssh inside is not "
		    "proxied (GIT_SSH_COMMAND still is)", home);
		return -2;
	}
	/* Where known_hosts goes (ssh does not make the directory). */
	if (snprintf(dir, sizeof(dir), "%s/.ssh", home) >= (int)sizeof(dir) ||
	    (mkdir(dir, 0700) != 0 && errno != EEXIST)) {
		snprintf(why, whylen, "%.300s: %s", dir, strerror(errno));
		return -2;
	}
	buf = malloc(cap);
	if (buf == NULL) {
		snprintf(why, whylen, "out of memory");
		return -2;
	}
	len += (size_t)snprintf(buf + len, cap - len,
	    "# portcullis run: ssh reaches hosts through the proxy only\n"
	    "# (docs/sandbox.md, \"ssh and git over ssh\").\n"
	    "Include \"%s/.ssh/config\"\n"
	    "Host *\n"
	    "    ProxyCommand %s connect %%h %%p\n"
	    "    UserKnownHostsFile \"%s/.ssh/known_hosts\"\n"
	    "    StrictHostKeyChecking accept-new\n", home, bridge, home);
	for (size_t i = 0; i < sizeof(idents) / sizeof(idents[0]); i++)
		len += (size_t)snprintf(buf + len, cap - len,
		    "    IdentityFile \"%s/.ssh/%s\"\n", home, idents[i]);
	len += (size_t)snprintf(buf + len, cap - len,
	    "# The host's " SSHCONF_PATH " follows.\nHost *\n");
	in = open(SSHCONF_PATH, O_RDONLY | O_CLOEXEC);
	if (in >= 0) {
		while (len < cap && (n = read(in, buf + len, cap - len)) > 0)
			len += (size_t)n;
		close(in);
		if (len == cap) {
			/* Longer than RUN_SSHCONF_MAX: ours alone. */
			pc_warnx("%s is longer than %d bytes; the sandbox's "
			    "ssh_config has only portcullis's part",
			    SSHCONF_PATH, RUN_SSHCONF_MAX);
			len = (size_t)(strstr(buf, "# The host's") - buf);
		}
	}
	fd = memfd_create("portcullis-ssh_config", MFD_CLOEXEC);
	if (fd < 0 || put(fd, buf, len) != 0) {
		snprintf(why, whylen, "ssh_config memfd: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		free(buf);
		return -2;
	}
	free(buf);
	return fd;
}
