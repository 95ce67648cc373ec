/*
 * filter: the sandbox's seccomp filter (DESIGN.md §7), built with libseccomp.
 *
 * Default allow; the listed calls fail with EPERM (not a kill, so programs
 * that probe for them fall back cleanly):
 *   socket(AF_UNIX, ...)            unless --allow-unix-sockets; socketpair
 *                                   stays allowed (it reaches nothing)
 *   socket(AF_NETLINK, *, p != NETLINK_ROUTE)
 *   socket(AF_PACKET | AF_VSOCK, ...)
 *   io_uring_setup/enter/register   (io_uring ops bypass this filter)
 *   ptrace
 * and the kernel key management calls fail with ENOSYS:
 *   keyctl, add_key, request_key    keyrings are not namespaced: as root
 *                                   the sandbox would read and write
 *                                   root's user keyring (@u), a channel
 *                                   past the proxy and a way to its keys.
 * ENOSYS rather than EPERM: to the program it is a kernel built without
 * CONFIG_KEYS, a case keyring users already handle (libkeyutils callers,
 * systemd's password cache, Kerberos fall back or report "not
 * supported"), where EPERM reads as "this key is not yours" and some
 * retry or abort.  portcullis run also gives each sandbox a new session
 * keyring (sandbox/launch.c), so the kernel's own implicit lookups see an empty one.
 * Syscalls of a non-native ABI (e.g. i386 socketcall, x32) hit libseccomp's
 * bad-arch action, which kills: they could otherwise bypass the argument
 * checks above.
 *
 * socket()'s arguments are ints: the kernel ignores the upper 32 bits of
 * the registers, the filter sees all 64.  So the family is matched on its
 * low 32 bits only (MASKED_EQ): socket(0x100000000 | AF_UNIX, ...) through
 * syscall(2) is an AF_UNIX socket and must be refused like one.  The
 * NETLINK_ROUTE exception compares all 64 bits of the protocol, so junk in
 * the upper half can only make it refuse more, never less.
 *
 * The same filter is also handed to bwrap as BPF (pc_filter_memfd,
 * `--add-seccomp-fd`, by `portcullis run`): bwrap installs it in its own
 * pid-1 reaper inside the sandbox, which the bridge cannot reach.  Without
 * it that reaper is an unfiltered process COMMAND may write to through
 * /proc/1/mem or process_vm_writev (same uid, no capabilities needed), and
 * through which it could make the refused calls.  bwrap installs it
 * before it execs the bridge as well, so the bridge (told so:
 * BRIDGE_FILTERED_OPTION) only checks that a filter is in force
 * (pc_filter_check) and COMMAND runs under one copy, not two.
 */
#include <errno.h>
#include <linux/keyctl.h>
#include <linux/netlink.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pclib.h"

/* The bits of a syscall register that an int argument occupies. */
#define FILTER_INT_MASK ((scmp_datum_t)0xffffffffu)

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

/* Builds the filter in *out (released by the caller). 0 or -errno. */
static int
filter_build(bool allow_unix_sockets, scmp_filter_ctx *out)
{
	static const int blocked_families[] = { AF_PACKET, AF_VSOCK };
	static const char *const blocked_calls[] = {
		"io_uring_setup", "io_uring_enter", "io_uring_register",
		"ptrace",
	};
	static const char *const absent_calls[] = {
		"keyctl", "add_key", "request_key",
	};
	scmp_filter_ctx ctx;
	size_t i;
	int rc;

	ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (ctx == NULL)
		return -ENOMEM;
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
	if (rc < 0)
		goto fail;
	if (!allow_unix_sockets) {
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM),
		    SCMP_SYS(socket), 1,
		    SCMP_A0(SCMP_CMP_MASKED_EQ, FILTER_INT_MASK, AF_UNIX));
		if (rc < 0)
			goto fail;
	}
	rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 2,
	    SCMP_A0(SCMP_CMP_MASKED_EQ, FILTER_INT_MASK, AF_NETLINK),
	    SCMP_A2(SCMP_CMP_NE, NETLINK_ROUTE));
	if (rc < 0)
		goto fail;
	for (i = 0; i < sizeof(blocked_families) / sizeof(blocked_families[0]); i++) {
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM),
		    SCMP_SYS(socket), 1,
		    SCMP_A0(SCMP_CMP_MASKED_EQ, FILTER_INT_MASK,
		    (scmp_datum_t)blocked_families[i]));
		if (rc < 0)
			goto fail;
	}
	for (i = 0; i < sizeof(blocked_calls) / sizeof(blocked_calls[0]); i++) {
		int nr = seccomp_syscall_resolve_name(blocked_calls[i]);

		/* A kernel/libseccomp without io_uring simply lacks it. */
		if (nr == __NR_SCMP_ERROR)
			continue;
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
		if (rc < 0)
			goto fail;
	}
	for (i = 0; i < sizeof(absent_calls) / sizeof(absent_calls[0]); i++) {
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS),
		    seccomp_syscall_resolve_name(absent_calls[i]), 0);
		if (rc < 0)
			goto fail;
	}
	*out = ctx;
	return 0;
fail:
	seccomp_release(ctx);
	return rc;
}

int
pc_filter_install(bool allow_unix_sockets)
{
	scmp_filter_ctx ctx;
	int rc;

	/* No new privileges: set explicitly, not only as libseccomp's
	 * default, so a setuid binary in the sandbox gains nothing. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -errno;
	rc = filter_build(allow_unix_sockets, &ctx);
	if (rc < 0)
		return rc;
	rc = seccomp_load(ctx);
	seccomp_release(ctx);
	return rc < 0 ? rc : 0;
}

int
pc_filter_check(bool allow_unix_sockets)
{
	int fd;

	if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) != 2 ||
	    prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		return -EPERM;
	/* Some filter is not necessarily ours (a caller already filtered
	 * by its container or service manager): two of our refusals must
	 * answer.  keyctl: ENOSYS (only ours, or a kernel without keys,
	 * where there is nothing to refuse); socket(AF_UNIX): EPERM. */
	if (syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID,
	    KEY_SPEC_SESSION_KEYRING, 0) != -1 || errno != ENOSYS)
		return -EPERM;
	if (!allow_unix_sockets) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0) {
			close(fd);
			return -EPERM;
		}
		if (errno != EPERM)
			return -EPERM;
	}
	return 0;
}

int
pc_filter_export(bool allow_unix_sockets, int fd)
{
	scmp_filter_ctx ctx;
	int rc;

	rc = filter_build(allow_unix_sockets, &ctx);
	if (rc < 0)
		return rc;
	rc = seccomp_export_bpf(ctx, fd);
	seccomp_release(ctx);
	return rc < 0 ? rc : 0;
}

int
pc_filter_memfd(bool allow_unix_sockets)
{
	int fd, rc;

	fd = memfd_create("portcullis-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = pc_filter_export(allow_unix_sockets, fd);
	if (rc == 0 && lseek(fd, 0, SEEK_SET) != 0)
		rc = -errno;
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return fd;
}
