#!/usr/bin/env python3
"""serve_conn.py - raw HTTP/1.1 connections to `cmkstore serve` for test_serve_limits.sh.

Holds connections open across requests, binds source addresses in 127.0.0.0/8 and tells
whether the server closed a connection, which curl cannot. Each scenario prints KEY=VALUE
lines that the test checks. Every wait is bounded (WAIT seconds); nothing depends on how
fast the machine is.

  serve_conn.py HOST:PORT per-ip            (server: --max-connections-per-ip 2)
  serve_conn.py HOST:PORT timeout USER:PASS (server: --header-timeout 1, --htpasswd)
"""
import base64
import socket
import sys
import time

WAIT = 60.0


def conn(hp, src="127.0.0.1"):
    host, port = hp.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(WAIT)
    s.connect((host, int(port)))
    return s


def send_req(s, path="/v2/", cred=None):
    h = "GET %s HTTP/1.1\r\nHost: cmkstore\r\n" % path
    if cred:
        h += "Authorization: Basic %s\r\n" % base64.b64encode(cred.encode()).decode()
    s.sendall((h + "\r\n").encode())


def read_resp(s):
    """(status, {header: value}, body); status 0 if the server closed (or reset) the
    connection before a whole response head arrived."""
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                return 0, {}, buf
            buf += d
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        while len(body) < n:
            d = s.recv(65536)
            if not d:
                break
            body += d
        return int(lines[0].split()[1]), hdrs, body
    except (ConnectionResetError, BrokenPipeError):
        return 0, {}, buf


def req(s, path="/v2/", cred=None):
    try:
        send_req(s, path, cred)
    except (ConnectionResetError, BrokenPipeError):
        return 0, {}, b""
    return read_resp(s)


def closed_by_server(s):
    """True once the server has closed s (waits up to WAIT seconds), False if still open."""
    s.settimeout(WAIT)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def out(k, v):
    print("%s=%s" % (k, v), flush=True)


def per_ip(hp):
    a, b = conn(hp), conn(hp)
    out("held1", req(a)[0])
    out("held2", req(b)[0])
    # A third connection from the same address: answered 429, then closed.
    c = conn(hp)
    st, h, body = req(c)
    out("third", st)
    out("third_retry_after", h.get("retry-after", "-"))
    out("third_connection", h.get("connection", "-").lower())
    out("third_body", body.decode("utf-8", "replace").replace("\n", " "))
    out("third_closed", int(closed_by_server(c)))
    # Other addresses are not affected.
    d = conn(hp, "127.0.0.2")
    out("other_address", req(d)[0])
    d.close()
    # Up to twice the limit connections are accepted (to be answered 429); beyond, closed at
    # once with no answer.
    x1, x2 = conn(hp), conn(hp)
    y = conn(hp)
    st, _, raw = req(y)
    out("beyond_twice", st)
    out("beyond_twice_bytes", len(raw))
    for s in (x1, x2, y, c):
        s.close()
    # Once a held connection is closed, the address gets a connection again (the server
    # notices the close asynchronously: retried, bounded).
    a.close()
    st = 0
    for _ in range(int(WAIT * 10)):
        e = conn(hp)
        st = req(e)[0]
        e.close()
        if st == 200:
            break
        time.sleep(0.1)
    out("after_close", st)
    b.close()


def timeout(hp, cred):
    # Headers never finished: closed by the header timeout.
    p = conn(hp)
    p.sendall(b"GET /v2/ HTTP/1.1\r\nHost: cmkstore\r\n")
    out("partial_headers_closed", int(closed_by_server(p)))
    p.close()
    # A connection whose request was refused (401) stays unauthenticated: closed too.
    q = conn(hp)
    out("unauth_status", req(q)[0])
    out("unauth_closed", int(closed_by_server(q)))
    q.close()
    # An authenticated connection gets the normal idle timeout: it outlives two unauthenticated
    # connections opened after its request and closed by the header timeout one after the other
    # (so more than the header timeout has passed since its last activity).
    t = conn(hp)
    out("trusted_first", req(t, cred=cred)[0])
    for name in ("later1", "later2"):
        u = conn(hp)
        out(name + "_closed", int(closed_by_server(u)))
        u.close()
    out("trusted_again", req(t, cred=cred)[0])
    t.close()


def main():
    hp, what = sys.argv[1], sys.argv[2]
    if what == "per-ip":
        per_ip(hp)
    elif what == "timeout":
        timeout(hp, sys.argv[3])
    else:
        sys.exit("unknown scenario " + what)


if __name__ == "__main__":
    main()
