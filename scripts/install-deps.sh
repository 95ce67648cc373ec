#!/bin/sh
# Installs the Debian packages portcullis needs to build, test, run and
# package (make deb) that are missing -- only those, with --no-upgrade: a
# package that is already installed is never upgraded, and nothing else is
# (apt upgrades an installed package only where a new one's dependencies
# require it).  Idempotent: when everything is present it changes nothing
# (no apt-get update either) and exits 0.
#
# llhttp: bookworm only ships node-llhttp 8.1, which accepts known
# request-smuggling inputs.  We take libllhttp-dev 9.2.1 from trixie with an
# apt pin that admits nothing else from that suite (libllhttp9.2 depends only
# on libc6).
#
# python3-pip, python3-venv, python3-requests, nodejs: the real clients of
# tests/integration/test_run_matrix.py (pip --user and in a venv, requests;
# node and npm -- Debian's nodejs ships without npm, which is the package
# "npm"; a nodejs from NodeSource brings its own and conflicts with it).
# python3-socks: a SOCKS5 client library for tests/integration/test_socks5.py.
# prometheus: for its promtool, which tests/integration/test_metrics.py runs
# on /metrics (`promtool check metrics`); the daemon itself is not used.
# logrotate: the real rotation of tests/integration/test_audit_chain.py.
# openssh-server: the one package that may move an installed one along: it
# depends on openssh-client of exactly its own version, and the archive keeps
# only the newest bookworm point release, so an image with an older client
# gets that client upgraded (same upstream 9.2p1, a Debian security update).
# Without sshd the ssh tests in the sandbox could not run at all.
set -eu

PKGS="build-essential cmake pkg-config git
libuv1-dev libc-ares-dev libinih-dev libssl-dev libllhttp-dev
libpsl-dev libidn2-dev libseccomp-dev zlib1g-dev bubblewrap
curl wget python3 openssl iproute2 procps
clang libclang-rt-14-dev valgrind
openssh-client openssh-server
python3-pip python3-venv python3-requests nodejs
python3-socks prometheus logrotate bind9-dnsutils
dpkg-dev debhelper"

# Checkers of the Debian package: installed only when that upgrades nothing
# already installed (lintian's Perl modules want a newer perl than a fresh
# bookworm image may carry; we never upgrade what is there to get them).
# Without them, make deb / check-deb.sh say which check they skipped.
# (Tried on a run that installs something; a complete machine exits early.)
OPTIONAL="lintian systemd"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done
# npm: Debian's package, unless an npm is already there (NodeSource's
# nodejs carries its own and conflicts with Debian's npm).
command -v npm >/dev/null 2>&1 || missing="$missing npm"
llhttp_ok=0
if dpkg-query -W -f='${Version}' libllhttp-dev 2>/dev/null | grep -q '^9\.[2-9]'; then
	llhttp_ok=1
fi
if [ -z "$missing" ] && [ "$llhttp_ok" = 1 ]; then
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing; run as root" >&2
	exit 1
fi

src=/etc/apt/sources.list.d/portcullis-trixie.sources
pin=/etc/apt/preferences.d/portcullis-llhttp
if [ ! -f "$src" ]; then
	cat > "$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
if [ ! -f "$pin" ]; then
	cat > "$pin" <<'PIN'
# portcullis: only llhttp may come from trixie; nothing else is upgraded from it.
Package: *
Pin: release n=trixie
Pin-Priority: -1

Package: libllhttp-dev libllhttp9.2
Pin: release n=trixie
Pin-Priority: 500
PIN
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
if [ -n "$missing" ]; then
	# shellcheck disable=SC2086
	apt-get install -y -q --no-upgrade --no-install-recommends $missing
fi
for p in $OPTIONAL; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" && continue
	# "Inst NAME [OLDVERSION] ..." in a simulation = an upgrade of NAME.
	if apt-get -s install --no-upgrade --no-install-recommends "$p" 2>/dev/null |
		grep -q '^Inst [^ ]* \['; then
		echo "install-deps: not installing $p: it would upgrade installed packages" >&2
		continue
	fi
	apt-get install -y -q --no-upgrade --no-install-recommends "$p"
done
# An installed libllhttp-dev older than 9.2 is the one installed package we
# do upgrade (from trixie, as pinned above), and only it.
case " $missing " in
*" libllhttp-dev "*) ;;
*)	if [ "$llhttp_ok" != 1 ]; then
		apt-get install -y -q --no-install-recommends --only-upgrade \
			libllhttp-dev libllhttp9.2
	fi ;;
esac
dpkg-query -W -f='${Version}\n' libllhttp-dev | grep -q '^9\.[2-9]' || {
	echo "install-deps: libllhttp-dev >= 9.2 not installed" >&2
	exit 1
}
