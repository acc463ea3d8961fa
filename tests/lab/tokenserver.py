#!/usr/bin/env python3
"""tokenserver.py - the bearer-token server of regslim's test lab (Docker registry token auth).

registry.sh starts it next to the token registry; it listens on 127.0.0.1 only.

  tokenserver.py --key KEY.pem --cert CERT.pem [--port N] [--service S] [--issuer S]
                 [--user U] [--password P | --password-env VAR] [--ttl SECONDS]

  GET  /token?service=S&scope=T:NAME:ACTIONS[&scope=...]   Basic credentials optional
  POST /token    OAuth2 form: grant_type=password&username=U&password=P&service=S&scope=...
  GET  /healthz  200 {"status": "ok"}

Who gets what (Docker Hub's rules): no credentials, "pull" only; the right user and password,
every action the scopes ask for; a wrong user or password, 401 and no token.

The token is a JWT signed RS256 by `openssl dgst -sha256 -sign KEY` (no Python crypto module
needed). Its header names the key by "kid", the libtrust fingerprint distribution computes
for every public key of its rootcertbundle (CERT.pem): base32 of the first 240 bits of the
SHA-256 of the DER SubjectPublicKeyInfo, in 12 colon-separated groups of 4.

One log line per request on stderr (registry.sh sends it to $REGSLIM_LAB/logs/tokenserver.log);
tests grep it, so its shape is an interface:
  2026-12-07T10:00:00Z "GET /token?service=...&scope=repository%3Alab%2Ftiny%3Apull HTTP/1.1" 200 issued token authed=True access=[{"type": "repository", "name": "lab/tiny", "actions": ["pull"]}]
  2026-12-07T10:00:01Z "GET /token?... HTTP/1.1" 401 refused: wrong credentials for user 'x'
"""
import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

OPENSSL_TIMEOUT_S = 30
MAX_FORM_BYTES = 64 * 1024


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def openssl(args, data=None):
    """Run `openssl ARGS` with DATA on stdin; its stdout, or SystemExit with its complaint."""
    try:
        p = subprocess.run(["openssl"] + args, input=data, capture_output=True, timeout=OPENSSL_TIMEOUT_S)
    except FileNotFoundError:
        sys.exit("tokenserver.py: openssl is not installed (Debian package openssl)")
    if p.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (args[0], p.stderr.decode(errors="replace").strip()))
    return p.stdout


def libtrust_kid(cert_pem):
    """The key ID distribution 2.8 gives the certificate's public key (libtrust's KeyID)."""
    pub_pem = openssl(["x509", "-in", cert_pem, "-noout", "-pubkey"])
    spki_der = openssl(["pkey", "-pubin", "-outform", "DER"], pub_pem)
    b32 = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


def access_of(scopes):
    """Scope strings ("repository:lab/tiny:pull,push", several per string separated by spaces)
    to the JWT's access claim. A name may hold colons (host:port/repo): the type is the first
    field, the actions the last."""
    out = []
    for s in scopes:
        for one in s.split():
            typ, sep, rest = one.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or not typ or not name:
                continue
            out.append({"type": typ, "name": name, "actions": [a for a in actions.split(",") if a]})
    return out


class Issuer:
    """Makes and signs tokens; the settings come from the command line."""

    def __init__(self, opts):
        self.opts = opts
        self.kid = libtrust_kid(opts.cert)

    def token(self, service, access, subject):
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {"iss": self.opts.issuer, "sub": subject, "aud": service or self.opts.service,
                  "iat": now, "nbf": now - 5, "exp": now + self.opts.ttl, "jti": uuid.uuid4().hex,
                  "access": access}
        head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        sig = openssl(["dgst", "-sha256", "-sign", self.opts.key], head.encode("ascii"))
        return head + "." + b64url(sig)


class TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "regslim-lab-tokenserver/1"
    issuer = None  # set by main()
    log_lock = threading.Lock()

    def log_message(self, fmt, *args):  # the per-request line is written by note()
        pass

    def note(self, status, what):
        line = '%s "%s" %d %s\n' % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), self.requestline, status, what)
        with self.log_lock:
            sys.stderr.write(line)
            sys.stderr.flush()

    def reply(self, status, obj, what, extra=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.note(status, what)

    def refuse(self, status, code, why):
        extra = [("WWW-Authenticate", 'Basic realm="regslim-lab-tokenserver"')] if status == 401 else []
        self.reply(status, {"errors": [{"code": code, "message": why}], "error": code.lower(),
                            "error_description": why}, "refused: " + why, extra)

    def credentials_ok(self, user, password):
        o = self.issuer.opts
        return user == o.user and password == o.password

    def grant(self, service, scopes, user, authed):
        access = access_of(scopes)
        if not authed:
            for a in access:
                a["actions"] = [x for x in a["actions"] if x == "pull"]
        try:
            tok = self.issuer.token(service, access, user if authed else "")
        except RuntimeError as e:
            return self.refuse(500, "INTERNAL", str(e))
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.reply(200, {"token": tok, "access_token": tok, "token_type": "Bearer",
                         "expires_in": self.issuer.opts.ttl, "issued_at": issued, "scope": " ".join(scopes)},
                   "issued token authed=%s access=%s" % (authed, json.dumps(access)))

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/healthz":
            return self.reply(200, {"status": "ok"}, "health")
        if url.path != "/token":
            return self.refuse(404, "NOT_FOUND", "no such path " + url.path)
        q = parse_qs(url.query)
        user, authed = "", False
        auth = self.headers.get("Authorization")
        if auth is not None:
            scheme, _, blob = auth.partition(" ")
            try:
                user, _, password = base64.b64decode(blob.strip(), validate=True).decode().partition(":")
            except ValueError:
                return self.refuse(401, "UNAUTHORIZED", "unreadable Basic credentials")
            if scheme.lower() != "basic" or not self.credentials_ok(user, password):
                return self.refuse(401, "UNAUTHORIZED", "wrong credentials for user %r" % user)
            authed = True
        self.grant(q.get("service", [""])[0], q.get("scope", []), user, authed)

    def do_POST(self):
        if urlsplit(self.path).path != "/token":
            return self.refuse(404, "NOT_FOUND", "no such path")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_FORM_BYTES:
            self.close_connection = True
            return self.refuse(400, "invalid_request", "bad Content-Length")
        form = parse_qs(self.rfile.read(n).decode(errors="replace"))
        field = lambda k: form.get(k, [""])[0]  # noqa: E731
        grant = field("grant_type")
        if grant != "password":
            return self.refuse(400, "unsupported_grant_type", "grant_type %r (only password)" % grant)
        user = field("username")
        if not self.credentials_ok(user, field("password")):
            return self.refuse(401, "invalid_grant", "wrong credentials for user %r" % user)
        self.grant(field("service"), form.get("scope", []), user, True)


def main():
    base = int(os.environ.get("LAB_PORT_BASE") or 15000)
    ap = argparse.ArgumentParser(description="bearer-token server of regslim's test lab (127.0.0.1 only)")
    ap.add_argument("--key", required=True, help="RSA private key (PEM) the tokens are signed with")
    ap.add_argument("--cert", required=True, help="its certificate: the registry's rootcertbundle")
    ap.add_argument("--port", type=int, default=base + 3)
    ap.add_argument("--service", default="regslim-test-registry", help="aud when the request names none")
    ap.add_argument("--issuer", default="regslim-test-issuer")
    ap.add_argument("--user", default=os.environ.get("LAB_USER", "lab"))
    ap.add_argument("--password", help="default: $LAB_PASS, else labpass")
    ap.add_argument("--password-env", help="read the password from this environment variable")
    ap.add_argument("--ttl", type=int, default=300, help="token lifetime in seconds")
    opts = ap.parse_args()
    if opts.password is None:
        opts.password = os.environ.get(opts.password_env or "LAB_PASS") or "labpass"
    try:
        TokenHandler.issuer = Issuer(opts)
    except RuntimeError as e:
        sys.exit("tokenserver.py: %s" % e)
    srv = ThreadingHTTPServer(("127.0.0.1", opts.port), TokenHandler)
    srv.daemon_threads = True
    sys.stderr.write("tokenserver.py: 127.0.0.1:%d issuer %s kid %s\n" % (opts.port, opts.issuer, TokenHandler.issuer.kid))
    sys.stderr.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
