#!/usr/bin/env python3
"""logproxy.py - the logging reverse proxy of regslim's test lab: put it between a client and a
registry (or regslim) to see exactly what the client asks for. 127.0.0.1 only.

  logproxy.py [--listen 127.0.0.1:PORT] [--upstream HOST:PORT] [--log FILE]

Defaults: --listen 127.0.0.1:$LAB_PORT_BASE+80, --upstream 127.0.0.1:$LAB_PORT_BASE,
--log $REGSLIM_LAB/logs/logproxy.jsonl. clients.sh's logproxy_* functions start and stop it.

What it keeps as it came: the method, the path with its query, every request header but the
hop-by-hop ones, repeated ones one line each in their order (distribution answers a manifest
GET whose Accept lines do not name the docker v2s2 type with a schema-1 conversion, so merging or
dropping Accept lines changes the answer), the Host header (upload Locations keep naming the
proxy), and the upstream's status and headers. Bodies are relayed as they arrive, in both
directions, whatever their size: a chunked request body is forwarded chunked, a response without
Content-Length is sent on chunked. When the upstream cannot be reached the client gets 502 with a
registry-style JSON error; when the upstream's body ends early the client's connection is cut,
so a short body never looks complete.

One JSON object per request and line, appended to the log when the response is done; keys
whose value is unknown are left out:
  t                 start time, HH:MM:SS (UTC)
  method, path      as requested (path with its query)
  accept, user-agent, range, content-type, content-length, transfer-encoding,
  docker-distribution-api-version, accept-encoding
                    request headers (repeated lines joined with ", ")
  authorization     the scheme only ("Basic", "Bearer"): never the credentials
  status            the upstream's status, 502 when there was no answer
  resp_type, resp_len, digest, location, www_auth
                    the response's Content-Type, Content-Length, Docker-Content-Digest,
                    Location and WWW-Authenticate
  req_bytes, bytes  body bytes relayed upstream, and back to the client
  ms                milliseconds until the response was done
  error             what went wrong, when something did
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 256 * 1024
UPSTREAM_TIMEOUT_S = 300
# connection-level headers: they describe one hop, not the request
HOP_BY_HOP = frozenset(["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect"])
LOGGED_REQUEST_HEADERS = ("accept", "user-agent", "range", "content-type", "content-length", "transfer-encoding",
                          "docker-distribution-api-version", "accept-encoding")
LOGGED_RESPONSE_HEADERS = (("resp_type", "Content-Type"), ("resp_len", "Content-Length"),
                           ("digest", "Docker-Content-Digest"), ("location", "Location"),
                           ("www_auth", "WWW-Authenticate"))


class ShortBody(Exception):
    pass


class Journal:
    """The JSON-lines log, opened for each line: a test may truncate or remove it at any time."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def write(self, rec):
        line = json.dumps({k: v for k, v in rec.items() if v is not None}) + "\n"
        with self.lock:
            with open(self.path, "a") as f:
                f.write(line)


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 15000)  # set by main()
    journal = None

    def log_message(self, fmt, *args):
        pass

    # ---- request body, as it arrives

    def body_pieces(self):
        """The request body in pieces (de-chunked when it came chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    raise ShortBody("client closed inside a chunked body")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(8192).strip():  # trailers, up to the empty line
                        pass
                    return
                yield from self.read_exactly(size)
                self.rfile.readline(8)  # the CRLF after the chunk
        else:
            yield from self.read_exactly(int(self.headers.get("Content-Length") or 0))

    def read_exactly(self, n):
        while n > 0:
            piece = self.rfile.read(min(n, CHUNK))
            if not piece:
                raise ShortBody("client closed %d bytes before the end of its body" % n)
            n -= len(piece)
            yield piece

    # ---- the exchange

    def relay(self):
        t0 = time.monotonic()
        rec = {"t": time.strftime("%H:%M:%S", time.gmtime()), "method": self.command, "path": self.path}
        for name in LOGGED_REQUEST_HEADERS:
            values = self.headers.get_all(name)
            if values:
                rec[name] = ", ".join(values)
        if self.headers.get("Authorization"):
            rec["authorization"] = self.headers["Authorization"].split(None, 1)[0]
        chunked_in = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        up = http.client.HTTPConnection(*self.upstream, timeout=UPSTREAM_TIMEOUT_S)
        resp = None
        try:
            resp = self.send_upstream(up, chunked_in, rec)
        except Exception as e:  # no answer from the upstream, or the client's body broke off
            rec["error"] = "%s: %s" % (type(e).__name__, e)
            rec["status"] = 502
            self.answer_502(rec["error"])
        if resp is not None:
            rec["status"] = resp.status
            for key, name in LOGGED_RESPONSE_HEADERS:
                rec[key] = resp.getheader(name)
            try:
                self.send_downstream(resp, rec)
            except Exception as e:  # the upstream's body ended early, or the client went away
                rec["error"] = "%s: %s" % (type(e).__name__, e)
                self.close_connection = True
        up.close()
        rec["ms"] = int((time.monotonic() - t0) * 1000)
        self.journal.write(rec)

    def send_upstream(self, up, chunked_in, rec):
        up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():  # items(): every line, repeats included, in order
            lname = name.lower()
            if lname in HOP_BY_HOP or (chunked_in and lname == "content-length"):
                continue
            up.putheader(name, value)
        if chunked_in:
            up.putheader("Transfer-Encoding", "chunked")
        up.endheaders()
        sent = 0
        for piece in self.body_pieces():
            up.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked_in else piece)
            sent += len(piece)
        if chunked_in:
            up.send(b"0\r\n\r\n")
        rec["req_bytes"] = sent
        return up.getresponse()

    def send_downstream(self, resp, rec):
        length = resp.getheader("Content-Length")
        bodyless = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        self.send_response_only(resp.status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        rechunk = length is None and not bodyless
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        if resp.will_close or (resp.getheader("Connection", "").lower() == "close"):
            self.close_connection = True
        self.end_headers()
        relayed = 0
        if not bodyless:
            while True:
                piece = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
                if not piece:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if rechunk else piece)
                relayed += len(piece)
            if rechunk:
                self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        rec["bytes"] = relayed
        if length is not None and not bodyless and relayed != int(length):
            raise ShortBody("upstream sent %d of %s body bytes" % (relayed, length))

    def answer_502(self, why):
        body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "logproxy.py: " + why}]}).encode()
        self.close_connection = True
        try:
            self.send_response_only(502)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = relay


def host_port(text, what):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        sys.exit("logproxy.py: %s must be HOST:PORT, not %r" % (what, text))
    return host, int(port)


def main():
    base = int(os.environ.get("LAB_PORT_BASE") or 15000)
    lab = os.environ.get("REGSLIM_LAB") or os.path.join(os.environ.get("TMPDIR") or "/tmp", "regslim-lab")
    ap = argparse.ArgumentParser(description="logging reverse proxy of regslim's test lab (127.0.0.1 only)")
    ap.add_argument("--listen", default="127.0.0.1:%d" % (base + 80))
    ap.add_argument("--upstream", default="127.0.0.1:%d" % base)
    ap.add_argument("--log", default=os.path.join(lab, "logs", "logproxy.jsonl"))
    opts = ap.parse_args()
    listen = host_port(opts.listen, "--listen")
    if listen[0] not in ("127.0.0.1", "localhost"):
        sys.exit("logproxy.py: --listen must be on 127.0.0.1")
    ProxyHandler.upstream = host_port(opts.upstream, "--upstream")
    log = os.path.abspath(opts.log)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    ProxyHandler.journal = Journal(log)
    srv = ThreadingHTTPServer(("127.0.0.1", listen[1]), ProxyHandler)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
