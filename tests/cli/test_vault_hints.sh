#!/usr/bin/env bash
# test_vault_hints.sh — the vault and identity libraries state the fault; the command line
# adds which command to run. Each refusal below prints its error line (the library's
# message, without a `cmkstore ...` command in it) and a "hint:" line naming the command.
source "$(dirname "$0")/lib.sh"

setup_cmk h

# hinted EXIT HINT_REGEX WHAT CMD...: the error line names no command, the hint does.
hinted() {
    local code=$1 re=$2 what=$3
    shift 3
    expect_exit "$code" "$@"
    expect_true "$what: error line names no command" \
        bash -c "grep '^cmkstore: error: ' '$ERR' | grep -qv '\`cmkstore'"
    expect_true "$what: a hint follows" grep -q '^hint: ' "$ERR"
    expect_err_match "^hint: .*$re" "$what: the hint names the command"
}

hinted 3 'vault key create --vault-name hvault --name nokey' "key not found" \
    cmk vault key show --vault-name hvault --name nokey
hinted 2 'identity show --name NAME' "object id not a UUID" \
    cmk vault set-policy --name hvault --object-id not-a-uuid --key-permissions get
hinted 6 'identity delete --name hid' "identity exists" cmk identity create --name hid
hinted 6 'vault recover --name hvault' "vault exists" cmk vault create --name hvault

# A soft-deleted key: operations on it, its re-creation and a protected purge.
cmk vault key create --vault-name hvault --name gone >/dev/null
cmk vault key delete --vault-name hvault --name gone >/dev/null
hinted 5 'vault key recover --vault-name hvault --name gone' "deleted key" \
    cmk vault key list-versions --vault-name hvault --name gone
hinted 6 'vault key purge --vault-name hvault --name gone' "create over a deleted key" \
    cmk vault key create --vault-name hvault --name gone
hinted 6 'vault key recover --vault-name hvault --name gone' "purge under protection" \
    cmk vault key purge --vault-name hvault --name gone
hinted 6 'vault key delete --vault-name hvault --name hkey' "purge of a live key" \
    cmk vault key purge --vault-name hvault --name hkey

# A soft-deleted vault: purge under protection, policies.
cmk vault create --name pvault --enable-purge-protection >/dev/null
hinted 6 'vault delete --name pvault' "purge of a live vault" cmk vault purge --name pvault
cmk vault delete --name pvault >/dev/null
hinted 6 'vault recover --name pvault' "purge of a protected vault" cmk vault purge --name pvault
hinted 6 'vault recover --name pvault' "policy in a deleted vault" \
    cmk vault set-policy --name pvault --object-id "$PRINCIPAL" --key-permissions get


# The library's vault and identity faults that once named their command.
hinted 3 'vault create --name nosuch' "vault not found" cmk vault show --name nosuch
hinted 3 'vault create --name nosuch' "key in a missing vault" \
    cmk vault key create --vault-name nosuch --name k
hinted 5 'vault recover --name pvault' "key in a deleted vault" \
    cmk vault key show --vault-name pvault --name any
hinted 6 'vault create --name NAME --hsm-token .*--kty RSA' "RSA-HSM in a software vault" \
    cmk vault key create --vault-name hvault --name hsmkey --kty RSA-HSM
hinted 3 'identity create --name NAME' "identity not found" cmk identity show --name nosuchid
hinted 3 'identity list' "identity not found (delete)" cmk identity delete --name nosuchid

# A store's key refused by the vault: denied by its access policy, disabled.
S=$T/store
printf 'hint data\n' >"$T/data"
cmk create --store "$S" --identity hid --key-encryption-key "$KID" >/dev/null
cmk vault delete-policy --name hvault --object-id "$PRINCIPAL" >/dev/null
hinted 5 'vault set-policy' "access policy denial" cmk blob put --store "$S" "$T/data"
cmk vault set-policy --name hvault --object-id "$PRINCIPAL" \
    --key-permissions get unwrapKey wrapKey >/dev/null
cmk vault key set-attributes --vault-name hvault --name hkey --enabled false >/dev/null
hinted 5 'vault key set-attributes --vault-name VAULT --name KEY --enabled true' "key disabled" \
    cmk blob put --store "$S" "$T/data"
cmk vault key set-attributes --vault-name hvault --name hkey --enabled true >/dev/null
expect_ok cmk blob put --store "$S" "$T/data"

finish
