#!/usr/bin/python3
"""tests/cli/token_issuer.py — a Docker registry token issuer for the token-authentication
tests (Debian's python3-jwt and python3-cryptography), and a minter of test tokens.

  token_issuer.py serve --key KEY.pem --alg RS256 --issuer I --policy POLICY.json --port-file F
      Serves GET /token?service=S&scope=... on 127.0.0.1 (a free port, written to F). Clients
      authenticate with Basic (users of the policy) or not at all (the "anonymous" entry).
      A scope "type:name:actions" is granted the actions that the user's rules allow on name
      (fnmatch patterns); "registry:catalog:*" when the user has "catalog": true.
      POLICY: {"users": {"alice": {"password": "...", "allow": {"demo/*": ["pull", "push"]},
                                   "catalog": true}},
               "anonymous": {"allow": {"public/*": ["pull"]}}}
      Every request is logged to stderr (no passwords, no tokens).
  token_issuer.py mint --key KEY.pem --alg ES256 --issuer I --aud A [--access JSON]
                       [--exp SECONDS] [--nbf SECONDS] [--none]
      Prints one token (exp and nbf relative to now; --none: an unsigned alg=none token).
"""
import argparse
import base64
import fnmatch
import json
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(key, alg, iss, aud, access, exp=300, nbf=None, sub="test", none=False):
    now = int(time.time())
    claims = {"iss": iss, "sub": sub, "aud": aud, "exp": now + exp, "iat": now,
              "jti": b64url(str(time.time_ns()).encode()), "access": access}
    if nbf is not None:
        claims["nbf"] = now + nbf
    if none:
        h = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return h + "." + b64url(json.dumps(claims).encode()) + "."
    return jwt.encode(claims, key, algorithm=alg, headers={"typ": "JWT"})


def granted(rules, name, wanted):
    got = set()
    for pat, acts in rules.items():
        if fnmatch.fnmatchcase(name, pat):
            got |= set(acts)
    return [a for a in wanted if a in got or "*" in got]


def serve(args):
    key = open(args.key, "rb").read()
    policy = json.load(open(args.policy))

    class H(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):
            sys.stderr.write("issuer: " + (fmt % a) + "\n")

        def reply(self, code, obj, extra=None):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            u = urllib.parse.urlparse(self.path)
            if u.path != "/token":
                return self.reply(404, {"error": "not found"})
            q = urllib.parse.parse_qs(u.query)
            user, entry = None, policy.get("anonymous", {})
            auth = self.headers.get("Authorization", "")
            if auth.lower().startswith("basic "):
                try:
                    user, pw = base64.b64decode(auth[6:]).decode().split(":", 1)
                except Exception:
                    return self.reply(400, {"error": "bad credentials"})
                entry = policy["users"].get(user)
                if not entry or entry["password"] != pw:
                    return self.reply(401, {"error": "wrong user or password"},
                                      {"WWW-Authenticate": 'Basic realm="issuer"'})
            access = []
            for scope in q.get("scope", []):
                for one in scope.split(" "):
                    parts = one.split(":")
                    if len(parts) < 3:
                        continue
                    typ, name, acts = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
                    if typ == "registry" and name == "catalog":
                        got = ["*"] if entry.get("catalog") else []
                    elif typ == "repository":
                        got = granted(entry.get("allow", {}), name, acts)
                    else:
                        got = []
                    access.append({"type": typ, "name": name, "actions": got})
            sys.stderr.write("issuer: %s granted %s\n" % (user or "anonymous", json.dumps(access)))
            tok = mint(key, args.alg, args.issuer, q.get("service", [""])[0], access,
                       sub=user or "")
            self.reply(200, {"token": tok, "access_token": tok, "expires_in": 300,
                             "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    import os
    os.rename(args.port_file + ".tmp", args.port_file)
    srv.serve_forever()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--key", required=True)
    s.add_argument("--alg", default="RS256")
    s.add_argument("--issuer", required=True)
    s.add_argument("--policy", required=True)
    s.add_argument("--port-file", required=True)
    m = sub.add_parser("mint")
    m.add_argument("--key", required=True)
    m.add_argument("--alg", default="RS256")
    m.add_argument("--issuer", required=True)
    m.add_argument("--aud", required=True)
    m.add_argument("--access", default="[]")
    m.add_argument("--exp", type=int, default=300)
    m.add_argument("--nbf", type=int, default=None)
    m.add_argument("--none", action="store_true")
    a = p.parse_args()
    if a.cmd == "serve":
        serve(a)
    else:
        print(mint(open(a.key, "rb").read(), a.alg, a.issuer, a.aud, json.loads(a.access),
                   exp=a.exp, nbf=a.nbf, none=a.none))


if __name__ == "__main__":
    main()
