#!/usr/bin/env python3
"""slowloris.py - the hostile (and the slow but honest) clients of test_slowloris.sh, on raw sockets.

  heads PORT N INTERVAL DURATION [--src ADDR] [--tls CAFILE] [--raw-tls]
      Open N connections and send their request heads one byte every INTERVAL seconds for at most
      DURATION seconds (--tls: after a full TLS handshake; --raw-tls: the bytes of a TLS record
      header and ClientHello, trickled before any handshake). Prints one JSON object: how many
      were answered 503 (refused), how many the server ended (eof, with the seconds after start),
      how many could not connect, and how many were still open at the end.
  upload PORT REPO USER:PASS SIZE RATE [--src ADDR]
      Start a blob upload (POST), then PUT SIZE bytes with their digest at RATE bytes/s (0: at
      once). Prints {"outcome": "answered", "status": N, "secs": S} or {"outcome": "dropped",
      "sent": BYTES, "secs": S}.
  raw PORT REQUEST
      Send REQUEST (Python escapes such as \\r\\n are decoded) and print the status code of the
      answer (000 when the connection closed without one).
Every socket operation has a timeout; the script never runs longer than its own bounds.
"""
import base64
import hashlib
import json
import select
import socket
import ssl
import sys
import time


def connect(port, src, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if src:
        s.bind((src, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def read_response(s, timeout=10.0):
    """(status, headers dict lower-case, body) of one HTTP response; status 0 on a bare close."""
    s.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            d = s.recv(65536)
        except (ConnectionResetError, socket.timeout, ssl.SSLError):
            d = b""
        if not d:
            return 0, {}, buf
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        d = s.recv(65536)
        if not d:
            break
        body += d
    return status, headers, body


def has_input(s):
    if isinstance(s, ssl.SSLSocket) and s.pending():
        return True
    p = select.poll()  # not select(): an attack may hold more than 1024 descriptors
    p.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(p.poll(0))


def heads(argv):
    port, n, interval, duration = int(argv[0]), int(argv[1]), float(argv[2]), float(argv[3])
    src = cafile = None
    raw_tls = False
    rest = argv[4:]
    while rest:
        if rest[0] == "--src":
            src, rest = rest[1], rest[2:]
        elif rest[0] == "--tls":
            cafile, rest = rest[1], rest[2:]
        elif rest[0] == "--raw-tls":
            raw_tls, rest = True, rest[1:]
        else:
            raise SystemExit("unknown option " + rest[0])
    ctx = ssl.create_default_context(cafile=cafile) if cafile and not raw_tls else None
    if raw_tls:
        # a handshake record header announcing 512 bytes, then a ClientHello that never ends
        data = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 4096
    else:
        data = b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trickle: " + b"a" * 65536
    res = {"connected": 0, "connect_failed": 0, "refused_503": 0, "eof": 0, "eof_secs": [], "other": 0, "open": 0}
    t0 = time.time()
    conns = []
    for _ in range(n):
        try:
            s = connect(port, src)
            if ctx:
                s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
            conns.append(s)
            res["connected"] += 1
        except (OSError, ssl.SSLError):
            res["connect_failed"] += 1
    pos = 0
    alive = list(conns)
    while alive and time.time() - t0 < duration:
        for s in list(alive):
            try:
                if has_input(s):
                    d = s.recv(4096)
                    if d.startswith(b"HTTP/1.1 503 "):
                        res["refused_503"] += 1
                    elif not d:
                        res["eof"] += 1
                        res["eof_secs"].append(round(time.time() - t0, 1))
                    else:
                        res["other"] += 1
                    alive.remove(s)
                    continue
                s.send(data[pos:pos + 1])
            except (OSError, ssl.SSLError):
                res["eof"] += 1
                res["eof_secs"].append(round(time.time() - t0, 1))
                alive.remove(s)
        pos += 1
        time.sleep(interval)
    res["open"] = len(alive)
    for s in conns:
        s.close()
    print(json.dumps(res))


def upload(argv):
    port, repo, cred, size, rate = int(argv[0]), argv[1], argv[2], int(argv[3]), float(argv[4])
    src = argv[6] if len(argv) > 6 and argv[5] == "--src" else None
    auth = "Basic " + base64.b64encode(cred.encode()).decode()
    s = connect(port, src)
    s.sendall(("POST /v2/%s/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: %s\r\n"
               "Content-Length: 0\r\n\r\n" % (repo, auth)).encode())
    status, headers, _ = read_response(s)
    s.close()
    if status != 202:
        print(json.dumps({"outcome": "post_failed", "status": status}))
        return
    loc = headers["location"]
    if loc.startswith("http"):
        loc = "/" + loc.split("/", 3)[3]
    body = bytes((i * 7) & 0xFF for i in range(size))
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    sep = "&" if "?" in loc else "?"
    s = connect(port, src)
    s.sendall(("PUT %s%sdigest=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: %s\r\n"
               "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
               % (loc, sep, digest, auth, size)).encode())
    t0 = time.time()
    sent = 0
    try:
        if rate <= 0:
            s.sendall(body)
            sent = size
        else:
            piece = max(1, int(rate / 10))
            while sent < size:
                if has_input(s):  # an answer (or the end) before the body is complete
                    break
                s.sendall(body[sent:sent + piece])
                sent += len(body[sent:sent + piece])
                time.sleep(0.1)
        status, _, _ = read_response(s, timeout=30)
    except OSError:
        status = 0
    secs = round(time.time() - t0, 1)
    if status:
        print(json.dumps({"outcome": "answered", "status": status, "secs": secs, "sent": sent}))
    else:
        print(json.dumps({"outcome": "dropped", "sent": sent, "secs": secs}))


def raw(argv):
    port, req = int(argv[0]), argv[1].encode("latin-1").decode("unicode_escape").encode("latin-1")
    s = connect(port, None)
    s.sendall(req)
    status, _, _ = read_response(s)
    s.close()
    print("%03d" % status)


if __name__ == "__main__":
    {"heads": heads, "upload": upload, "raw": raw}[sys.argv[1]](sys.argv[2:])
