#!/usr/bin/env python3
"""[proxy] workers = N: several event loops share the listener; decisions,
reloads and the audit log stay whole."""
import signal
import threading

import harness as h

N_CLIENTS = 8
REQS_PER_CLIENT = 10


def test_two_workers_share_the_load_and_the_log():
    o = h.Origin("origin", host="127.0.0.2")
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = a.example.test=127.0.0.2, b.example.test=127.0.0.2\n\n"
        "[env default agent]\nallow = a.example.test:%d\n" % o.port,
        proxy_extra="workers = 2\n"))
    results = []
    lock = threading.Lock()

    def client(i):
        for k in range(REQS_PER_CLIENT):
            host = "a.example.test" if k % 2 == 0 else "b.example.test"
            r = h.raw_get(p.port, host, o.port, "/c%d/%d" % (i, k))
            with lock:
                results.append((host, r))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(N_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    h.eq(len(results), N_CLIENTS * REQS_PER_CLIENT, "answers")
    for host, (status, reason) in results:
        if host == "a.example.test":
            h.eq((status, reason), (200, None), "allowed request")
        else:
            h.eq((status, reason), (403, "not_allowed"), "refused request")
    total = N_CLIENTS * REQS_PER_CLIENT
    reqs = p.wait_records("request", total, timeout=10)
    h.eq(len(reqs), total, "request records (each a whole JSON line)")
    # Conn ids carry their worker's prefix: both loops served clients.
    prefixes = {r["id"][:8] for r in reqs}
    h.eq(len(prefixes), 2, "workers that served conns (id prefixes %r)" % prefixes)
    h.eq(len(o.connections), total // 2, "origin connections (allowed only)")

    # A reload reaches every worker: b.example.test becomes allowed.
    with open(p.config_path) as f:
        text = f.read()
    text = text.replace("allow = a.example.test:%d" % o.port,
                        "allow = a.example.test:%d, b.example.test:%d" % (o.port, o.port))
    with open(p.config_path, "w") as f:
        f.write(text)
    p.send_signal(signal.SIGHUP)
    p.wait_records("config", 2)
    statuses = [h.raw_get(p.port, "b.example.test", o.port, "/after/%d" % i)[0]
                for i in range(20)]
    h.eq(statuses, [200] * 20, "b.example.test after the reload, on every worker")
    reqs = p.wait_records("request", total + 20, timeout=10)
    after = reqs[total:]
    h.eq(len({r["id"][:8] for r in after}), 2,
         "workers that decided under the new config")
    p.stop()
    # Exactly one start and one stop record, stop last (after every close).
    recs = p.audit_records()
    h.eq([r["event"] for r in recs].count("start"), 1, "start records")
    h.eq([r["event"] for r in recs].count("stop"), 1, "stop records")
    h.eq(recs[-1]["event"], "stop", "last record")


def test_workers_auto_is_accepted():
    o = h.Origin("origin", host="127.0.0.2")
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = a.example.test=127.0.0.2\n\n"
        "[env default agent]\nallow = a.example.test:%d\n" % o.port,
        proxy_extra="workers = auto\n"))
    h.eq(h.raw_get(p.port, "a.example.test", o.port, "/x"), (200, None), "request")
    p.stop()


if __name__ == "__main__":
    h.run(globals())
