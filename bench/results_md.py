#!/usr/bin/env python3
"""Prints the tables of a cmkbench JSON report (bench/results/latest.json) as Markdown, in the
order bench/RESULTS.md uses: targets, big blobs, small blobs, io_uring / sync, rotation and
store open, peak RSS, ceilings, chunk size x threads sweep.

    python3 bench/results_md.py [bench/results/latest.json] > tables.md
"""
import json
import re
import sys


def fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        if abs(v) >= 100:
            return "%.0f" % v
        if abs(v) >= 10:
            return "%.1f" % v
        return "%.2f" % v
    return str(v)


def rng(r):
    if r.get("reps", 1) > 1 and r.get("min") != r.get("max"):
        return "%s..%s" % (fmt(r["min"]), fmt(r["max"]))
    return ""


def ratio(r):
    return "%.0f%%" % (100 * r["ratio"]) if r.get("ratio") else ""


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def clean(name):
    # The --file data set carries a random temp-file suffix; keep the name readable.
    return re.sub(r"layer\.\w+\.tar\.gz", "layer.tar.gz", name)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.json"
    with open(path) as f:
        rep = json.load(f)
    rows = rep["rows"]
    sec = lambda s: [r for r in rows if r["section"] == s]

    print("### Targets\n")
    print(table(["target", "engine", "value", "range", "judged against", "ref", "ratio",
                 "verdict"],
                [[clean(r["name"]), r["engine"], "%s %s" % (fmt(r["value"]), r["unit"]),
                  rng(r), r.get("judged_against", ""), fmt(r.get("ref")), ratio(r),
                  r.get("verdict", "")] for r in sec("target")]))

    print("### Big blobs (1 GiB, median of the repetitions; MB/s = 10^6 B/s)\n")
    big = sec("put") + sec("get")
    print(table(["measurement", "engine", "MB/s", "range", "cores", "judged against", "ref",
                 "ratio", "verdict"],
                [[clean(r["name"]), r["engine"], fmt(r["value"]), rng(r), fmt(r.get("cores")),
                  r.get("judged_against", ""), fmt(r.get("ref")), ratio(r),
                  r.get("verdict", "")] for r in big]))
    notes = [(clean(r["name"]), r["engine"], r.get("note", "")) for r in sec("put")]
    print("Notes of the put rows:\n")
    for n, e, t in notes:
        print("* %s [%s]: %s" % (n, e, clean(t)))
    print()

    print("### Small blobs (durable puts, warm gets)\n")
    print(table(["measurement", "engine", "blobs/s", "range", "cores", "judged against",
                 "ratio", "note"],
                [[r["name"], r["engine"], fmt(r["value"]), rng(r), fmt(r.get("cores")),
                  r.get("judged_against", ""), ratio(r), r.get("note", "")]
                 for r in sec("small")]))

    print("### io_uring / sync\n")
    print(table(["scenario", "ratio", "range", "verdict", "note"],
                [[clean(r["name"]), fmt(r["value"]), rng(r), r.get("verdict", ""),
                  r.get("note", "")] for r in sec("engine")]))

    print("### Rotation and store open against store size\n")
    print(table(["measurement", "value", "unit", "range", "note"],
                [[r["name"], fmt(r["value"]), r["unit"], rng(r), r.get("note", "")]
                 for r in sec("rotation") + sec("open")]))

    print("### Peak RSS\n")
    print(table(["measurement", "MiB", "note"],
                [[r["name"], fmt(r["value"]), r.get("note", "")] for r in sec("rss")]))

    print("### Ceilings\n")
    print(table(["ceiling", "value", "unit", "range", "note"],
                [[clean(r["name"]), fmt(r["value"]), r["unit"], rng(r), r.get("note", "")]
                 for r in sec("ceiling")]))

    sweep = sec("sweep")
    if sweep:
        chunks, lines, cell = [], [], {}
        for r in sweep:
            m = re.match(r"(put|get) (\w+) (\d+)K x(\d+)", r["name"])
            if not m:
                continue
            op, data, ck, th = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            line = "%s %s x%s" % (op, data, th)
            if ck not in chunks:
                chunks.append(ck)
            if line not in lines:
                lines.append(line)
            cell[(line, ck)] = fmt(r["value"])
        chunks.sort()
        print("### Chunk size x worker threads (MB/s, one run per point)\n")
        print(table(["op data threads"] + ["%d KiB" % c for c in chunks],
                    [[l] + [cell.get((l, c), "") for c in chunks] for l in lines]))


if __name__ == "__main__":
    main()
