#!/bin/sh
# Checks the dependency rule of docs/design.md §2: every #include "..." of a
# source directory names a header of the same directory or of one it may
# depend on.  The arrows point down only:
#   cli -> sandbox -> proxy -> conf;  cli, sandbox, proxy, conf -> lib;
#   bridge -> lib;  lib -> (libc, libseccomp only).
# Prints each upward or sideways include as FILE: HEADER (DIR) and exits 1;
# exits 0 when there is none.  Generated headers (version.h) are allowed.
#   usage: scripts/check-arrows.sh [SOURCE_ROOT]
set -u
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root" || exit 2

allowed() {	# allowed FROM_DIR TO_DIR
	case "$1:$2" in
	cli:cli|cli:sandbox|cli:proxy|cli:conf|cli:lib) return 0 ;;
	sandbox:sandbox|sandbox:proxy|sandbox:conf|sandbox:lib) return 0 ;;
	proxy:proxy|proxy:conf|proxy:lib) return 0 ;;
	conf:conf|conf:lib) return 0 ;;
	bridge:bridge|bridge:lib) return 0 ;;
	lib:lib) return 0 ;;
	esac
	return 1
}

bad=0
for dir in cli sandbox proxy conf lib bridge; do
	for f in "$dir"/*.c "$dir"/*.h; do
		[ -f "$f" ] || continue
		for h in $(sed -n 's/^[ \t]*#[ \t]*include[ \t]*"\([^"]*\)".*/\1/p' "$f"); do
			[ "$h" = version.h ] && continue
			to=
			for d in cli sandbox proxy conf lib bridge; do
				if [ -f "$d/$h" ]; then
					to=$d
					break
				fi
			done
			if [ -z "$to" ]; then
				echo "$f: $h (no such header in the tree)"
				bad=1
			elif ! allowed "$dir" "$to"; then
				echo "$f: $h ($to: $dir may not depend on $to)"
				bad=1
			fi
		done
	done
done
[ "$bad" = 0 ] && echo "arrows: every include points down (cli > sandbox > proxy > conf > lib; bridge > lib)"
exit "$bad"
