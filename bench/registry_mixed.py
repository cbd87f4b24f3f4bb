#!/usr/bin/env python3
"""bench/registry_mixed.py — a mixed registry load and the cost of DELETE and the catalog
against the number of repositories (driven by bench/registry_mixed.sh).

  registry_mixed.py load HOST:PORT CLIENTS SECONDS
      CLIENTS threads, one keep-alive connection each, for SECONDS: every client owns a
      repository holding a few blobs and loops over GET (60%: a whole blob, every byte
      compared with what was pushed), PUT (25%: a monolithic push of a new 4-64 KiB blob)
      and DELETE (15%: one of its blobs, unlinked). Prints one JSON line: requests/s,
      errors, and p50/p99 latency per kind.
  registry_mixed.py scale HOST:PORT N1,N2,...  [SAMPLES]
      Grows the registry to N1, N2, ... repositories (each with two 1 KiB blobs) and at each
      size times, from one client with no other load, SAMPLES DELETEs of a blob link (each in
      a different repository; the repository keeps its other blob) and SAMPLES GETs of
      /v2/_catalog (the full listing). Prints one JSON line per size (medians and p99, ms).
"""
import hashlib
import http.client
import json
import os
import random
import sys
import threading
import time


def conn(hp):
    return http.client.HTTPConnection(hp, timeout=300)


def call(c, method, url, body=None):
    c.request(method, url, body=body,
              headers={"Content-Type": "application/octet-stream"} if body is not None else {})
    r = c.getresponse()
    return r.status, r.read()


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return round(v[min(len(v) - 1, int(len(v) * p))] * 1000, 2)


def client(hp, n, until, out, lock):
    rnd = random.Random(n)
    c = conn(hp)
    repo = "mixed/c%d" % n
    have = {}  # digest -> bytes
    lat = {"GET": [], "PUT": [], "DELETE": []}
    errs = 0

    def push():
        nonlocal errs
        b = rnd.randbytes(rnd.randint(4 << 10, 64 << 10))
        d = digest(b)
        t = time.monotonic()
        st, _ = call(c, "POST", "/v2/%s/blobs/uploads/?digest=%s" % (repo, d), b)
        lat["PUT"].append(time.monotonic() - t)
        if st == 201:
            have[d] = b
        else:
            errs += 1

    for _ in range(4):
        push()
    for k in lat:
        lat[k].clear()
    while time.monotonic() < until:
        x = rnd.random()
        if x < 0.60 and have:
            d = rnd.choice(list(have))
            t = time.monotonic()
            st, body = call(c, "GET", "/v2/%s/blobs/%s" % (repo, d))
            lat["GET"].append(time.monotonic() - t)
            if st != 200 or body != have[d]:
                errs += 1
        elif x < 0.85 or len(have) < 2:
            push()
        else:
            d = rnd.choice(list(have))
            t = time.monotonic()
            st, _ = call(c, "DELETE", "/v2/%s/blobs/%s" % (repo, d))
            lat["DELETE"].append(time.monotonic() - t)
            if st == 202:
                del have[d]
            else:
                errs += 1
    with lock:
        for k in lat:
            out[k].extend(lat[k])
        out["errors"] += errs


def load(hp, clients, seconds):
    out = {"GET": [], "PUT": [], "DELETE": [], "errors": 0}
    lock = threading.Lock()
    until = time.monotonic() + float(seconds)
    ths = [threading.Thread(target=client, args=(hp, i, until, out, lock))
           for i in range(int(clients))]
    t0 = time.monotonic()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    el = time.monotonic() - t0
    n = sum(len(out[k]) for k in ("GET", "PUT", "DELETE"))
    res = {"clients": int(clients), "seconds": round(el, 1), "requests": n,
           "req_per_s": round(n / el, 1), "errors": out["errors"]}
    for k in ("GET", "PUT", "DELETE"):
        res[k] = {"n": len(out[k]), "p50_ms": pct(out[k], 0.5), "p99_ms": pct(out[k], 0.99)}
    print(json.dumps(res), flush=True)
    return 0 if out["errors"] == 0 else 1


def scale(hp, sizes, samples=50):
    c = conn(hp)
    samples = int(samples)
    made = 0
    blobs = {}
    rc = 0
    for size in [int(x) for x in sizes.split(",")]:
        while made < size:
            repo = "scale/r%05d" % made
            pair = []
            for k in range(2):
                b = ("%s blob %d " % (repo, k)).encode() * 40
                d = digest(b)
                st, _ = call(c, "POST", "/v2/%s/blobs/uploads/?digest=%s" % (repo, d), b)
                if st != 201:
                    print("push to %s: %d" % (repo, st), file=sys.stderr)
                    return 1
                pair.append((d, b))
            blobs[repo] = pair
            made += 1
        dels, cats = [], []
        repos = sorted(blobs)
        for i in range(samples):
            repo = repos[(i * 7919) % len(repos)]
            d, b = blobs[repo][0]
            t = time.monotonic()
            st, _ = call(c, "DELETE", "/v2/%s/blobs/%s" % (repo, d))
            dels.append(time.monotonic() - t)
            if st != 202:
                rc = 1
            # Put it back (not timed) so the next sample finds the same registry.
            if call(c, "POST", "/v2/%s/blobs/uploads/?digest=%s" % (repo, d), b)[0] != 201:
                rc = 1
        for i in range(samples):
            t = time.monotonic()
            st, body = call(c, "GET", "/v2/_catalog")
            cats.append(time.monotonic() - t)
            if st != 200 or len(json.loads(body)["repositories"]) < size:
                rc = 1
        print(json.dumps({"repositories": size, "delete_p50_ms": pct(dels, 0.5),
                          "delete_p99_ms": pct(dels, 0.99), "catalog_p50_ms": pct(cats, 0.5),
                          "catalog_p99_ms": pct(cats, 0.99)}), flush=True)
    return rc


def main(argv):
    if len(argv) >= 4 and argv[0] == "load":
        return load(argv[1], argv[2], argv[3])
    if len(argv) >= 3 and argv[0] == "scale":
        return scale(argv[1], argv[2], *(argv[3:4]))
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
