// compat.mjs — the official Azure SDK for JavaScript (@azure/keyvault-keys, @azure/identity,
// versions pinned in package-lock.json) against `cmkstore vault serve`. Run by
// tests/cli/test_vault_sdk.sh, which starts the server, makes the vault, key and identity and
// sets the environment:
//   VAULT_URL       https://127.0.0.1:PORT
//   KEY_NAME        the key (RSA, policy get/list/wrapKey/unwrapKey for the identity)
//   CLIENT_ID       the identity's clientId (ManagedIdentityCredential, user-assigned)
//   AZURE_POD_IDENTITY_AUTHORITY_HOST   the server (its IMDS-shaped token endpoint)
//   NODE_EXTRA_CA_CERTS                 the server's self-signed certificate
//   STEP            which step to run (the shell test runs the CLI between steps)
//   WORK            a directory to exchange files with the shell test
// Each check prints "ok - ..." or "not ok - ..."; the exit status is 1 if any failed.
import { ManagedIdentityCredential } from "@azure/identity";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { createPublicKey, hkdfSync, publicEncrypt, constants, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import https from "node:https";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const vaultUrl = env("VAULT_URL");
const keyName = env("KEY_NAME");
const clientId = env("CLIENT_ID");
const work = env("WORK");
const step = env("STEP");

let failed = 0;
const ok = (cond, what) => {
  console.log(`${cond ? "ok" : "not ok"} - ${what}`);
  if (!cond) failed++;
};

// Every request the SDK sends, as the server saw it on the wire: recorded by a pipeline
// policy placed after the SDK's own (challenge, retry) policies, so each attempt is seen.
const wire = [];
const recorder = {
  name: "cmkstoreWireRecorder",
  async sendRequest(request, next) {
    const response = await next(request);
    wire.push({
      method: request.method,
      url: request.url,
      auth: request.headers.has("authorization"),
      status: response.status,
    });
    return response;
  },
};
const credential = new ManagedIdentityCredential({ clientId });
const options = {
  disableChallengeResourceVerification: true,
  additionalPolicies: [{ policy: recorder, position: "perRetry" }],
  retryOptions: { maxRetries: 3, retryDelayInMs: 10, maxRetryDelayInMs: 50 },
};

async function steps() {
  if (step === "main") return mainStep();
  if (step === "denied") return deniedStep();
  if (step === "unwrap-cmk") return unwrapCmkStep();
  throw new Error(`unknown STEP ${step}`);
}

async function mainStep() {
  const client = new KeyClient(vaultUrl, credential, options);

  // Versionless: the latest version. The SDK sends /keys/<name>/ with a trailing slash.
  const latest = await client.getKey(keyName);
  ok(latest.name === keyName && latest.keyType === "RSA", "getKey versionless: name and kty");
  ok(latest.id.startsWith(`${vaultUrl}/keys/${keyName}/`) && latest.properties.version.length === 32,
     `getKey versionless: kid ${latest.id} names a version`);
  ok(latest.properties.enabled === true, "getKey: attributes.enabled");
  ok(latest.properties.createdOn instanceof Date && !isNaN(latest.properties.createdOn),
     "getKey: created is a date");
  ok(latest.keyOperations.includes("wrapKey") && latest.keyOperations.includes("unwrapKey"),
     "getKey: key_ops include wrapKey and unwrapKey");
  const first = wire[0];
  ok(first && !first.auth && first.status === 401,
     "the SDK's first request carries no token and gets the 401 challenge");
  ok(wire.some((w) => w.auth && w.status === 200), "the retry with the token gets 200");
  ok(wire.every((w) => new URL(w.url).search.includes("api%2Dversion=") ||
                       new URL(w.url).search.includes("api-version=")),
     "every request names an api-version");
  ok(wire.some((w) => /api%2Dversion=/.test(w.url)),
     `the SDK percent-encodes the name: ${wire[0] && new URL(wire[0].url).search}`);
  ok(wire.some((w) => /api%2Dversion=2025-07-01/.test(w.url)),
     "the default service version is 2025-07-01");
  ok(wire.some((w) => new URL(w.url).pathname === `/keys/${keyName}/`),
     "getKey versionless sends /keys/<name>/ (trailing slash)");

  // Versioned.
  const version = latest.properties.version;
  const byVersion = await client.getKey(keyName, { version });
  ok(byVersion.id === latest.id && byVersion.key.n.equals(latest.key.n),
     "getKey versioned: same key as the latest");

  // serviceVersion "7.4" is selectable.
  const wire74 = wire.length;
  const client74 = new KeyClient(vaultUrl, credential, { ...options, serviceVersion: "7.4" });
  const k74 = await client74.getKey(keyName, { version });
  ok(k74.id === latest.id, "serviceVersion 7.4: getKey works");
  ok(wire.slice(wire74).some((w) => /api%2Dversion=7\.4/.test(w.url)),
     "serviceVersion 7.4 is sent as api%2Dversion=7.4");

  // Versions list.
  const versions = [];
  for await (const p of client.listPropertiesOfKeyVersions(keyName)) versions.push(p.version);
  ok(versions.includes(version), `listPropertiesOfKeyVersions lists ${versions.length} version(s)`);

  // Wrap and unwrap through the vault: RSA-OAEP-256.
  const crypto = new CryptographyClient(latest.id, credential, options);
  const dek = randomBytes(32);
  const wireBefore = wire.length;
  const wrapped = await crypto.wrapKey("RSA-OAEP-256", dek);
  ok(wrapped.result.length === 256 && wrapped.keyID === latest.id,
     "wrapKey RSA-OAEP-256: 256 bytes, kid of the version");
  ok(wire.slice(wireBefore).some((w) => w.method === "POST" && /\/wrapkey$/.test(new URL(w.url).pathname)),
     "wrapKey RSA-OAEP-256 went to the vault (POST .../wrapkey)");
  const unwrapped = await crypto.unwrapKey("RSA-OAEP-256", wrapped.result);
  ok(Buffer.compare(Buffer.from(unwrapped.result), dek) === 0, "unwrapKey RSA-OAEP-256 round trip");

  // RSA-OAEP (SHA-1): the SDK wraps locally with the public key it fetched; the vault
  // unwraps.
  const wireOaep = wire.length;
  const w1 = await crypto.wrapKey("RSA-OAEP", dek);
  ok(!wire.slice(wireOaep).some((w) => w.method === "POST"),
     "wrapKey RSA-OAEP is done locally by the SDK (no POST)");
  const u1 = await crypto.unwrapKey("RSA-OAEP", w1.result);
  ok(Buffer.compare(Buffer.from(u1.result), dek) === 0, "RSA-OAEP local wrap, vault unwrap");

  // Local refusal: a key whose key_ops lack the operation is refused by the SDK itself.
  const jwk = { ...latest.key, keyOps: ["unwrapKey"] };
  const local = new CryptographyClient(jwk);
  let refused = null;
  try {
    await local.wrapKey("RSA-OAEP", dek);
  } catch (e) {
    refused = e;
  }
  ok(refused !== null && /wrapKey/i.test(String(refused.message)),
     `the SDK refuses locally without wrapKey in key_ops (${refused && refused.message})`);

  // A wrapped DEK for the 403 step, the version's kid, and a wrap made with node's own
  // crypto from the public key the SDK fetched (n, e), unwrapped by the vault.
  const dek2 = randomBytes(32);
  const w2 = await crypto.wrapKey("RSA-OAEP-256", dek2);
  writeFileSync(`${work}/sdk_wrapped.bin`, Buffer.from(w2.result));
  writeFileSync(`${work}/kid.txt`, latest.id);
  const pub = createPublicKey({ key: { kty: "RSA", n: Buffer.from(latest.key.n).toString("base64url"),
                                       e: Buffer.from(latest.key.e).toString("base64url") },
                                format: "jwk" });
  // Local OAEP-256 wrap with node's own crypto, unwrapped by the vault through the SDK.
  const dek3 = randomBytes(32);
  const w3 = publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, dek3);
  const u3 = await crypto.unwrapKey("RSA-OAEP-256", w3);
  ok(Buffer.compare(Buffer.from(u3.result), dek3) === 0, "a node-crypto OAEP-256 wrap unwraps in the vault");
}

// After `vault delete-policy`: 403 Forbidden with AccessDenied.
async function deniedStep() {
  const kid = readFileSync(`${work}/kid.txt`, "utf8").trim();
  const client = new KeyClient(vaultUrl, credential, options);
  let err = null;
  try {
    await client.getKey(keyName);
  } catch (e) {
    err = e;
  }
  ok(err && err.statusCode === 403, `getKey after delete-policy: 403 (${err && err.statusCode})`);
  ok(err && err.code === "Forbidden", `error code Forbidden (${err && err.code})`);
  ok(err && /AccessDenied/.test(JSON.stringify(err.details ?? err.response?.bodyAsText ?? "")) ||
     (err && /AccessDenied/.test(String(err.response?.bodyAsText))),
     "innererror AccessDenied");
  const crypto = new CryptographyClient(kid, credential, options);
  let uerr = null;
  try {
    await crypto.unwrapKey("RSA-OAEP-256", readFileSync(`${work}/sdk_wrapped.bin`));
  } catch (e) {
    uerr = e;
  }
  ok(uerr && uerr.statusCode === 403, `unwrapKey after delete-policy: 403 (${uerr && uerr.statusCode})`);
}

// A DEK wrapped by cmkstore: the wrapped DEK of a store made with this key (keyring.json),
// unwrapped through the SDK, is proved right by a blob of that store: the key commitment in
// the blob's header is HKDF-SHA256 of the DEK (core/seal.h). Then the SDK wraps the same DEK
// (RSA-OAEP, which it does locally) for the shell test to put back into the keyring and read
// the blob through cmkstore.
async function unwrapCmkStep() {
  const keyring = JSON.parse(readFileSync(env("KEYRING"), "utf8"));
  const entry = keyring.deks.find((d) => d.id === keyring.currentDek);
  const crypto = new CryptographyClient(entry.kid.replace(/^local:\/\/[^/]+/, vaultUrl), credential, options);
  const u = await crypto.unwrapKey(entry.wrapAlgorithm, Buffer.from(entry.wrappedKey, "base64"));
  const dek = Buffer.from(u.result);
  ok(dek.length === 32, "the store's wrapped DEK unwraps through the SDK (32 bytes)");
  const blob = readFileSync(env("BLOB_FILE"));
  ok(blob.subarray(0, 8).toString() === "CMKSBLOB", "the blob file is a cmkstore container");
  const salt = blob.subarray(24, 56);
  const commitment = blob.subarray(56, 88);
  // context = version (u16) || aead, kdf, comp, digest ids || chunk size (u32) || DEK id (u32)
  const context = Buffer.concat([blob.subarray(8, 10), blob.subarray(12, 24)]);
  const derived = Buffer.from(hkdfSync("sha256", dek, salt,
                                       Buffer.concat([Buffer.from("cmkstore v1 commitment"), context]), 32));
  ok(derived.equals(commitment), "the DEK the SDK unwrapped opens the store's blob (key commitment)");
  const rewrapped = await crypto.wrapKey("RSA-OAEP", dek);
  writeFileSync(`${work}/sdk_rewrapped.b64`, Buffer.from(rewrapped.result).toString("base64"));
}

try {
  await steps();
} catch (e) {
  console.log(`not ok - step ${step} threw: ${e && e.message}`);
  failed++;
}
process.exit(failed ? 1 : 0);
