#!/bin/bash
# bench/run.sh: the one command of issue 6.  Installs the bench-only
# packages (bench/setup.sh), raises the fd limit for the bench's processes,
# builds portcullis (RelWithDebInfo) and the load tool into the bench build
# dir, then runs bench/run.py (all arguments are passed through).
#   bench/run.sh                         full run -> bench/results/YYYY-MM-DD.md
#   bench/run.sh --compare OLD.md        full run, then new/old ratio per row
#   bench/run.sh --compare OLD.md --against NEW.md   compare two files only
#   bench/run.sh --rows 1,3 --runs 1     a quick subset
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${PORTCULLIS_BENCH_BUILD:-$ROOT/build-bench}
cd "$ROOT"

for a in "$@"; do
    if [ "$a" = "--against" ]; then
        exec python3 bench/run.py "$@"
    fi
done

sh bench/setup.sh "$BUILD/squid-openssl"

# Row 7 holds 10,000 tunnels: the proxy needs two fds per tunnel.  Raise the
# soft limit to the hard limit (or 65536) for this shell and its children only.
hard=$(ulimit -Hn)
want=65536
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
ulimit -n "$want"
if [ "$want" -lt 20010 ]; then
    echo "bench: note: fd hard limit is $hard; 10,000 tunnels need ~20,010 fds in the proxy" >&2
fi

mkdir -p "$BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$BUILD/cmake.log" 2>&1 ||
    { echo "bench: cmake configure failed, see $BUILD/cmake.log" >&2; }
if ! cmake --build "$BUILD" -j2 --target portcullis portcullis-bridge >"$BUILD/build.log" 2>&1; then
    echo "bench: building portcullis failed (see $BUILD/build.log); it is left out" >&2
    rm -f "$BUILD/bin/portcullis"
fi
make -s -C bench/loadtool OUT="$BUILD"

exec timeout --kill-after=10 900 python3 bench/run.py --build "$BUILD" "$@"
