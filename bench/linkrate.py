#!/usr/bin/env python3
"""A network link of a given bandwidth between two loopback endpoints, for benchmarks.

  linkrate.py --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT --rate BYTES_PER_S [--pidfile F]

Relays every TCP connection to the upstream byte for byte. All connections share the link: the
bytes each way go through one token bucket per direction (bursts of at most 256 KiB), as on a
real link where one client's transfers share its bandwidth. Stdlib only, loopback only.
bench/push.sh puts one between skopeo and the registry it pushes to (directly, or through regslim)
and one between regslim and that registry (LINK_RATE), to measure pushes over a network instead
of over loopback's memory copies.
"""
import argparse
import os
import socket
import sys
import threading
import time

CHUNK = 256 * 1024


class Bucket:
    """Tokens are bytes; rate per second, at most CHUNK in hand."""

    def __init__(self, rate):
        self.rate = float(rate)
        self.tokens = float(CHUNK)
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n):
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(float(CHUNK), self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= n:
                    self.tokens -= n
                    return
                wait = (n - self.tokens) / self.rate
            time.sleep(wait)


def pump(src, dst, bucket):
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(view)
            if n == 0:
                break
            bucket.take(n)
            dst.sendall(view[:n])
    except OSError:
        pass
    for s in (dst, src):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(conn, upstream, up_bucket, down_bucket):
    try:
        out = socket.create_connection(upstream, timeout=10)
        out.settimeout(None)
    except OSError:
        conn.close()
        return
    for s in (conn, out):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = threading.Thread(target=pump, args=(out, conn, down_bucket), daemon=True)
    t.start()
    pump(conn, out, up_bucket)
    t.join()
    conn.close()
    out.close()


def hostport(s):
    host, port = s.rsplit(":", 1)
    if not host.startswith("127."):
        sys.exit("linkrate.py: loopback only, not " + host)
    return host, int(port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--rate", type=int, required=True, help="bytes per second, each way")
    ap.add_argument("--pidfile")
    a = ap.parse_args()
    up_bucket, down_bucket = Bucket(a.rate), Bucket(a.rate)
    srv = socket.create_server(hostport(a.listen), reuse_port=False)
    if a.pidfile:
        with open(a.pidfile, "w") as f:
            f.write(str(os.getpid()))
    upstream = hostport(a.upstream)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, upstream, up_bucket, down_bucket), daemon=True).start()


if __name__ == "__main__":
    main()
