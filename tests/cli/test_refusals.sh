#!/usr/bin/env bash
# test_refusals.sh — every refusal has its exit code, a clear message, and changes nothing
# (the store and home trees are compared before and after; the vault's audit log and the
# store's event log, which record refused operations on purpose, are left out).
source "$(dirname "$0")/lib.sh"

setup_cmk w
S=$T/store
S0=$T/store0
cmk create --store "$S" --identity wid --key-encryption-key "$KID" >/dev/null
cmk create --store "$S0" >/dev/null
gen_random a 300000 "$T/a"
DA=$(cmk blob put --store "$S" "$T/a")

# refused CMD...: expects exit CODE, stderr matching REGEX, and no change under the home and
# both stores (and no store at any extra directory given with NEWDIR=...).
refused() { # CODE REGEX WHAT CMD...
    local code=$1 re=$2 what=$3
    shift 3
    snapshot "$CMKSTORE_HOME" "$S" "$S0" >"$T/before"
    expect_exit "$code" "$@"
    expect_err_match "$re" "$what: message"
    expect_true "$what: stderr starts with 'cmkstore: error:'" grep -q '^cmkstore: error: ' "$ERR"
    snapshot "$CMKSTORE_HOME" "$S" "$S0" >"$T/after"
    expect_unchanged "$T/before" "$T/after" "$what"
    if [ -n "${NEWDIR:-}" ]; then
        expect_false "$what: no store at $NEWDIR" test -e "$NEWDIR"
        expect_false "$what: no staging leftovers" compgen -G "$NEWDIR.*"
    fi
}

# ---- keys and identities at create
cmk vault key create --vault-name wvault --name eckey --kty EC >"$T/ec.json"
ECKID=$(jq -r .key.kid "$T/ec.json")
NEWDIR=$T/new refused 6 'only RSA and RSA-HSM' "EC key at create" \
    cmk create --store "$T/new" --identity wid --key-encryption-key "$ECKID"

cmk identity create --name nowrap >"$T/nowrap.json"
cmk vault set-policy --name wvault --object-id "$(jq -r .principalId "$T/nowrap.json")" \
    --key-permissions get unwrapKey >/dev/null
NEWDIR=$T/new refused 5 'wrapKey' "identity without wrapKey" \
    cmk create --store "$T/new" --identity nowrap --key-encryption-key "$KID"
expect_err_match 'nowrap|'"$(jq -r .principalId "$T/nowrap.json")" \
    "identity without wrapKey: message names the identity"
expect_err_match "set-policy" "identity without wrapKey: hint says how to grant"

cmk identity create --name nounwrap >"$T/nounwrap.json"
cmk vault set-policy --name wvault --object-id "$(jq -r .principalId "$T/nounwrap.json")" \
    --key-permissions get wrapKey >/dev/null
NEWDIR=$T/new refused 5 'unwrapKey' "identity without unwrapKey" \
    cmk create --store "$T/new" --identity nounwrap --key-encryption-key "$KID"

cmk identity create --name noget >"$T/noget.json"
cmk vault set-policy --name wvault --object-id "$(jq -r .principalId "$T/noget.json")" \
    --key-permissions wrapKey unwrapKey >/dev/null
NEWDIR=$T/new refused 5 'denied|get' "identity without get" \
    cmk create --store "$T/new" --identity noget --key-encryption-key "$KID"

NEWDIR=$T/new refused 3 'nosuchid' "unknown identity" \
    cmk create --store "$T/new" --identity nosuchid --key-encryption-key "$KID"
NEWDIR=$T/new refused 2 'local://' "malformed kid (no key name)" \
    cmk create --store "$T/new" --identity wid --key-encryption-key "local://wvault/keys"
NEWDIR=$T/new refused 2 'local://' "malformed kid (bad version)" \
    cmk create --store "$T/new" --identity wid --key-encryption-key "$KID_NOVER/not-a-version"
NEWDIR=$T/new refused 5 'nokey|not found' "kid of a missing key" \
    cmk create --store "$T/new" --identity wid --key-encryption-key "local://wvault/keys/nokey"
NEWDIR=$T/new refused 2 'go together' "--identity without --key-encryption-key" \
    cmk create --store "$T/new" --identity wid
NEWDIR=$T/new refused 2 'go together' "--key-encryption-key without --identity" \
    cmk create --store "$T/new" --key-encryption-key "$KID"
NEWDIR=$T/new refused 2 'chunk' "chunk size not a power of two" \
    cmk create --store "$T/new" --chunk-size 100000
NEWDIR=$T/new refused 2 'chunk' "chunk size too large" cmk create --store "$T/new" --chunk-size 32M
printf '{"status": "enabled", "keyVaultProperties": {"identity": "wid",\n "keyIdentifier": }}\n' \
    >"$T/bad.json"
NEWDIR=$T/new refused 2 'line 2' "--config malformed JSON: exit 2 with the position" \
    cmk create --store "$T/new" --config "$T/bad.json"
printf '{"status": "disabled", "keyVaultProperties": {"identity": "wid", "keyIdentifier": "%s"}}' \
    "$KID" >"$T/conflict.json"
NEWDIR=$T/new refused 2 'disabled' "--config disabled status with a key" \
    cmk create --store "$T/new" --config "$T/conflict.json"
printf '{"resources": [{"type": "Microsoft.KeyVault/vaults"}]}' >"$T/noreg.json"
NEWDIR=$T/new refused 2 'ContainerRegistry' "--config template without a registry" \
    cmk create --store "$T/new" --config "$T/noreg.json"
printf '{"encryption": {"status": "enabled", "keyVaultProperties": {"identity": "wid", "keyIdentifier": "[parameters('"'"'kek'"'"')]"}}}' \
    >"$T/param.json"
NEWDIR=$T/new refused 2 "parameters kek=" "--config parameter without a value" \
    cmk create --store "$T/new" --config "$T/param.json"

# ---- the seeds' rules: CMK only at creation, never disabled
refused 6 'only be enabled when a store is created' "encryption enable" \
    cmk encryption enable --store "$S0" --identity wid --key-encryption-key "$KID"
refused 6 'can never be disabled' "encryption disable (CMK store)" \
    cmk encryption disable --store "$S"
refused 6 'can never be disabled' "encryption disable (store-managed store)" \
    cmk encryption disable --store "$S0"
refused 6 'already exists' "enabling CMK on an existing store via create" \
    cmk create --store "$S0" --identity wid --key-encryption-key "$KID"
refused 6 'already exists' "create on an existing store" cmk create --store "$S"
refused 6 'customer-managed' "rotate-key on a store-managed store" \
    cmk encryption rotate-key --store "$S0" --key-encryption-key "$KID" --identity wid
refused 6 'only RSA' "rotate-key to an EC key" \
    cmk encryption rotate-key --store "$S" --key-encryption-key "$ECKID"
mkdir "$T/nonempty" && echo x >"$T/nonempty/f"
refused 6 'not empty' "create in a non-empty directory" cmk create --store "$T/nonempty"

# ---- blobs
gen_random b 5000 "$T/b"
DB=$(oci_digest "$T/b")
WRONG="sha256:$(printf '0%.0s' {1..64})"
refused 4 'digest' "put with a wrong expected digest" \
    cmk blob put --store "$S" --digest "$WRONG" "$T/b"
expect_exit 3 cmk blob stat --store "$S" "$DB"
expect_exit 3 cmk blob stat --store "$S" "$WRONG"
expect_ok cmk blob ls --store "$S"
expect_json "length == 1" "wrong digest: the blob is not there"
refused 2 'digest' "put with a malformed digest" cmk blob put --store "$S" --digest sha256:xyz "$T/b"
refused 3 'not in the store|not found' "get of a missing blob" cmk blob get --store "$S" "$DB" -o "$T/o"
expect_false "missing blob: no output file" test -e "$T/o"
refused 2 'digest' "get with a malformed digest" cmk blob get --store "$S" "sha256:../../etc"
refused 2 'range' "bad --range (end before start)" cmk blob get --store "$S" "$DA" --range 10-5
refused 2 'range' "bad --range (garbage)" cmk blob get --store "$S" "$DA" --range abc
refused 2 'range' "bad --range (start past the end)" \
    cmk blob get --store "$S" "$DA" --range 300001-300010 -o "$T/o"
expect_false "bad range: no output file" test -e "$T/o"
refused 3 'no store' "a store that does not exist" cmk blob ls --store "$T/nostore"
refused 3 'nofile' "put of a missing file" cmk blob put --store "$S" "$T/nofile"

# ---- vault: purge protection
cmk vault key create --vault-name wvault --name doomed >/dev/null
expect_ok cmk vault key delete --vault-name wvault --name doomed
refused 6 'purge protection' "purge of a deleted key under purge protection" \
    cmk vault key purge --vault-name wvault --name doomed
expect_ok cmk vault key list-deleted --vault-name wvault
expect_json 'map(tostring) | join(" ") | contains("doomed")' "deleted key is listed"
expect_ok cmk vault key recover --vault-name wvault --name doomed
cmk vault create --name pvault --enable-purge-protection >/dev/null
expect_ok cmk vault delete --name pvault
refused 6 'purge protection' "purge of a deleted vault under purge protection" \
    cmk vault purge --name pvault
expect_ok cmk vault recover --name pvault
refused 6 'exists' "vault create of an existing vault" cmk vault create --name wvault
refused 6 'exists' "identity create of an existing identity" cmk identity create --name wid
refused 2 'name' "bad identity name" cmk identity create --name 'bad name!'
refused 3 'nosuch' "vault show of a missing vault" cmk vault show --name nosuch
refused 2 'retention' "retention days out of range" cmk vault create --name r --retention-days 3
refused 2 'permission|bogus' "unknown key permission" \
    cmk vault set-policy --name wvault --object-id "$PRINCIPAL" --key-permissions get bogus

# ---- usage errors
refused 2 'unknown command' "unknown command" cmk frobnicate
refused 2 'unknown command' "unknown subcommand" cmk vault frobnicate
refused 2 'missing command' "group without a command" cmk blob
refused 2 'unknown or ambiguous option' "unknown option" cmk blob ls --store "$S" --bogus
refused 2 'missing required option --store' "missing required option" cmk blob ls
refused 2 'needs a value' "option without its value" cmk blob ls --store
refused 2 'true or false' "bad boolean" \
    cmk vault key set-attributes --vault-name wvault --name wkey --enabled maybe

# ---- --help for every command and group
mapfile -t cmds < <(cmk --help | sed -n '/^Commands:/,/^$/p' | sed -n 's/^  \([a-z][a-z-]*\( [a-z][a-z-]*\)*\)  .*/\1/p')
expect_true "help lists at least 30 commands (${#cmds[@]})" test "${#cmds[@]}" -ge 30
for c in "${cmds[@]}"; do
    read -r -a words <<<"$c"
    expect_exit 0 cmk "${words[@]}" --help
    expect_true "'$c --help' prints Usage" grep -q '^Usage: cmkstore '"$c" "$OUT"
    expect_true "'$c --help' has an example" grep -q '^Example:' "$OUT"
    expect_exit 0 cmk "${words[@]}" -h
done
for g in identity vault "vault key" encryption blob; do
    read -r -a words <<<"$g"
    expect_exit 0 cmk "${words[@]}" --help
    expect_true "'$g --help' prints Usage" grep -q "^Usage: cmkstore $g <command>" "$OUT"
done
expect_exit 0 cmk --help
expect_true "--help prints Usage" grep -q '^Usage: ' "$OUT"
expect_exit 0 cmk -h
