#!/usr/bin/env python3
"""akv_server.py - a loopback HTTPS server in the shape of Azure Key Vault, IMDS and the
Entra ID token endpoint, for test_akv_transport.c (the akv provider's transport, challenge,
token, retry and error-mapping behaviour). Not a vault: just enough of the protocol, with
faults injected through a control endpoint.

usage: akv_server.py DIR   (DIR holds cert.pem and key.pem; the port is written to DIR/port)

Vault:   GET /keys/<name>[/<version>][/], POST /keys/<name>/<version>/wrapkey|unwrapkey,
         GET /deletedkeys/<name>; api-version required (its name may be percent-encoded).
         Without a valid Bearer token: 401 with the challenge.
IMDS:    GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=R[&client_id=C]
Entra:   POST /<tenant>/oauth2/v2.0/token (client_secret "s3cret-value" or client_assertion
         "assertion-ok")
Control: GET /_ctl -> counters; POST /_ctl {faults: [{status, retry_after, code, inner,
         target}], resource, token_life, deny, revoke_tokens, rotate, reset}
"""
import base64
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

LOCK = threading.Lock()
STATE = {
    "resource": "https://127.0.0.1",
    "token_life": 3600,
    "faults": [],
    "deny": False,
    "tokens": {},
}
STATS = {}


def reset_stats():
    STATS.clear()
    STATS.update({"vault": 0, "unauth": 0, "imds": 0, "entra": 0, "client_ids": [],
                  "last_client_id": None, "last_resource": None, "bad_token": 0})


reset_stats()


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def new_version(name, kty="RSA", enabled=True, ops=("wrapKey", "unwrapKey", "encrypt", "decrypt")):
    ver = os.urandom(16).hex()
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kty == "RSA" else None
    KEYS.setdefault(name, []).append({"version": ver, "priv": priv, "kty": kty, "enabled": enabled,
                                      "ops": list(ops)})
    return ver


KEYS = {}
new_version("k1")
new_version("k1")
new_version("ec1", kty="EC")
new_version("noops", ops=("sign", "verify"))
new_version("dis", enabled=False)
DELETED = {"gone"}


def bundle(base, name, v):
    key = {"kid": f"{base}/keys/{name}/{v['version']}", "kty": v["kty"], "key_ops": v["ops"]}
    if v["kty"] == "RSA":
        pub = v["priv"].public_key().public_numbers()
        key["n"] = b64u(pub.n.to_bytes(256, "big"))
        key["e"] = b64u(pub.e.to_bytes(3, "big"))
    else:
        key["crv"] = "P-256"
    return {"key": key, "attributes": {"enabled": v["enabled"], "created": 1700000000}}


def kv_error(code, msg, inner=None):
    e = {"code": code, "message": msg}
    if inner:
        e["innererror"] = {"code": inner}
    return {"error": e}


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, obj=None, headers=None):
        body = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def fault(self, target):
        with LOCK:
            for i, f in enumerate(STATE["faults"]):
                if f.get("target", "vault") == target:
                    del STATE["faults"][i]
                    break
            else:
                return False
        h = {}
        if "retry_after" in f:
            h["Retry-After"] = str(f["retry_after"])
        self.reply(f["status"], kv_error(f.get("code", "Throttled"), "injected fault",
                                         f.get("inner")), h)
        return True

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def route(self, method):
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        path = u.path
        data = self.body() if method == "POST" else b""
        if path == "/_ctl":
            return self.ctl(method, data)
        if path == "/metadata/identity/oauth2/token":
            return self.imds(q)
        if path.endswith("/oauth2/v2.0/token"):
            return self.entra(path, data)
        return self.vault(method, path, q, data)

    def ctl(self, method, data):
        with LOCK:
            if method == "GET":
                return self.reply(200, STATS)
            req = json.loads(data or b"{}")
            STATE["faults"].extend(req.get("faults", []))
            for k in ("resource", "token_life", "deny"):
                if k in req:
                    STATE[k] = req[k]
            if req.get("revoke_tokens"):
                STATE["tokens"].clear()
            if req.get("reset"):
                reset_stats()
            out = {}
            if "rotate" in req:
                out["version"] = new_version(req["rotate"])
        self.reply(200, out)

    def issue(self, client_id, resource):
        with LOCK:
            tok = "tok-" + os.urandom(12).hex()
            now = int(time.time())
            STATE["tokens"][tok] = client_id
            life = STATE["token_life"]
        return {"access_token": tok, "expires_on": str(now + life), "expires_in": str(life),
                "token_type": "Bearer", "resource": resource}

    def imds(self, q):
        with LOCK:
            STATS["imds"] += 1
            cid = q.get("client_id", [None])[0]
            STATS["last_client_id"] = cid
            STATS["client_ids"].append(cid)
            STATS["last_resource"] = q.get("resource", [None])[0]
        if self.fault("token"):
            return
        if self.headers.get("Metadata") != "true":
            return self.reply(400, {"error": "invalid_request",
                                    "error_description": "Required metadata header not specified"})
        if q.get("api-version", [None])[0] != "2018-02-01":
            return self.reply(400, {"error": "invalid_request", "error_description": "api-version"})
        if cid == "00000000-0000-0000-0000-00000000dead":
            return self.reply(400, {"error": "invalid_request",
                                    "error_description": "Identity not found"})
        if STATS["last_resource"] != STATE["resource"]:
            return self.reply(400, {"error": "invalid_resource",
                                    "error_description": "wrong resource"})
        self.reply(200, self.issue(cid, STATE["resource"]))

    def entra(self, path, data):
        form = urllib.parse.parse_qs(data.decode())
        with LOCK:
            STATS["entra"] += 1
            STATS["last_client_id"] = form.get("client_id", [None])[0]
            STATS["last_tenant"] = path.split("/")[1]
        if self.fault("token"):
            return
        ok = (form.get("grant_type") == ["client_credentials"] and
              form.get("scope") == [STATE["resource"] + "/.default"] and
              (form.get("client_secret") == ["s3cret-value"] or
               (form.get("client_assertion") == ["assertion-ok"] and
                form.get("client_assertion_type") ==
                ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"])))
        if not ok:
            return self.reply(401, {"error": "invalid_client",
                                    "error_description": "AADSTS7000215: Invalid client secret"})
        tok = self.issue(form["client_id"][0], STATE["resource"])
        del tok["expires_on"]
        tok["expires_in"] = int(tok["expires_in"])
        self.reply(200, tok)

    def vault(self, method, path, q, data):
        base = f"https://127.0.0.1:{self.server.server_port}"
        with LOCK:
            STATS["vault"] += 1
        if self.fault("vault"):
            return
        if "api-version" not in q:
            return self.reply(400, kv_error("BadParameter", "api-version missing"))
        auth = self.headers.get("Authorization", "")
        with LOCK:
            valid = auth.startswith("Bearer ") and auth[7:] in STATE["tokens"]
            if not auth:
                STATS["unauth"] += 1
            elif not valid:
                STATS["bad_token"] += 1
            res = STATE["resource"]
            deny = STATE["deny"]
        if not valid:
            return self.reply(401, kv_error("Unauthorized", "AKV10000: Request is missing a "
                                            "Bearer or PoP token."),
                              {"WWW-Authenticate": f'Bearer authorization="{base}/tenant-x", '
                                                   f'resource="{res}"'})
        if deny:
            return self.reply(403, kv_error("Forbidden", "The user, group or application does "
                                            "not have keys permission", "AccessDenied"))
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "deletedkeys":
            if parts[1] in DELETED:
                return self.reply(200, {"recoveryId": f"{base}/deletedkeys/{parts[1]}"})
            return self.reply(404, kv_error("KeyNotFound", "not deleted either"))
        if len(parts) < 2 or parts[0] != "keys" or parts[1] not in KEYS:
            return self.reply(404, kv_error("KeyNotFound", "A key with (name/id) was not found"))
        versions = KEYS[parts[1]]
        v = versions[-1]
        if len(parts) >= 3:
            match = [x for x in versions if x["version"] == parts[2]]
            if not match:
                return self.reply(404, kv_error("KeyNotFound", "no such version"))
            v = match[0]
        if method == "GET" and len(parts) <= 3:
            return self.reply(200, bundle(base, parts[1], v))
        if method == "POST" and len(parts) == 4 and parts[3] in ("wrapkey", "unwrapkey"):
            if not v["enabled"]:
                return self.reply(403, kv_error("Forbidden", "key disabled", "KeyDisabled"))
            req = json.loads(data)
            h = hashes.SHA256() if req["alg"] == "RSA-OAEP-256" else hashes.SHA1()
            pad = padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)
            try:
                if parts[3] == "wrapkey":
                    out = v["priv"].public_key().encrypt(unb64u(req["value"]), pad)
                else:
                    out = v["priv"].decrypt(unb64u(req["value"]), pad)
            except Exception:
                return self.reply(400, kv_error("BadParameter", "decryption failed"))
            return self.reply(200, {"kid": f"{base}/keys/{parts[1]}/{v['version']}",
                                    "value": b64u(out)})
        self.reply(405, kv_error("BadRequest", "unsupported"))


def main():
    d = sys.argv[1]
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    tmp = os.path.join(d, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(srv.server_port))
    os.rename(tmp, os.path.join(d, "port"))
    srv.serve_forever()


if __name__ == "__main__":
    main()
