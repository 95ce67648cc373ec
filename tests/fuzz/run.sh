#!/bin/sh
# Runs every libFuzzer harness for SECONDS each, starting from the committed
# seed corpus, and fails if any of them finds a crash, leak or timeout.
#   usage: tests/fuzz/run.sh BUILD_DIR SECONDS
# BUILD_DIR is a build configured with -DPORTCULLIS_FUZZ=ON (top level) or
# from tests/fuzz directly (see CMakeLists.txt).  New corpus entries and
# crash artifacts go to a temporary directory, which is printed and kept
# when something fails.
set -u

if [ $# -ne 2 ]; then
	echo "usage: $0 BUILD_DIR SECONDS" >&2
	exit 2
fi
build=$1
secs=$2
case $secs in
''|*[!0-9]*) echo "$0: SECONDS must be a number" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-fuzz.XXXXXX")
status=0

for pair in fuzz_host:host fuzz_tls:tls fuzz_request:request fuzz_config:config \
    fuzz_control:control fuzz_socks:socks fuzz_auditscan:auditscan \
    fuzz_dnsquery:dnsquery fuzz_auditverify:auditverify; do
	name=${pair%%:*}
	kind=${pair#*:}
	bin=
	for cand in "$build/bin/$name" "$build/tests/fuzz/$name" "$build/$name"; do
		if [ -x "$cand" ]; then
			bin=$cand
			break
		fi
	done
	if [ -z "$bin" ]; then
		echo "$0: $name not found under $build" >&2
		status=1
		continue
	fi
	case $bin in /*) ;; *) bin=$(pwd)/$bin ;; esac
	# Extra read-only seed directories (libFuzzer writes only to the first).
	extra=
	case $kind in
	config) extra=$root/tests/unit/configs ;;
	esac
	mkdir -p "$work/$name/corpus" "$work/$name/artifacts"
	echo "== $name for ${secs}s"
	# The outer timeout is a backstop against a hang libFuzzer misses.
	# cwd: an empty directory, so that what a config's relative
	# `include = *.ini` finds does not depend on where we were started.
	mkdir -p "$work/$name/cwd"
	(cd "$work/$name/cwd" && timeout $((secs + 120)) "$bin" \
		-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-max_len=20000 -print_final_stats=1 \
		-dict="$here/$kind.dict" \
		-artifact_prefix="$work/$name/artifacts/" \
		"$work/$name/corpus" "$here/corpus_$kind" ${extra:+"$extra"} \
		</dev/null >"$work/$name/log" 2>&1)
	rc=$?
	tail -n 15 "$work/$name/log"
	if [ $rc -ne 0 ] || [ -n "$(ls -A "$work/$name/artifacts")" ]; then
		echo "$0: $name FAILED (exit $rc); log and artifacts in $work/$name" >&2
		status=1
	else
		echo "== $name OK"
	fi
done

if [ $status -eq 0 ]; then
	rm -rf "$work"
fi
exit $status
