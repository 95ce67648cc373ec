#!/bin/sh
# Fetches the source of the inih that is installed (libinih1) from Debian's
# source package and unpacks it into DEST, so that the config fuzzer can
# compile inih's parser into the target (instrumented) instead of linking the
# uninstrumented shared library.  inih is not vendored in the repository.
#   usage: scripts/fetch-inih-source.sh DEST
# DEST receives the unpacked, Debian-patched source tree (DEST/ini.c,
# DEST/meson.build, DEST/debian/...), DEST/.portcullis-version (the version
# unpacked) and DEST/.portcullis-installed (the libinih1 version installed).
# Idempotent: when DEST was made for the installed version, nothing is done.
#
# The installed version's source is taken when the archive still serves it.
# When it does not (a mirror that keeps only the newest source files), the
# nearest newer version any deb-src entry offers is taken instead and a
# warning says so: the fuzzer then tests that version's parser.
#
# Needs deb-src entries.  When the installed version is not offered and we
# run as root, this adds /etc/apt/sources.list.d/portcullis-src.sources
# (deb-src only: bookworm and trixie main) and runs apt-get update.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 DEST" >&2
	exit 2
fi
dest=$1

# The source package (Debian calls it "libinih") and version libinih1 was
# built from.
pkg=$(dpkg-query -W -f='${source:Package}' libinih1 2>/dev/null || true)
ver=$(dpkg-query -W -f='${source:Version}' libinih1 2>/dev/null || true)
if [ -z "$pkg" ] || [ -z "$ver" ]; then
	echo "$0: libinih1 is not installed (scripts/install-deps.sh)" >&2
	exit 1
fi
if [ -f "$dest/ini.c" ] && [ -f "$dest/.portcullis-installed" ] &&
    [ "$(cat "$dest/.portcullis-installed")" = "$ver" ]; then
	exit 0
fi

srcfile=/etc/apt/sources.list.d/portcullis-src.sources
srctext='# portcullis: Debian source packages (scripts/fetch-inih-source.sh)
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg'
if [ "$(id -u)" = 0 ] &&
    ! printf '%s\n' "$srctext" | cmp -s - "$srcfile" 2>/dev/null; then
	printf '%s\n' "$srctext" >"$srcfile"
	apt-get update -q >&2
fi
if ! apt-cache showsrc "$pkg" 2>/dev/null | grep -q '^Version: '; then
	echo "$0: no deb-src entry offers $pkg; as root, add one" \
	    "(e.g. $srcfile) and run apt-get update" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-inih.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"	# apt downloads as _apt where it can

# The installed version first, then the others offered, newest first.
cands="$ver $(apt-cache showsrc "$pkg" 2>/dev/null |
    sed -n 's/^Version: //p' | sort -u -r -V | grep -vxF "$ver" || true)"
got=
for v in $cands; do
	# --download-only: apt checks the files against the signed Sources
	# index; we unpack them ourselves, so no build dependency is needed.
	if (cd "$work" && apt-get source -q --download-only "$pkg=$v" >&2); then
		got=$v
		break
	fi
	echo "$0: $pkg $v: source not downloadable" >&2
	rm -f "$work"/*
done
if [ -z "$got" ]; then
	echo "$0: no source of $pkg could be downloaded" >&2
	exit 1
fi
if [ "$got" != "$ver" ]; then
	echo "$0: WARNING: $pkg $ver is installed but only the source of" \
	    "$got could be had; the fuzzer compiles $got" >&2
fi
dsc=$(ls "$work"/"$pkg"_*.dsc)
rm -rf "$dest.tmp"
mkdir -p "$(dirname "$dest")"
# dpkg-source applies debian/patches, so DEST is what Debian built from.
(cd "$work" && dpkg-source --no-check -q -x "$dsc" "$dest.tmp" >&2)
if [ ! -f "$dest.tmp/ini.c" ] || [ ! -f "$dest.tmp/meson.build" ]; then
	echo "$0: unpacked source has no ini.c or meson.build" >&2
	exit 1
fi
printf '%s\n' "$got" >"$dest.tmp/.portcullis-version"
printf '%s\n' "$ver" >"$dest.tmp/.portcullis-installed"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$0: $pkg $got unpacked into $dest" >&2
