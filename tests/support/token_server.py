#!/usr/bin/env python3
"""A small Docker registry token service for the tests (python3 standard library + openssl CLI).

usage: token_server.py PORT_FILE --key KEY --cert CERT --issuer ISSUER --service SERVICE
                       --user USER:PASSWORD [--user ...] [--refresh-token TOKEN:USER ...]
                       [--anonymous-prefix PREFIX] [--log FILE]

Listens on 127.0.0.1 (a free port, written to PORT_FILE once listening) and answers
GET /token?service=SERVICE&scope=repository:NAME:ACTIONS[&scope=...] the way distribution's
token authentication expects: a JWT signed RS256 with KEY (`openssl dgst -sha256 -sign`), its
certificate CERT in the `x5c` header (the registry trusts it through `rootcertbundle`).

* Basic credentials that match a --user: the requested `pull` actions are granted.
* Wrong credentials: 401 (the client must report AUTH_FAILED).
* No credentials: `pull` is granted only on repositories starting with --anonymous-prefix;
  any other scope gets a token without access (the registry then answers 401).
* POST /token with an OAuth2 form (docs/spec/auth/oauth.md of distribution): grant_type=
  refresh_token with a --refresh-token is the token's user (the answer holds `access_token`
  only, as OAuth2 servers answer); grant_type=password checks a --user; anything else is 400,
  an unknown refresh token 401. `service` must match, `client_id` must be present.

Each request is logged to --log as one JSON line {"method", "user", "scopes", "granted",
"grant_type", "client_id"} so tests can see which flow ran.
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cert_der_b64(path):
    text = open(path).read()
    body = text.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
    return "".join(body.split())  # x5c is standard base64 of the DER


def sign(key, data):
    return subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=data,
                          stdout=subprocess.PIPE, check=True).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port_file")
    ap.add_argument("--key", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--user", action="append", default=[])
    ap.add_argument("--refresh-token", action="append", default=[])
    ap.add_argument("--anonymous-prefix", default=None)
    ap.add_argument("--log", default=None)
    args = ap.parse_args()
    users = dict(u.split(":", 1) for u in args.user)
    refresh_tokens = dict(t.split(":", 1) for t in args.refresh_token)
    x5c = cert_der_b64(args.cert)
    log_lock = threading.Lock()

    def log(entry):
        if args.log:
            with log_lock, open(args.log, "a") as f:
                f.write(json.dumps(entry) + "\n")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            url = urlparse(self.path)
            if url.path != "/token":
                return self.reply(404, {"error": "not found"})
            query = parse_qs(url.query)
            user = None
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                try:
                    name, password = base64.b64decode(header[6:]).decode().split(":", 1)
                except Exception:
                    name, password = None, None
                if name is None or users.get(name) != password:
                    log({"method": "GET", "user": name, "scopes": query.get("scope", []),
                         "granted": None})
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="cimage-token"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                user = name
            self.grant(user, query.get("scope", []), {"method": "GET"}, {"token": True})

        def grant(self, user, scopes, entry, shape):
            access = []
            for scope in scopes:
                parts = scope.split(":")
                if len(parts) < 3 or parts[0] != "repository":
                    continue
                name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
                allowed = user is not None or (
                    args.anonymous_prefix is not None and name.startswith(args.anonymous_prefix))
                granted = [a for a in actions if a == "pull"] if allowed else []
                access.append({"type": "repository", "name": name, "actions": granted})
            now = int(time.time())
            header_b64 = b64url(json.dumps({"typ": "JWT", "alg": "RS256", "x5c": [x5c]}).encode())
            claims = {"iss": args.issuer, "sub": user or "", "aud": args.service,
                      "exp": now + 300, "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                      "access": access}
            payload = header_b64 + "." + b64url(json.dumps(claims).encode())
            token = payload + "." + b64url(sign(args.key, payload.encode()))
            log(dict(entry, user=user, scopes=scopes, granted=access))
            answer = {"access_token": token, "expires_in": 300}
            if shape.get("token"):
                answer["token"] = token
            self.reply(200, answer)

        def do_POST(self):
            url = urlparse(self.path)
            if url.path != "/token":
                return self.reply(404, {"error": "not found"})
            length = int(self.headers.get("Content-Length", "0") or 0)
            if length > 65536:
                return self.reply(413, {"error": "too large"})
            form = parse_qs(self.rfile.read(length).decode())
            one = lambda k: (form.get(k) or [""])[0]
            entry = {"method": "POST", "grant_type": one("grant_type"), "client_id": one("client_id")}
            if self.headers.get("Content-Type", "").split(";")[0] != "application/x-www-form-urlencoded":
                log(dict(entry, user=None, scopes=[], granted=None))
                return self.reply(400, {"error": "invalid_request"})
            if one("service") != args.service or not one("client_id"):
                log(dict(entry, user=None, scopes=form.get("scope", []), granted=None))
                return self.reply(400, {"error": "invalid_request"})
            if one("grant_type") == "refresh_token":
                user = refresh_tokens.get(one("refresh_token"))
            elif one("grant_type") == "password":
                user = one("username") if users.get(one("username")) == one("password") else None
            else:
                log(dict(entry, user=None, scopes=form.get("scope", []), granted=None))
                return self.reply(400, {"error": "unsupported_grant_type"})
            if user is None:
                log(dict(entry, user=None, scopes=form.get("scope", []), granted=None))
                return self.reply(401, {"error": "invalid_grant"})
            self.grant(user, form.get("scope", []), entry, {})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
