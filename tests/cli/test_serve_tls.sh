#!/usr/bin/env bash
# test_serve_tls.sh — `cmkstore serve --tls-cert/--tls-key`: skopeo and podman push and pull
# over HTTPS verifying the server's certificate against a test CA (--dest-cert-dir /
# --cert-dir; never --tls-verify=false), byte for byte; TLS 1.2 and 1.3 accepted, 1.1
# refused; keep-alive; SIGHUP reloads a new certificate (new connections verify against the
# new CA only), a broken one is refused and the old one stays; mistakes in the options and
# files are refused.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

use_skopeo podman

# mk_ca NAME: a CA (P-256) in $T/NAME-ca.{crt,key} and a server certificate it signs for
# 127.0.0.1 and localhost in $T/NAME.crt (chain: leaf then CA) and $T/NAME.key (0600); the CA
# alone, as clients want it, in $T/NAME-certs/ca.crt.
mk_ca() {
    local n=$1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=cmkstore test CA $n" -keyout "$T/$n-ca.key" -out "$T/$n-ca.crt" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$T/$n.key" -out "$T/$n.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$T/$n.ext"
    openssl x509 -req -in "$T/$n.csr" -CA "$T/$n-ca.crt" -CAkey "$T/$n-ca.key" -CAcreateserial \
        -days 2 -extfile "$T/$n.ext" -out "$T/$n.leaf" 2>/dev/null
    cat "$T/$n.leaf" "$T/$n-ca.crt" >"$T/$n.crt"
    chmod 600 "$T/$n.key"
    mkdir -p "$T/$n-certs"
    cp "$T/$n-ca.crt" "$T/$n-certs/ca.crt"
}
mk_ca one
mk_ca two

# ---- mistakes
expect_exit 2 cmk serve --listen 127.0.0.1:0 --tls-cert "$T/one.crt"
expect_err_match 'go together' "--tls-cert without --tls-key is refused"
chmod 644 "$T/one.key"
expect_exit 6 cmk serve --listen 127.0.0.1:0 --tls-cert "$T/one.crt" --tls-key "$T/one.key"
expect_err_match 'group or others|0600|mode' "a key file readable by others is refused"
expect_false "... without printing the key" grep -q 'PRIVATE' "$ERR"
chmod 600 "$T/one.key"
expect_exit 2 cmk serve --listen 127.0.0.1:0 --tls-cert "$T/one.crt" --tls-key "$T/two.key"
expect_err_match 'match|key' "a key that is not the certificate's is refused"

start_server tls --tls-cert "$T/one.crt" --tls-key "$T/one.key"
expect_true "the server names its certificate's fingerprint" grep -q '^TLS: .*SHA-256 ' "$SRV_OUT"
expect_true "the hint verifies the certificate (no --dest-tls-verify=false)" \
    grep -q '^Try: skopeo copy --dest-cert-dir' "$SRV_OUT"

# ---- curl: the certificate verifies against the CA; TLS 1.2 and 1.3 only; keep-alive
st=$(hcurl "$T/r" --cacert "$T/one-ca.crt" "$URL/v2/")
expect_eq "$st" 200 "GET /v2/ over HTTPS, verified against the CA"
expect_exit 60 curl -sS -o /dev/null "$URL/v2/"
ok "without the CA the certificate does not verify"
expect_ok curl -sS -o /dev/null --cacert "$T/one-ca.crt" --tlsv1.2 --tls-max 1.2 "$URL/v2/"
expect_ok curl -sS -o /dev/null --cacert "$T/one-ca.crt" --tlsv1.3 "$URL/v2/"
expect_exit 1 openssl s_client -connect "$HP" -tls1_1 -CAfile "$T/one-ca.crt" </dev/null
ok "TLS 1.1 is refused"
expect_false "plain HTTP to the TLS port gets no registry answer" \
    curl -sS -o /dev/null --max-time 10 "http://$HP/v2/"
curl -sS -v -o /dev/null -o /dev/null --cacert "$T/one-ca.crt" "$URL/v2/" "$URL/v2/" 2>"$T/ka" || true
expect_true "HTTP/1.1 keep-alive: the second request reuses the connection" \
    grep -qi 're-using existing connection' "$T/ka"

# ---- skopeo and podman verify the certificate
MD=$(mk_oci_layout "$T/img" tls-seed 64 300)
expect_ok "${SK[@]}" copy --preserve-digests --dest-cert-dir "$T/one-certs" \
    "oci:$T/img:latest" "docker://$HP/demo/app:v1"
expect_ok "${SK[@]}" copy --preserve-digests --src-cert-dir "$T/one-certs" \
    --dest-oci-accept-uncompressed-layers "docker://$HP/demo/app:v1" "oci:$T/back:latest"
expect_eq "$(layout_manifest "$T/back")" "$MD" "skopeo pulls back the same manifest digest"
same=1
for f in "$T"/img/blobs/sha256/*; do
    cmp -s "$f" "$T/back/blobs/sha256/$(basename "$f")" || same=0
done
expect_eq "$same" 1 "every blob byte-identical over HTTPS"
expect_exit 1 "${SK[@]}" inspect --raw "docker://$HP/demo/app:v1"
expect_err_match 'certificate|x509' "skopeo without the CA refuses the server"
PRUN=$(mktemp -d /tmp/cmkpm.XXXXXX) # podman wants a runroot path of at most 50 characters
on_exit 'rm -rf "$PRUN"'
PM=(podman --root "$T/podman/root" --runroot "$PRUN" --storage-driver vfs
    --cgroup-manager cgroupfs --events-backend none)
export CONTAINERS_REGISTRIES_CONF="$T/registries.conf"
printf 'unqualified-search-registries = []\n' >"$CONTAINERS_REGISTRIES_CONF"
expect_ok "${PM[@]}" pull --cert-dir "$T/one-certs" "docker://$HP/demo/app:v1"
expect_ok "${PM[@]}" push --cert-dir "$T/one-certs" "$HP/demo/app:v1" "docker://$HP/team/app:v1"
expect_ok "${SK[@]}" copy --src-cert-dir "$T/one-certs" --dest-oci-accept-uncompressed-layers \
    "docker://$HP/team/app:v1" "oci:$T/team:latest"
expect_true "podman's push pulls back: every blob hashes to its name" layout_verify "$T/team"

# ---- SIGHUP: a new certificate from another CA, then a broken one
cp "$T/two.crt" "$T/one.crt"
cp "$T/two.key" "$T/one.key"
kill -HUP "$SRV_PID"
expect_true "the log says the certificate was reloaded" \
    wait_for 30 grep -q 'SIGHUP: certificate reloaded' "$SRV_ERR"
st=$(hcurl "$T/r" --cacert "$T/two-ca.crt" "$URL/v2/")
expect_eq "$st" 200 "after SIGHUP: new connections verify against the new CA"
expect_exit 60 curl -sS -o /dev/null --cacert "$T/one-ca.crt" "$URL/v2/"
ok "... and no longer against the old one"
expect_ok "${SK[@]}" inspect --raw --cert-dir "$T/two-certs" "docker://$HP/demo/app:v1"
expect_true "skopeo with the new CA reads the manifest" cmp "$OUT" "$T/img/blobs/sha256/${MD#sha256:}"
echo 'not a certificate' >"$T/one.crt"
kill -HUP "$SRV_PID"
expect_true "a broken certificate file is not loaded" \
    wait_for 30 grep -q 'SIGHUP: the certificate was not reloaded' "$SRV_ERR"
st=$(hcurl "$T/r" --cacert "$T/two-ca.crt" "$URL/v2/")
expect_eq "$st" 200 "... the server goes on with the last good certificate"
expect_false "no key material in the log" grep -q 'PRIVATE KEY' "$SRV_ERR"

stop_server TERM
expect_eq "$SRV_EXIT" 0 "the server stops cleanly"
