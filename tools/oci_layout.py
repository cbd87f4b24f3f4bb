#!/usr/bin/env python3
"""tools/oci_layout.py — writes small, deterministic OCI image layouts to push with skopeo.

One writer for the demo (tools/demo.sh), the registry tests (tests/cli/serve_lib.sh) and the
registry benchmark (bench/registry_bench.sh); prints the manifest digest.

  oci_layout.py demo  OUT                 one gzip layer holding hello.txt
  oci_layout.py test  OUT SEED [KIB...]   layers of KIB random KiB plus text (default 64 256
                                          128), gzip except the last, which is uncompressed
  oci_layout.py bench OUT MB LAYERS       MB in LAYERS gzip layers, half random, half text
"""
import gzip, hashlib, io, json, os, random, sys, tarfile

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR = "application/vnd.oci.image.layer.v1.tar"


def blob(out, b):
    d = hashlib.sha256(b).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", d), "wb") as f:
        f.write(b)
    return "sha256:" + d


def tarlayer(files):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            t.addfile(ti, io.BytesIO(data))
    return bio.getvalue()


def write_layout(out, layers, config):
    """layers: (tar bytes, stored bytes, media type); config: the image config's "config"."""
    descs = [{"mediaType": mt, "digest": blob(out, stored), "size": len(stored)}
             for _, stored, mt in layers]
    diff_ids = ["sha256:" + hashlib.sha256(raw).hexdigest() for raw, _, _ in layers]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    man = json.dumps({"schemaVersion": 2,
                      "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": blob(out, cfg), "size": len(cfg)},
                      "layers": descs}).encode()
    md = blob(out, man)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
             "size": len(man), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]},
            f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return md


def demo(out):
    raw = tarlayer([("hello.txt", b"hello from an encrypted registry\n")])
    return write_layout(out, [(raw, gzip.compress(raw, mtime=0), GZ)], {})


def test(out, seed, *sizes):
    sizes = [int(x) for x in sizes] or [64, 256, 128]
    rng = random.Random(seed)
    layers = []
    for i, kib in enumerate(sizes):
        data = rng.randbytes(kib * 1024)
        text = ("%s layer %d line\n" % (seed, i)).encode() * 2000
        raw = tarlayer([("data/%d.bin" % i, data), ("etc/%d.txt" % i, text)])
        if i == len(sizes) - 1:
            layers.append((raw, raw, TAR))
        else:
            layers.append((raw, gzip.compress(raw, compresslevel=1, mtime=0), GZ))
    return write_layout(out, layers, {"Env": ["SEED=" + seed]})


def bench(out, mb, nl):
    rng = random.Random(2024)
    per = int(mb) * 1024 * 1024 // int(nl)
    layers = []
    for i in range(int(nl)):
        rand = rng.randbytes(per // 2)
        text = b"".join(b"layer %d line %09d: some configuration text\n" % (i, k)
                        for k in range(per // 2 // 40))
        raw = tarlayer([("bin/%d.bin" % i, rand), ("etc/%d.txt" % i, text)])
        layers.append((raw, gzip.compress(raw, compresslevel=1, mtime=0), GZ))
    return write_layout(out, layers, {})


def main(argv):
    modes = {"demo": (demo, 1, 1), "test": (test, 2, None), "bench": (bench, 3, 3)}
    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write(__doc__)
        return 0
    if not argv or argv[0] not in modes:
        sys.stderr.write(__doc__)
        return 2
    fn, least, most = modes[argv[0]]
    args = argv[1:]
    if len(args) < least or (most is not None and len(args) > most):
        sys.stderr.write(__doc__)
        return 2
    os.makedirs(os.path.join(args[0], "blobs", "sha256"), exist_ok=True)
    print(fn(*args))
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
