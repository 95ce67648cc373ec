/*
 * files: which files a load reads, and how.  The main file is read by
 * cfg_load(); then the admin's require file named by [proxy] require
 * (owner and mode checked), then the [proxy] include files in order.
 * Only regular files are opened, and none larger than CFG_MAX_FILE_BYTES.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg_internal.h"

/*
 * Reads fd (at most CFG_MAX_FILE_BYTES) into a malloc'd NUL-terminated
 * buffer.  Does not close fd.  Returns 0 or a negative errno (-EFBIG when
 * too large).
 */
static int
read_fd(int fd, char **out, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	int err = 0;

	buf = malloc(CFG_MAX_FILE_BYTES + 1);
	if (buf == NULL) {
		err = -ENOMEM;
		goto fail;
	}
	while (n <= CFG_MAX_FILE_BYTES) {
		ssize_t r = read(fd, buf + n, CFG_MAX_FILE_BYTES + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = -errno;
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > CFG_MAX_FILE_BYTES) {
		err = -EFBIG;
		goto fail;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
fail:
	free(buf);
	return err;
}

/*
 * Opens path for reading if it is a regular file; anything else (a FIFO,
 * a device, a directory that an include glob matched) is refused before
 * it is opened, because opening a device can act (a watchdog starts
 * counting).  O_NONBLOCK keeps a FIFO swapped in meanwhile from hanging
 * the open, and fstat() of the opened descriptor re-checks what was
 * opened, so a rename between check and read cannot swap the file.
 * Returns 0 with *fd open (the caller closes it) and *st its fstat, or a
 * negative errno (-EINVAL: not a regular file).
 */
static int
open_regular(const char *path, int *fd, struct stat *st)
{
	int r;

	if (stat(path, st) < 0)
		return -errno;
	if (!S_ISREG(st->st_mode))
		return -EINVAL;
	*fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (*fd < 0)
		return -errno;
	if (fstat(*fd, st) < 0) {
		r = -errno;
		close(*fd);
		return r;
	}
	if (!S_ISREG(st->st_mode)) {
		close(*fd);
		return -EINVAL;
	}
	return 0;
}

int
files_read(const char *path, char **out, size_t *len)
{
	struct stat st;
	int fd, r;

	r = open_regular(path, &fd, &st);
	if (r < 0)
		return r;
	r = read_fd(fd, out, len);
	close(fd);
	return r;
}

/*
 * Resolves a path written in file `from`: absolute as is, relative to the
 * directory of `from` otherwise.  Returns -ENAMETOOLONG when it does not fit.
 */
static int
path_relative_to(const char *from, const char *path, char *out, size_t outsz)
{
	const char *sl = strrchr(from, '/');
	int n;

	if (path[0] == '/' || sl == NULL)
		n = snprintf(out, outsz, "%s", path);
	else
		n = snprintf(out, outsz, "%.*s/%s", (int)(sl - from), from, path);
	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

/*
 * Reads the admin ceiling file named by [proxy] require, if any, right
 * after the main file and before includes and pattern compilation.  The
 * file must be a regular file owned by root or by the uid loading the
 * config, and not writable by group or others: otherwise whoever can
 * write it could lift the ceilings it is meant to impose.  Errors are
 * reported at the [proxy] require line.
 */
void
files_require(struct parser *p)
{
	struct cfg *c = p->cfg;
	char path[PATH_MAX];
	struct stat st;
	struct loc at;
	char *buf = NULL;
	size_t len;
	uid_t me = geteuid();
	int e, fd = -1;

	if (c->proxy.require == NULL)
		return;
	at = keys_seen(p, S_PROXY, "require");
	if (path_relative_to(p->files[0], c->proxy.require, path,
	    sizeof(path)) < 0) {
		parser_err(p, &at, "[proxy] require: path too long");
		return;
	}
	/* The owner and mode checks use the fstat() of what is then read. */
	e = open_regular(path, &fd, &st);
	if (e < 0) {
		fd = -1;
		parser_err(p, &at, "[proxy] require: %s: %s", path, e == -EINVAL ?
		    "not a regular file" : strerror(-e));
		goto out;
	}
	if (st.st_uid != 0 && st.st_uid != me) {
		parser_err(p, &at, "[proxy] require: %s: owned by uid %u; the "
		    "require file must be owned by root or uid %u", path,
		    (unsigned)st.st_uid, (unsigned)me);
		goto out;
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		parser_err(p, &at, "[proxy] require: %s: writable by %s (mode "
		    "%04o); the require file must be writable only by its "
		    "owner", path, (st.st_mode & S_IWOTH) ? "others" : "group",
		    (unsigned)(st.st_mode & 07777));
		goto out;
	}
	e = read_fd(fd, &buf, &len);
	if (e < 0) {
		parser_err(p, &at, "[proxy] require: %s: %s", path, e == -EFBIG ?
		    "file larger than 1 MiB" : strerror(-e));
		goto out;
	}
	c->ceil.path = parser_strdup(p, path);
	reader_parse(p, path, buf, len, F_REQUIRE);
	if (!p->require_sect) {
		struct loc l = p->loc;

		l.line = 0;
		parser_err(p, &l, "no [require] section (an admin ceiling file "
		    "holds one [require] section)");
	}
	c->ceil.present = true;
out:
	free(buf);
	if (fd >= 0)
		close(fd);
}

/* Reads [proxy] include files, in order, each matched set sorted. */
void
files_includes(struct parser *p)
{
	for (size_t i = 0; i < p->nincs; i++) {
		struct pinclude inc = p->incs[i];
		char pat[PATH_MAX];
		glob_t g;
		int r;

		if (inc.pattern == NULL)
			continue;
		/* Relative patterns are relative to the including file. */
		if (path_relative_to(inc.loc.file, inc.pattern, pat,
		    sizeof(pat)) < 0) {
			parser_err(p, &inc.loc, "[proxy] include: path too long");
			continue;
		}
		r = glob(pat, GLOB_ERR, NULL, &g);
		if (r == GLOB_NOMATCH) {
			/* A pattern with no match is fine; a plain path is not. */
			if (strpbrk(inc.pattern, "*?[") == NULL)
				parser_err(p, &inc.loc, "[proxy] include: %s: %s",
				    pat, strerror(ENOENT));
			continue;
		}
		if (r != 0) {
			parser_err(p, &inc.loc, "[proxy] include: cannot read '%s'",
			    pat);
			continue;
		}
		for (size_t j = 0; j < g.gl_pathc; j++) {
			char *buf = NULL, **slot;
			size_t len;
			int e;

			if (p->cfg->nincluded >= CFG_MAX_INCLUDED) {
				parser_err(p, &inc.loc, "[proxy] include: more than "
				    "%d files", CFG_MAX_INCLUDED);
				break;
			}
			e = files_read(g.gl_pathv[j], &buf, &len);
			if (e < 0) {
				parser_err(p, &inc.loc, "[proxy] include: %s: %s",
				    g.gl_pathv[j], e == -EINVAL ?
				    "not a regular file" : strerror(-e));
				continue;
			}
			slot = parser_push(p, &p->cfg->included, &p->cfg->nincluded,
			    sizeof(*slot));
			if (slot != NULL)
				*slot = parser_strdup(p, g.gl_pathv[j]);
			reader_parse(p, g.gl_pathv[j], buf, len, F_INCLUDE);
			free(buf);
		}
		globfree(&g);
	}
}
