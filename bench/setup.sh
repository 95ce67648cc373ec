#!/bin/sh
# bench/setup.sh: install the bench-only Debian packages (idempotent).
# The test suite never needs these; scripts/install-deps.sh stays free of them.
# Services these packages ship are NOT started: the bench runs its own
# instances with its own configs on loopback.
set -eu

PKGS="squid tinyproxy haproxy nginx-light wrk apache2-utils httperf hyperfine \
      linux-perf valgrind procps openssl gcc make libssl-dev \
      ripgrep socat strace"
# ripgrep, socat: what @anthropic-ai/sandbox-runtime needs (bench/peers);
# strace: row 9 reads portcullis run's bwrap argv once (bwrap-plan).
# The peers themselves come from the npm registry (bench/peers/install.sh)
# with whatever npm the machine has (Debian's `npm` package would fight a
# nodesource nodejs, so it is not installed here); without npm they are
# left out.

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "bench/setup.sh: all bench packages present"
    sh "$(dirname "$0")/peers/install.sh"
    exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Keep package post-install scripts from starting system daemons (squid,
# tinyproxy, nginx) that would grab ports 3128/8888/80 during the bench.
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi
cleanup() { [ "$created_policy" -eq 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d; return 0; }
trap cleanup EXIT

echo "bench/setup.sh: installing:$missing"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
sh "$(dirname "$0")/peers/install.sh"
