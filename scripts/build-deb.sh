#!/bin/sh
# Builds the Debian package: scripts/build-deb.sh OUTDIR [JOBS]  (make deb)
#
# dpkg-buildpackage writes into the source tree (debian/tmp, build-deb/,
# debian/.debhelper ...) and puts its output in the parent directory, so the
# build runs on a copy of the tree in a temp dir: the files git tracks plus
# the untracked ones it does not ignore (outside git: the tree without
# build*/ directories).  The copy has no .git, so the packaged
# `portcullis --version` prints the version only.  Then lintian checks the
# .deb; an error fails the build (warnings are printed).
set -eu

out=${1:?usage: build-deb.sh OUTDIR [JOBS]}
jobs=${2:-2}
src=$(cd "$(dirname "$0")/.." && pwd)

# debian/changelog and project(... VERSION) must agree.
deb_version=$(cd "$src" && dpkg-parsechangelog -S Version)
cmake_version=$(sed -n 's/^project(portcullis VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
if [ "$deb_version" != "$cmake_version" ]; then
	echo "build-deb: debian/changelog says $deb_version," \
		"CMakeLists.txt says $cmake_version" >&2
	exit 1
fi

tmp=$(mktemp -d /tmp/portcullis-deb.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
tree="$tmp/portcullis-$deb_version"
mkdir "$tree"
if git -C "$src" rev-parse --show-toplevel >/dev/null 2>&1 &&
	[ "$(git -C "$src" rev-parse --show-toplevel)" = "$src" ]; then
	# Deleted-but-tracked files are skipped (they are not in the tree).
	(cd "$src" && git ls-files -z --cached --others --exclude-standard |
		xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf -) | tar -xf - -C "$tree"
else
	(cd "$src" && tar --exclude='./build*' -cf - .) | tar -xf - -C "$tree"
fi

echo "build-deb: dpkg-buildpackage -us -uc -b in $tree"
(cd "$tree" && DEB_BUILD_OPTIONS="parallel=$jobs ${DEB_BUILD_OPTIONS:-}" \
	dpkg-buildpackage -us -uc -b)

mkdir -p "$out"
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
changes="$tmp/portcullis_${deb_version}_${arch}.changes"
deb="portcullis_${deb_version}_${arch}.deb"
for f in "$tmp"/*.deb "$tmp"/*.buildinfo "$changes"; do
	cp "$f" "$out/"
done

if command -v lintian >/dev/null 2>&1; then
	echo "build-deb: lintian $out/$deb"
	lintian --fail-on error --info --display-level ">=warning" "$out/$deb"
else
	echo "build-deb: skip lintian: not installed (scripts/install-deps.sh installs it only where that upgrades nothing)"
fi
echo "build-deb: $out/$deb"
