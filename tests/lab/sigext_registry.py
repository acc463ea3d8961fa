#!/usr/bin/env python3
"""sigext_registry.py: a tiny read-only registry with the signature extension, for tests.

Serves one OCI layout (LAYOUT/index.json, LAYOUT/blobs/sha256/*) under every repository name:
  GET/HEAD /v2/                                        200
  GET/HEAD /v2/<repo>/manifests/<tag or digest>        the layout's first manifest (any tag)
  GET/HEAD /v2/<repo>/blobs/<digest>                   a blob of the layout
  GET      /extensions/v2/<repo>/signatures/<digest>   SIGDIR/<repo with / as _>.json, else []
Every manifest answer carries X-Registry-Supports-Signatures: 1, as registries that offer the
extension (OpenShift's integrated registry) send. Each request is logged on stderr
("GET /path status"), so a test can see what was asked. Loopback only; stdlib only.

usage: sigext_registry.py --port PORT --layout DIR --sigdir DIR
"""
import argparse
import hashlib
import http.server
import json
import os
import re
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--layout", required=True)
    ap.add_argument("--sigdir", required=True)
    a = ap.parse_args()
    index = json.load(open(os.path.join(a.layout, "index.json")))
    top = index["manifests"][0]

    def blob(digest):
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            return None
        p = os.path.join(a.layout, "blobs", "sha256", digest[7:])
        return open(p, "rb").read() if os.path.isfile(p) else None

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            sys.stderr.write("%s\n" % (fmt % args))
            sys.stderr.flush()

        def answer(self, status, body, ctype, extra=()):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def route(self):
            path = self.path.split("?")[0]
            if path == "/v2/":
                return self.answer(200, b"{}", "application/json")
            m = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path)
            if m:
                ref = m.group(2)
                if ref.startswith("sha256:") and ref != top["digest"]:
                    return self.answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', "application/json")
                if ref.startswith("sha256-"):
                    return self.answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', "application/json")
                body = blob(top["digest"])
                return self.answer(200, body, top.get("mediaType", "application/vnd.oci.image.manifest.v1+json"),
                                   [("Docker-Content-Digest", "sha256:" + hashlib.sha256(body).hexdigest()),
                                    ("X-Registry-Supports-Signatures", "1")])
            m = re.fullmatch(r"/v2/(.+)/blobs/([^/]+)", path)
            if m:
                body = blob(m.group(2))
                if body is None:
                    return self.answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', "application/json")
                return self.answer(200, body, "application/octet-stream", [("Docker-Content-Digest", m.group(2))])
            m = re.fullmatch(r"/extensions/v2/(.+)/signatures/(sha256:[0-9a-f]{64})", path)
            if m and self.command == "GET":
                f = os.path.join(a.sigdir, m.group(1).replace("/", "_") + ".json")
                body = open(f, "rb").read() if os.path.isfile(f) else b'{"signatures": []}'
                return self.answer(200, body, "application/json")
            return self.answer(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', "application/json")

        def do_GET(self):
            self.route()

        def do_HEAD(self):
            self.route()

    http.server.ThreadingHTTPServer(("127.0.0.1", a.port), H).serve_forever()


if __name__ == "__main__":
    main()
