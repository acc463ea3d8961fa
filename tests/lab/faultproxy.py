#!/usr/bin/env python3
"""Fault-injecting reverse proxy for regslim's integration tests. Stdlib only, loopback only.

  faultproxy.py --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT (--digest sha256:HEX | --path-suffix S)
                [--mode truncate|corrupt|unavailable|stall|slow] [--stall-s S] [--rate BYTES_PER_S]
                [--while-exists FILE] [--times N] [--log FILE]

Forwards every GET and HEAD to the upstream (a registry, or the lab's S3 endpoint) unchanged
(repeated headers such as several Accept lines kept, Host kept, bodies streamed) and relays the
answer, except for GET requests of the blob --digest (a path ending in /blobs/<digest>), or of a
path ending in --path-suffix (the query aside):
  truncate     when the upstream answers 200 or 206: its status and headers (the right
               Content-Length) and only the first half of the body, then close the connection
  corrupt      when the upstream answers 200 or 206: the whole body with one byte in its middle
               flipped (same length)
  unavailable  503 at once, without asking the upstream (a server that is briefly down)
  stall        the first half of the body, then nothing while the connection stays open, for
               --stall-s seconds (default 60) or until the client closes it; the log line says
               after how many seconds of stall the client gave up ("client closed after 5.1 s")
  slow         the whole body, right, at --rate bytes per second (default 1048576)
With --while-exists FILE the fault applies only while FILE exists (delete it to heal); with
--times N only to the first N matching requests.
One line per request in the log: METHOD PATH STATUS BYTES-SENT [FAULT ...].
"""
import argparse
import http.client
import os
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
       "transfer-encoding", "upgrade", "expect"}
BUF = 64 * 1024
lock = threading.Lock()


def make(a):
    up_host, up_port = a.upstream.rsplit(":", 1)

    def log(line):
        with lock:
            with open(a.log, "a") as f:
                f.write(line + "\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def fault_now(self):
            want = "/blobs/" + a.digest if a.digest else a.path_suffix
            if self.command != "GET" or not self.path.split("?")[0].endswith(want):
                return False
            if a.while_exists is not None and not os.path.exists(a.while_exists):
                return False
            with lock:
                if a.times is not None and a.faults >= a.times:
                    return False
                a.faults += 1
            return True

        def unavailable(self):
            msg = b"faultproxy: unavailable\n"
            self.send_response(503)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            log("%s %s 503 0 FAULT unavailable" % (self.command, self.path))

        def proxy(self):
            fault_here = self.fault_now()
            if fault_here and a.mode == "unavailable":
                return self.unavailable()
            n = int(self.headers.get("Content-Length", "0") or 0)
            body = self.rfile.read(n) if n > 0 else None
            conn = http.client.HTTPConnection(up_host, int(up_port), timeout=60)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in HOP:
                        conn.putheader(k, v)
                conn.endheaders()
                if body:
                    conn.send(body)
                r = conn.getresponse()
            except OSError as e:
                msg = b'{"errors":[{"code":"UNAVAILABLE","message":"faultproxy: upstream down"}]}'
                self.send_response(502)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                log("%s %s 502 0 upstream error %s" % (self.command, self.path, e))
                conn.close()
                return
            fault = fault_here and r.status in (200, 206)
            clen = r.getheader("Content-Length")
            self.send_response_only(r.status, r.reason)
            for k, v in r.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            chunked = clen is None and self.command != "HEAD" and r.status not in (204, 304)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            if fault:
                self.send_header("Connection", "close")
            self.end_headers()
            sent = 0
            note = ""
            if self.command != "HEAD":
                total = int(clen) if clen is not None else None
                cut = fault and a.mode in ("truncate", "stall") and total is not None
                limit = total // 2 if cut else None
                flip = total // 2 if (fault and a.mode == "corrupt" and total is not None) else None
                try:
                    while True:
                        want = BUF if limit is None else min(BUF, limit - sent)
                        if fault and a.mode == "slow":
                            # a tenth of a second's worth at a time, so that a body smaller than
                            # BUF is slow too (not sent whole, then slept on)
                            want = min(want, max(1, int(a.rate / 10)))
                        if want <= 0:
                            break
                        b = r.read(want)
                        if not b:
                            break
                        if flip is not None and sent <= flip < sent + len(b):
                            i = flip - sent
                            b = b[:i] + bytes([b[i] ^ 0xFF]) + b[i + 1:]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b) if chunked else b)
                        sent += len(b)
                        if fault and a.mode == "slow":
                            time.sleep(len(b) / a.rate)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError as e:
                    note = " client error %s" % e
                if fault and a.mode == "stall":
                    note += self.stall()
                if fault:
                    note += " FAULT %s %s sent %d of %s" % (a.mode, a.digest or a.path_suffix, sent, clen)
                    self.close_connection = True
                    if a.mode == "truncate":  # end the connection at once, mid-body
                        try:
                            self.connection.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
            conn.close()
            log("%s %s %d %d%s" % (self.command, self.path, r.status, sent, note))

        def stall(self):
            """Hold the connection, sending nothing, until the client closes it or --stall-s."""
            t0 = time.monotonic()
            while time.monotonic() - t0 < a.stall_s:
                r, _, _ = select.select([self.connection], [], [], 0.05)
                if r:
                    try:
                        gone = self.connection.recv(1, socket.MSG_PEEK) == b""
                    except OSError:
                        gone = True
                    if gone:
                        return " client closed after %.1f s" % (time.monotonic() - t0)
                    time.sleep(0.05)  # a byte from the client (none expected): keep waiting
            return " held %.1f s" % (time.monotonic() - t0)

        do_GET = do_HEAD = proxy

    return Handler


def main():
    ap = argparse.ArgumentParser(description="fault-injecting registry proxy (loopback only)")
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    sel = ap.add_mutually_exclusive_group(required=True)
    sel.add_argument("--digest")
    sel.add_argument("--path-suffix", dest="path_suffix")
    ap.add_argument("--mode", choices=["truncate", "corrupt", "unavailable", "stall", "slow"], default="truncate")
    ap.add_argument("--rate", type=float, default=1048576.0)
    ap.add_argument("--stall-s", dest="stall_s", type=float, default=60.0)
    ap.add_argument("--while-exists", dest="while_exists")
    ap.add_argument("--times", type=int)
    ap.add_argument("--log", default="/dev/stderr")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    if host != "127.0.0.1" or not a.upstream.startswith("127.0.0.1:"):
        sys.exit("faultproxy.py: --listen and --upstream must be 127.0.0.1:PORT")
    a.faults = 0
    if a.digest is not None and (not a.digest.startswith("sha256:") or len(a.digest) != 71):
        sys.exit("faultproxy.py: --digest must be sha256:<64 hex>, got %r" % a.digest)
    srv = ThreadingHTTPServer((host, int(port)), make(a))
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
