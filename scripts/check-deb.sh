#!/bin/sh
# Installs the Debian package built by `make deb` and checks it as a user of
# it would (.ci/run calls this; as root):  scripts/check-deb.sh DEB
#   dpkg -i; portcullis --version; portcullis check on the conffile;
#   systemd-analyze verify on the unit (where the tool exists);
#   `portcullis run` with the installed bridge; the daemon started as the
#   unit would start it (user portcullis, the packaged config) answering
#   `portcullis ctl status` on /run/portcullis/control.sock.
# Afterwards the package is purged again, unless it was installed before.
set -eu

deb=${1:?usage: check-deb.sh DEB}
[ "$(id -u)" = 0 ] || { echo "check-deb: needs root (dpkg -i)" >&2; exit 1; }

was_installed=0
if dpkg-query -W -f='${Status}' portcullis 2>/dev/null | grep -q "ok installed"; then
	was_installed=1
fi
tmp=$(mktemp -d /tmp/portcullis-check-deb.XXXXXX)
serve_pid=
made_run=0
made_log=0
made_state=0
cleanup() {
	if [ -n "$serve_pid" ]; then
		kill "$serve_pid" 2>/dev/null || true
		wait "$serve_pid" 2>/dev/null || true
	fi
	[ "$made_run" = 1 ] && rm -rf /run/portcullis
	[ "$made_state" = 1 ] && rm -rf /var/lib/portcullis
	if [ -f "$tmp/owners" ]; then
		while read -r d own mode; do
			[ -d "$d" ] && chown "$own" "$d" && chmod "$mode" "$d"
		done <"$tmp/owners"
	fi
	if [ "$was_installed" = 0 ]; then
		dpkg --purge portcullis >/dev/null 2>&1 || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }

echo "check-deb: dpkg -i $deb"
dpkg -i "$deb"

echo "check-deb: portcullis --version"
/usr/bin/portcullis --version

echo "check-deb: portcullis check -c /etc/portcullis/portcullis.ini"
/usr/bin/portcullis check -c /etc/portcullis/portcullis.ini
dpkg-query -W -f='${Conffiles}\n' portcullis | grep -q ' /etc/portcullis/portcullis.ini ' ||
	fail "/etc/portcullis/portcullis.ini is not a conffile"
getent passwd portcullis >/dev/null || fail "postinst did not create user portcullis"

unit=/lib/systemd/system/portcullis.service
if command -v systemd-analyze >/dev/null 2>&1; then
	echo "check-deb: systemd-analyze verify $unit"
	systemd-analyze verify "$unit"
else
	echo "check-deb: skip systemd-analyze verify: systemd-analyze is not installed"
fi

echo "check-deb: portcullis run with the installed bridge"
out=$(cd "$tmp" && env -u PORTCULLIS_BRIDGE PATH=/usr/bin:/bin \
	/usr/bin/portcullis run --audit-log "$tmp/run.jsonl" -- \
	sh -c 'echo ok; tr "\0" "\n" < /proc/1/cmdline') ||
	fail "portcullis run exited $?"
[ "$(echo "$out" | head -n 1)" = ok ] || fail "COMMAND did not run: $out"
echo "$out" | grep -qx /usr/libexec/portcullis/portcullis-bridge ||
	fail "the sandbox did not run /usr/libexec/portcullis/portcullis-bridge: $out"

# The daemon as the unit runs it (User=, UMask=, the directories systemd's
# RuntimeDirectory=/LogsDirectory=/StateDirectory= would make), for a few
# seconds.
echo "check-deb: portcullis serve as user portcullis, ctl status"
# As systemd does for those directives, a directory that exists already
# (a root `portcullis run` makes /var/lib/portcullis for its own log) is
# given to the user; its owner and mode are put back afterwards.
own_dir() {
	if [ ! -d "$1" ]; then
		install -d -o portcullis -g portcullis -m 0755 "$1"
		return 0
	fi
	echo "$1 $(stat -c '%u:%g %a' "$1")" >>"$tmp/owners"
	chown portcullis:portcullis "$1"
	chmod u+rwx "$1"
	return 1
}
own_dir /run/portcullis && made_run=1
own_dir /var/log/portcullis && made_log=1
own_dir /var/lib/portcullis && made_state=1
setpriv --reuid=portcullis --regid=portcullis --init-groups sh -c \
	'umask 0077; exec /usr/bin/portcullis serve -c /etc/portcullis/portcullis.ini' \
	2>"$tmp/serve.err" &
serve_pid=$!
i=0
while [ ! -S /run/portcullis/control.sock ]; do
	i=$((i + 1))
	[ "$i" -le 50 ] || { cat "$tmp/serve.err" >&2; fail "no control socket after 5 s"; }
	kill -0 "$serve_pid" 2>/dev/null || { cat "$tmp/serve.err" >&2; fail "serve exited"; }
	sleep 0.1
done
/usr/bin/portcullis ctl status | grep -q '"ok":true' || fail "ctl status"
kill "$serve_pid"
wait "$serve_pid" || fail "serve exited $? on SIGTERM"
serve_pid=
grep -q '"event":"stop"' /var/log/portcullis/audit.jsonl ||
	fail "no stop record in /var/log/portcullis/audit.jsonl"
[ "$made_log" = 0 ] || rm -rf /var/log/portcullis
# The audit chain key the daemon made at first start, 0600, its own.
[ "$(stat -c '%a %U' /var/lib/portcullis/audit.key 2>/dev/null)" = "600 portcullis" ] ||
	fail "no 0600 audit key of user portcullis in /var/lib/portcullis"
[ "$made_state" = 0 ] || rm -rf /var/lib/portcullis
echo "check-deb: all checks passed"
