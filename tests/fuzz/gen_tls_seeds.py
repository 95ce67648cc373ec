#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_tls into corpus_tls/: real ClientHellos
from Python's ssl module (OpenSSL) on memory BIOs, re-framed variants, and
non-TLS bytes.  Run from anywhere; the output is committed."""
import os
import ssl

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus_tls")


def hello(version, sni):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = version
    ctx.maximum_version = version
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def reframe(rec, n):
    hs = rec[5:]
    out = b""
    step = (len(hs) + n - 1) // n
    for i in range(0, len(hs), step):
        part = hs[i:i + step]
        out += bytes([22, 3, 1, len(part) >> 8, len(part) & 255]) + part
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {
        "tls13_sni": hello(ssl.TLSVersion.TLSv1_3, "pypi.org"),
        "tls12_sni": hello(ssl.TLSVersion.TLSv1_2, "example.com"),
        "tls13_nosni": hello(ssl.TLSVersion.TLSv1_3, None),
        "http_get": b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "sslv2": b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10",
    }
    seeds["tls13_3records"] = reframe(seeds["tls13_sni"], 3)
    seeds["tls12_7records"] = reframe(seeds["tls12_sni"], 7)
    seeds["tls13_ccs_after"] = seeds["tls13_sni"] + b"\x14\x03\x03\x00\x01\x01"
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
