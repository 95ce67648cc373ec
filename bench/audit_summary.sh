#!/bin/sh
# Times `portcullis audit summary` and `audit suggest` over 1M realistic
# audit records (request + exchange pairs, refusals, report-mode
# would_deny, close records, seq/mac tails), plain and gzip'd.
# usage: sh bench/audit_summary.sh [BUILD_DIR] [RECORDS]
# Writes bench/results/audit_summary-DATE.txt.  Not a test: no thresholds.
set -eu
BUILD=${1:-build}
N=${2:-1000000}
P=$BUILD/bin/portcullis
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
python3 - "$N" > "$D/audit.log" <<'PY'
import random, sys
random.seed(13)
n = int(sys.argv[1])
hosts = ["pypi.org", "files.pythonhosted.org", "registry.npmjs.org", "github.com",
         "codeload.github.com", "objects.githubusercontent.com"] + \
        ["h%d.cdn%d.example.com" % (i, i % 50) for i in range(2000)]
bad = ["evil%d.example.net" % i for i in range(300)] + ["10.0.0.%d" % i for i in range(20)]
w = sys.stdout.write
seq = 0
i = 0
while seq < n:
    i += 1
    sess = "s-%04x" % (i % 200)
    env, ph = ("web", "agent") if i % 3 else ("build", "setup")
    ts = "2026-12-02T%02d:%02d:%02d.%03dZ" % (i // 3600000 % 24, i // 60000 % 60, i // 1000 % 60, i % 1000)
    cid = "7f3a%012x" % i
    r = random.random()
    seq += 1
    if r < 0.8:
        host = random.choice(hosts)
        port = 443
        w('{"ts":"%s","event":"request","id":"%s","session":"%s","env":"%s","phase":"%s","client":"127.0.0.1:%d","proto":"connect","method":"CONNECT","host":"%s","port":%d,"decision":"allow","reason":"allowed","rule":"portcullis.ini:31 [env web agent] allow @common-dependencies","addr":"151.101.0.223:443","status":200,"seq":%d,"mac":"%064x"}\n'
          % (ts, cid, sess, env, ph, 40000 + i % 20000, host, port, seq, seq))
        seq += 1
        w('{"ts":"%s","event":"exchange","id":"%s","n":1,"session":"%s","env":"%s","phase":"%s","proto":"connect","method":"CONNECT","host":"%s","port":%d,"status":200,"bytes_up":%d,"bytes_down":%d,"duration_ms":%d,"error":null,"seq":%d,"mac":"%064x"}\n'
          % (ts, cid, sess, env, ph, host, port, random.randint(100, 5000), random.randint(1000, 10**6), random.randint(1, 900), seq, seq))
    elif r < 0.9:
        host = random.choice(bad)
        reason = "address_blocked" if host.startswith("10.") else random.choice(["not_allowed", "not_allowed", "denied", "port_not_allowed"])
        w('{"ts":"%s","event":"request","id":"%s","session":"%s","env":"%s","phase":"%s","client":"127.0.0.1:%d","proto":"http","method":"GET","host":"%s","port":80,"decision":"deny","reason":"%s","rule":"default","status":403,"seq":%d,"mac":"%064x"}\n'
          % (ts, cid, sess, env, ph, 40000 + i % 20000, host, reason, seq, seq))
    elif r < 0.95:
        host = random.choice(bad[:300])
        w('{"ts":"%s","event":"request","id":"%s","session":"%s","env":"%s","phase":"%s","client":"127.0.0.1:%d","proto":"connect","method":"CONNECT","host":"%s","port":443,"decision":"allow","reason":"report_only","would_deny":"not_allowed","rule":"default","status":200,"seq":%d,"mac":"%064x"}\n'
          % (ts, cid, sess, env, ph, 40000 + i % 20000, host, seq, seq))
    else:
        w('{"ts":"%s","event":"close","id":"%s","session":"%s","host":"pypi.org","port":443,"bytes_up":1234,"bytes_down":56789,"duration_ms":812,"error":null,"seq":%d,"mac":"%064x"}\n'
          % (ts, cid, sess, seq, seq))
PY
gzip -k -1 "$D/audit.log"
lines=$(wc -l < "$D/audit.log")
size=$(du -h "$D/audit.log" | cut -f1)
gzsize=$(du -h "$D/audit.log.gz" | cut -f1)
out=bench/results/audit_summary-$(date -u +%Y-%m-%d).txt
t() {
	python3 -c 'import subprocess, sys, time
s = time.monotonic()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
print("%.2f" % (time.monotonic() - s))' "$@"
}
{
	echo "# bench/audit_summary.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $($P --version)"
	echo "# $lines records, $size plain, $gzsize gzip -1"
	echo "summary --by host (plain):    $(t "$P" audit summary "$D/audit.log") s"
	echo "summary --by host (gz):       $(t "$P" audit summary "$D/audit.log.gz") s"
	echo "summary --by session --json:  $(t "$P" audit summary --by session --json "$D/audit.log") s"
	echo "suggest (plain):              $(t "$P" audit suggest "$D/audit.log") s"
	echo "suggest (gz):                 $(t "$P" audit suggest "$D/audit.log.gz") s"
} | tee "$out"
