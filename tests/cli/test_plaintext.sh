#!/usr/bin/env bash
# test_plaintext.sh — nothing of a blob's plaintext is found anywhere in the store or the home:
# marker strings, a repeated pattern, 16-byte windows of a random blob, a small manifest.
# Also: files are private (no group/other bits, 0600 or stricter) and directories are 0700,
# under the store and the home, and `blob get -o` output is created 0600.
source "$(dirname "$0")/lib.sh"

setup_cmk p
S=$T/store
S0=$T/store0
cmk create --store "$S" --identity pid --key-encryption-key "$KID" --chunk-size 64K >/dev/null
cmk create --store "$S0" >/dev/null # store-managed key: encrypted just the same

MARK1="CMKSTORE-PLAINTEXT-MARKER-$(openssl rand -hex 8)"
MARK2="SECRET-LAYER-CONTENT-$(openssl rand -hex 8)"
{
    for i in $(seq 1 2000); do
        echo "line $i of a config layer $MARK1 lorem ipsum"
        [ $((i % 100)) -eq 0 ] && echo "$MARK2"
    done
} >"$T/text"
python3 -c 'import sys; sys.stdout.write("ABCDEFGHIJKLMNOP" * 100000)' >"$T/pattern"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"m":"%s"}}' \
    "$MARK2" >"$T/manifest"
gen_random plain $((1024 * 1024 + 777)) "$T/random"
for f in text pattern manifest random; do
    for st in "$S" "$S0"; do
        expect_ok cmk blob put --store "$st" "$T/$f"
    done
done
expect_ok cmk blob put --store "$S" - <"$T/text"

# Text markers, with grep over every file (binary files included).
for m in "$MARK1" "$MARK2" "ABCDEFGHIJKLMNOPABCDEFGHIJKLMNOP" "schemaVersion" "lorem ipsum"; do
    if grep -r -a -l -F -- "$m" "$S" "$S0" "$CMKSTORE_HOME" >"$T/hits" 2>/dev/null; then
        not_ok "plaintext '$m' found in: $(head -3 "$T/hits" | tr '\n' ' ')"
    else
        ok "plaintext '$m' not found in the store or the home"
    fi
done

# 16-byte windows of the random blob (stored raw, so they would show if it were not sealed).
cat >"$T/windows.py" <<'EOF'
import os, sys
src = open(sys.argv[1], 'rb').read()
offsets = [0, 16, 4096, 65535, 65536, 500000, len(src) // 2, len(src) - 16]
windows = [src[o:o + 16] for o in offsets]
found = []
for root in sys.argv[2:]:
    for d, _, files in os.walk(root):
        for name in files:
            p = os.path.join(d, name)
            try:
                data = open(p, 'rb').read()
            except OSError:
                continue
            for o, w in zip(offsets, windows):
                if w in data:
                    found.append('%s (offset %d)' % (p, o))
print('\n'.join(found))
sys.exit(1 if found else 0)
EOF
if python3 "$T/windows.py" "$T/random" "$S" "$S0" "$CMKSTORE_HOME" >"$T/hits"; then
    ok "no 16-byte window of the random blob in the store or the home"
else
    not_ok "random blob windows found: $(head -3 "$T/hits" | tr '\n' ' ')"
fi
# The blob files really are there (the search above looked at them).
expect_eq "$(find "$S/blobs" -type f | wc -l)" 4 "four distinct blobs stored"

# ---- modes
for root in "$S" "$S0" "$CMKSTORE_HOME"; do
    bad=$(find "$root" -type f -perm /0177 -printf '%m %p\n' | head -5)
    expect_eq "$bad" "" "files under $(basename "$root") are 0600 or stricter"
    bad=$(find "$root" -type d ! -perm 0700 -printf '%m %p\n' | head -5)
    expect_eq "$bad" "" "directories under $(basename "$root") are 0700"
done
expect_ok cmk blob get --store "$S" "$(oci_digest "$T/text")" -o "$T/out"
expect_eq "$(stat -c %a "$T/out")" 600 "blob get -o creates the output 0600"
expect_true "and it is byte-exact" cmp "$T/out" "$T/text"
