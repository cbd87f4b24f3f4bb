#!/usr/bin/env python3
"""Registry load for tests and benchmarks of what a server keeps (one HTTP connection per
client: a curl process per request is too slow for hundreds of requests).

  registry_load.py open HOST:PORT REPO COUNT FILE LOCS
      COUNT times: POST /v2/REPO/blobs/uploads/, then one PATCH of FILE's bytes into it;
      appends each session's Location to LOCS; prints how many requests did not answer 202.
  registry_load.py cancel HOST:PORT LOCS
      DELETE of every session in LOCS; prints how many did not answer 204.
  registry_load.py mixed HOST:PORT CLIENTS ROUNDS [SECONDS]
      CLIENTS threads, ROUNDS rounds each (0: no limit), for at most SECONDS: each round pushes blobs of 64 KiB to 3 MiB (monolithic, and as a
      session of two PATCHes and a PUT), mounts one into a second repository, pulls it whole
      and a range of it (every byte compared), and deletes it from both (6 or 9 requests).
      Prints "requests errors".
"""
import hashlib
import http.client
import os
import random
import sys
import threading
import time


def conn(hp):
    return http.client.HTTPConnection(hp, timeout=300)


def call(c, method, url, body=None, headers=None):
    c.request(method, url, body=body, headers=headers or {})
    r = c.getresponse()
    return r.status, r.getheader("Location"), r.read()


def sessions_open(hp, repo, count, path, locs):
    with open(path, "rb") as f:
        body = f.read()
    c = conn(hp)
    bad = 0
    with open(locs, "a") as out:
        for _ in range(count):
            st, loc, _ = call(c, "POST", "/v2/%s/blobs/uploads/" % repo)
            if st != 202 or not loc:
                bad += 1
                continue
            out.write(loc + "\n")
            bad += call(c, "PATCH", loc, body)[0] != 202
    return bad


def sessions_cancel(hp, locs):
    c = conn(hp)
    bad = 0
    with open(locs) as f:
        for loc in f.read().split():
            bad += call(c, "DELETE", loc)[0] != 204
    return bad


def mixed_client(hp, n, rounds, until, stats, lock):
    rnd = random.Random(n)
    c = conn(hp)
    reqs = errs = 0
    a, b = "load/a%d" % n, "load/b%d" % n
    done = 0
    while time.monotonic() < until and (rounds == 0 or done < rounds):
        done += 1
        blob = os.urandom(rnd.randint(64 << 10, 3 << 20))
        d = "sha256:" + hashlib.sha256(blob).hexdigest()
        checks = []
        if rnd.random() < 0.5:
            checks.append(call(c, "POST", "/v2/%s/blobs/uploads/?digest=%s" % (a, d), blob)[0] == 201)
            reqs += 1
        else:
            st, loc, _ = call(c, "POST", "/v2/%s/blobs/uploads/" % a)
            half = len(blob) // 2
            st1, loc, _ = call(c, "PATCH", loc, blob[:half])
            st2, loc, _ = call(c, "PATCH", loc, blob[half:])
            st3 = call(c, "PUT", "%s?digest=%s" % (loc, d))[0]
            checks.append((st, st1, st2, st3) == (202, 202, 202, 201))
            reqs += 4
        checks.append(call(c, "POST", "/v2/%s/blobs/uploads/?mount=%s&from=%s" % (b, d, a))[0] == 201)
        st, _, got = call(c, "GET", "/v2/%s/blobs/%s" % (b, d))
        checks.append(st == 200 and got == blob)
        lo = rnd.randrange(len(blob))
        st, _, got = call(c, "GET", "/v2/%s/blobs/%s" % (a, d), headers={"Range": "bytes=%d-" % lo})
        checks.append(st == 206 and got == blob[lo:])
        checks.append(call(c, "DELETE", "/v2/%s/blobs/%s" % (a, d))[0] == 202)
        checks.append(call(c, "DELETE", "/v2/%s/blobs/%s" % (b, d))[0] == 202)
        reqs += len(checks) - 1
        errs += checks.count(False)
    with lock:
        stats[0] += reqs
        stats[1] += errs


def mixed(hp, clients, rounds, seconds):
    until = time.monotonic() + seconds
    stats, lock = [0, 0], threading.Lock()
    ts = [threading.Thread(target=mixed_client, args=(hp, i, rounds, until, stats, lock))
          for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return "%d %d" % (stats[0], stats[1])


def main(argv):
    if len(argv) == 7 and argv[1] == "open":
        print(sessions_open(argv[2], argv[3], int(argv[4]), argv[5], argv[6]))
    elif len(argv) == 4 and argv[1] == "cancel":
        print(sessions_cancel(argv[2], argv[3]))
    elif len(argv) in (5, 6) and argv[1] == "mixed":
        print(mixed(argv[2], int(argv[3]), int(argv[4]), float(argv[5]) if len(argv) == 6 else 1e9))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
