#!/usr/bin/env bash
# test_lifecycle_crash.sh — SIGKILL `cmkstore encryption rotate-key` at random points, many
# times, alternating between two key versions, on a store whose blobs are spread over many
# DEKs. Whatever the kill point, after every kill: the store opens with its key accessible
# (every DEK unwraps with the version the keyring names), the keyring names one of the two
# versions for every DEK, no blob file changed, a sampled blob verifies; at the end every
# blob verifies and no keyring temporary is left behind. (The blob count does not matter to a
# rotation, which touches DEKs only; the DEK count does.)
#
# CMK_ROTATION_KILLS (default 30) sets the number of kills.
source "$(dirname "$0")/lib.sh"

KILLS=${CMK_ROTATION_KILLS:-30}
NDEK=6
PER_DEK=2

setup_cmk k
V1=$KID
cmk vault key create --vault-name kvault --name kkey >"$T/v2.json"
V2=$(jq -r .key.kid "$T/v2.json")
S=$T/store
expect_ok cmk create --store "$S" --identity kid --key-encryption-key "$V1"

# Blobs under NDEK data keys (puts of one DEK run in parallel).
mkdir "$T/src"
for d in $(seq 1 $NDEK); do
    [ "$d" -eq 1 ] || cmk encryption rotate-dek --store "$S" >/dev/null
    for j in $(seq 1 $PER_DEK); do
        gen_random "crash$d.$j" $((3000 + 97 * d + j)) "$T/src/$d.$j"
    done
    printf '%s\n' "$T"/src/"$d".* | xargs -P "$PER_DEK" -n 1 "$CMKSTORE_BIN" blob put --store "$S" \
        >>"$T/digests"
done
NBLOBS=$((NDEK * PER_DEK))
expect_eq "$(sort -u "$T/digests" | wc -l)" "$NBLOBS" "$NBLOBS blobs stored"
expect_ok cmk encryption show --store "$S"
expect_json ".dekCount == $NDEK" "$NDEK data keys"
(cd "$S/blobs" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/sums0"
mapfile -t DIGESTS <"$T/digests"

echo "# setup: $((SECONDS - T_START)) s"

# The length of one rotation sets the range of kill delays.
t0=$(date +%s%N)
expect_ok cmk encryption rotate-key --store "$S" --key-encryption-key "$V2"
ROT_MS=$((($(date +%s%N) - t0) / 1000000))
MAX_MS=$((ROT_MS * 3 / 2 + 5))
echo "# one rotation over $NDEK DEKs: ${ROT_MS} ms; kills within 0..${MAX_MS} ms"

RANDOM=4242 # reproducible kill points for a given machine speed
bad=0 rotated=0 kept=0 cur=$V2
for i in $(seq 1 "$KILLS"); do
    if [ $((i % 2)) -eq 1 ]; then target=$V1; else target=$V2; fi
    "$CMKSTORE_BIN" encryption rotate-key --store "$S" --key-encryption-key "$target" \
        >/dev/null 2>&1 &
    pid=$!
    ms=$((RANDOM % (MAX_MS + 1)))
    sleep "$(printf '0.%03d' "$ms")"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true

    why=
    if ! "$CMKSTORE_BIN" encryption show --store "$S" >"$T/show.json" 2>"$T/show.err"; then
        why="store does not open: $(head -c 300 "$T/show.err")"
    elif ! jq -e '.keyAccess.accessible == true' "$T/show.json" >/dev/null; then
        why="key not accessible: $(jq -c .keyAccess "$T/show.json")"
    else
        now=$(jq -r .keyVaultProperties.versionedKeyIdentifier "$T/show.json")
        if [ "$now" != "$V1" ] && [ "$now" != "$V2" ]; then
            why="keyring names $now"
        elif ! jq -e --arg v "$now" "[.deks[].kid] | length == $NDEK and all(. == \$v)" \
            "$S/keyring.json" >/dev/null; then
            why="keyring DEKs not all wrapped by $now"
        elif ! (cd "$S/blobs" && find . -type f -print0 | sort -z | xargs -0 sha256sum) |
            cmp -s - "$T/sums0"; then
            why="a blob file changed"
        else
            # A blob every third round, of another DEK each time: the open above has already
            # unwrapped every DEK and no blob file changed, so every blob reads; all of them
            # are verified at the end.
            if [ $((i % 3)) -eq 0 ]; then
                k=$(((i / 3 * PER_DEK + i / 3 / NDEK) % NBLOBS))
                "$CMKSTORE_BIN" blob verify --store "$S" "${DIGESTS[$k]}" >/dev/null 2>&1 ||
                    why="blob ${DIGESTS[$k]} does not verify"
            fi
        fi
        if [ "$target" != "$cur" ]; then
            if [ "$now" = "$target" ]; then rotated=$((rotated + 1)); else kept=$((kept + 1)); fi
        fi
        cur=$now
    fi
    if [ -n "$why" ]; then
        bad=$((bad + 1))
        echo "# kill $i after ${ms} ms: $why"
    fi
done
echo "# of the kills aimed at the other version: $rotated completed first, $kept left the old one"
echo "# kills done at $((SECONDS - T_START)) s"
expect_eq "$bad" 0 "every kill left a store that opens, reads and names an existing version"

# At the end: every blob verifies; the temporaries of killed keyring writes are gone.
expect_ok cmk blob ls --store "$S"
nbad=0
for d in "${DIGESTS[@]}"; do
    "$CMKSTORE_BIN" blob verify --store "$S" "$d" >/dev/null 2>&1 || nbad=$((nbad + 1))
done
expect_eq "$nbad" 0 "all $NBLOBS blobs verify after $KILLS kills"
expect_false "no keyring temporary left after an open" compgen -G "$S/keyring.json.tmp*"
# A completed rotation still works, and the other version can then be disabled.
expect_ok cmk encryption rotate-key --store "$S" --key-encryption-key "$V2"
expect_ok cmk vault key set-attributes --vault-name kvault --name kkey \
    --version "${V1##*/}" --enabled false
expect_ok cmk blob verify --store "$S" "${DIGESTS[0]}"
expect_ok cmk blob verify --store "$S" "${DIGESTS[$((NBLOBS - 1))]}"
