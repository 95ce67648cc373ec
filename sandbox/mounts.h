/*
 * mounts: what the sandbox sees of the file system beyond `/` read-only
 * (DESIGN.md §10 HOME, §15): the kernel's host-wide files under /proc and
 * /sys made read-only or masked, credential paths hidden, and the run's
 * own writable HOME.  Produces bwrap arguments; the caller (plan.c) puts
 * them into its argv at the points named below.  See docs/sandbox.md,
 * "What is hidden and why".
 */
#ifndef PORTCULLIS_MOUNTS_H
#define PORTCULLIS_MOUNTS_H

#include <stdbool.h>
#include <stddef.h>

#include "pclimits.h"

/* Appends one bwrap argument; the string must outlive the argv. */
typedef void (*mounts_add_fn)(void *ctx, const char *arg);

/* A --bind/--ro-bind of the run (user binds and the working directory). */
struct mounts_bind {
	bool ro;
	const char *src;
	const char *dst;
};

struct mounts;

/*
 * Plans the mounts for one run: resolves the caller's HOME ($HOME and the
 * passwd entry), the kernel masks and the credential paths that exist,
 * and the run's HOME: home_opt (--home DIR: created 0700 if missing,
 * kept), or a fresh 0700 directory under $TMPDIR (or /tmp) that is
 * removed by mounts_free(), at exit() (die), or by a keeper process when
 * we are killed.  Returns the plan, or NULL with why filled in.
 */
struct mounts *mounts_new(const char *home_opt, char *why, size_t whylen);

/* Hides one more path (the run's audit state directory, the audit key, a
 * credential file), also one a hidden directory holds (a bind from inside
 * that directory brings it back).  Before mounts_set_binds.  0, or -1
 * when the list is full. */
int mounts_add_hide(struct mounts *m, const char *path);

/*
 * Are the hidden paths where the plan found them?  Asked after a setup
 * sandbox (`run --setup`), before the agent's: the setup command could
 * write the working directory, so it could have moved a hidden file
 * there (an audit key next to its log) away from the path the agent's
 * mask names, or made a component of that path a symlink to elsewhere.
 * Each one inside a writable bind (or the HOME) must still resolve to
 * itself and be the same file (device and inode as at planning).  0, or
 * -1 + why naming the first that is not.
 */
int mounts_check_hides(const struct mounts *m, char *why, size_t whylen);

/*
 * Takes the run's binds (user binds, the working directory last; kept by
 * the caller until m is freed) and works out which hides they cover from
 * above.  -1 + why when cwd is one of the hidden directories (the
 * caller's HOME included): bound writable, it would expose exactly what
 * is hidden.  May be called again (the previous binds are forgotten).
 */
int mounts_set_binds(struct mounts *m, const struct mounts_bind *binds,
    size_t nbinds, const char *cwd, char *why, size_t whylen);

/* Upper bound of the arguments the mounts_emit_* calls add for nbinds
 * binds (argv sizing). */
size_t mounts_nargs(const struct mounts *m, size_t nbinds);

/* After `--proc /proc`: /proc/sys & co read-only, kernel info masked. */
void mounts_emit_kernel(const struct mounts *m, mounts_add_fn add, void *ctx);

/*
 * `--tmpfs /tmp`, the hides, then the run's HOME, then the binds of
 * mounts_set_binds (in order), then any hide that a bind covered from
 * above (a bind of /etc must not bring /etc/shadow back) followed by the
 * binds at or beneath it again (the re-hides and those binds in order of
 * depth, so a bind that comes back never covers a re-hide inside it).  Binds come after the hides so that
 * naming a hidden path explicitly brings it back.  A hide held by a
 * hidden directory, inside a TMPDIR covered by a tmpfs of its own, or
 * inside the fresh /tmp where a bind brings it back at its own path, gets
 * no mask before the binds (it would hide nothing), only its re-hide.
 */
void mounts_emit_fs(const struct mounts *m, mounts_add_fn add, void *ctx);

/* HOME and the cache variables inside it (--setenv / --unsetenv). */
void mounts_emit_env(const struct mounts *m, mounts_add_fn add, void *ctx);

/* True when dir is path or one of its ancestors ("/" is everyone's). */
bool mounts_at_or_above(const char *dir, const char *path);

/* The run's HOME (absolute, as seen inside and outside). */
const char *mounts_home(const struct mounts *m);

/* The /proc entries made read-only (mounts.c kernel_ro). */
#define MOUNTS_KERNEL_RO 5

/* The bridge's arguments that make it check, inside, that each kernel
 * entry left to bwrap's own read-only bind is read-only there (or absent):
 * BRIDGE_RO_OPTION PATH for each. */
void mounts_emit_bridge(const struct mounts *m, mounts_add_fn add, void *ctx);

/* Removes a fresh HOME (waits for it), frees m.  NULL is a no-op. */
/* The run's temp dir (TMPDIR or /tmp; see tmpdir_pick): where a fresh
 * HOME and the embedded proxy's default audit log go.  Hidden from other
 * runs' sandboxes. */
const char *mounts_tmpdir(const struct mounts *m);
/* Every sandbox has exited: the keeper starts removing a fresh HOME now,
 * while we finish other work; mounts_free() waits until it is gone. */
void mounts_release_start(struct mounts *m);
void mounts_free(struct mounts *m);

#endif
