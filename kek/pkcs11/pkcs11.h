/*
 * pkcs11.h — internal: RSA-HSM key-encryption keys in a PKCS#11 token (kek/pkcs11/).
 *
 * Files: rv.c (CK_RV names, codes, advice), uri.c (RFC 7512 identifiers), module.c (modules,
 * loaded once per process), session.c (handles and their session pools), objects.c (key
 * versions in the token), pubkey.c (public keys and their cache), wrap.c (wrapping and
 * unwrapping), pin.c (module and PIN configuration), provider.c (the KEK provider).
 *
 * The private half of every key stays in the token (CKA_SENSITIVE, not CKA_EXTRACTABLE):
 * data keys are wrapped in software with the public half (OpenSSL, RSA-OAEP) and unwrapped
 * by the token (C_Decrypt, CKM_RSA_PKCS_OAEP). Nothing here reads a private-key component
 * from a token or exports a private key. Modules are loaded with dlopen; no module is
 * linked. Tested with SoftHSM2 2.6.
 *
 * ---- Keys and versions -------------------------------------------------------------------
 * A key is a label (CKA_LABEL). Each version of the key is one RSA key pair, both halves
 * carrying that label and the same 16-byte CKA_ID:
 *
 *     CKA_ID = seq (4 bytes, big-endian, 1, 2, ...) || 12 random bytes
 *
 * The version string is the 32 lowercase hex characters of CKA_ID (the same shape as a
 * local-vault version), so versions sort by creation order and stay unique even when two
 * processes create a version at the same moment (same seq, different random tail). "Latest"
 * is the highest seq; a tie (concurrent creation) is broken by the larger CKA_ID, so every
 * process agrees. Objects with the label whose CKA_ID is not 16 bytes or whose seq is 0 are
 * not cmkstore versions and are ignored. A version exists while its private-key object
 * exists: destroying it (C_DestroyObject) is how a key is revoked on an HSM, and every later
 * use reads CMK_E_KEY_NOT_FOUND. Tokens have no "disabled" flag: versions are always enabled.
 *
 * Generated pairs: RSA 2048/3072/4096, e = 65537.
 *   private: CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE = TRUE, CKA_EXTRACTABLE = FALSE,
 *            CKA_DECRYPT, CKA_UNWRAP = TRUE, CKA_SIGN = FALSE
 *   public:  CKA_TOKEN, CKA_ENCRYPT, CKA_WRAP = TRUE, CKA_VERIFY = FALSE, CKA_PRIVATE = FALSE
 * A token that does not honour CKA_SENSITIVE / CKA_EXTRACTABLE has the new pair destroyed
 * and the generation fails (CMK_E_REFUSED).
 *
 * ---- Key identifiers (RFC 7512 pkcs11: URIs) ---------------------------------------------
 *     pkcs11:token=<token label>;object=<key label>                       versionless (latest)
 *     pkcs11:token=<token label>;object=<key label>;id=%00%00%00%01...    versioned (CKA_ID)
 * optionally followed by a query: ?module-path=<path>&pin-source=file:<path>.
 * Path attributes are separated by ';', query attributes by '&'; values are percent-decoded.
 * token= and object= are required; type= may only be "private"; id= must decode to a
 * 16-byte cmkstore version id for the provider. Other RFC 7512 attributes (serial, model,
 * manufacturer, slot-id, library-*, slot-*, module-name) and vendor attributes are parsed,
 * checked for syntax and ignored. pin-value is refused: a PIN never lives in a key
 * identifier (they are printed, logged and stored in store.json). Canonical identifiers
 * (what describe returns) are "pkcs11:token=..;object=..;id=%..", id always fully
 * percent-encoded in uppercase hex, followed by the original query if there was one.
 *
 * ---- Module and PIN resolution (the provider, cmk_p11_open_home) --------------------------
 * module: $CMKSTORE_PKCS11_MODULE, else "module" in <home>/pkcs11.json (cmk_p11_open_home
 *         and an HSM-backed vault: the module given by the operator first).
 * PIN:    the file named by $CMKSTORE_PKCS11_PIN_FILE, else $CMKSTORE_PKCS11_PIN, else the
 *         file named by "pinFile" in <home>/pkcs11.json (relative: to home); an HSM-backed
 *         vault's recorded PIN file first. A PIN file holds the PIN; one trailing newline is
 *         ignored.
 * The provider a store uses (cmk_kek_open) takes key identifiers from the store's files,
 * which are data: a module-path in one is only compared with the configured module (the
 * same file: used; another or none: CMK_E_KEY_UNREACHABLE, nothing loaded) and a
 * pin-source is never read. Only a provider made with CMK_P11_PROV_OBEY_QUERY (the
 * HSM-backed vault's, whose identifiers it builds from its own vault.json) obeys them.
 *
 * ---- Wrap algorithms ---------------------------------------------------------------------
 * RSA-OAEP-256 (SHA-256, MGF1-SHA-256) is preferred; SoftHSM2 2.6 and other tokens only
 * decrypt OAEP with SHA-1 (they answer CKR_MECHANISM_PARAM_INVALID or CKR_ARGUMENTS_BAD).
 * For each key version the first use runs real round trips — 32 random bytes encrypted with
 * the public key, decrypted by the token — under RSA-OAEP-256 and RSA-OAEP, and caches the
 * set that worked (cmk_p11_wrap_algs; cmk_key_desc.wrap_algs). cmk_p11_wrap refuses an
 * algorithm the token cannot undo, so no data key is ever wrapped unrecoverably.
 *
 * ---- Errors ------------------------------------------------------------------------------
 *   CMK_E_INVAL            bad URI, bad argument, no module configured (the provider
 *                          reports a missing module configuration as CMK_E_KEY_UNREACHABLE:
 *                          for a store it is a key it cannot reach, not bad input)
 *   CMK_E_KEY_DENIED       PIN rejected (CKR_PIN_INCORRECT / LOCKED / EXPIRED ...), no PIN
 *                          configured or PIN file unreadable, key not permitted to decrypt
 *   CMK_E_KEY_UNREACHABLE  module missing or not a PKCS#11 module, C_Initialize failed,
 *                          no token with that label, token removed, device error
 *   CMK_E_KEY_NOT_FOUND    no such key label / version in the token (destroyed = not found)
 *   CMK_E_INTEGRITY        the token could not decrypt the wrapped key (altered, wrapped by
 *                          another key, wrong length). SoftHSM2 reports bad OAEP padding as
 *                          CKR_GENERAL_ERROR: a C_Decrypt failure of that kind right after a
 *                          successful C_DecryptInit, in a session that still answers, is
 *                          read as "bad ciphertext", not as a device fault.
 *   CMK_E_UNSUPPORTED      wrap algorithm not supported by the token for this key
 *   CMK_E_REFUSED          token refused a template (generation), duplicate version objects
 * Messages name the module, the token and the key and say what to do; they never contain
 * the PIN or key material.
 *
 * ---- Threads and processes ---------------------------------------------------------------
 * A cmk_p11 handle is safe for any number of threads: each call borrows a logged-in session
 * from the handle's pool (opening one if none is idle) and returns it. Module loads are
 * reference-counted process-wide: every handle on one module shares one C_Initialize
 * (CKF_OS_LOCKING_OK; CKR_CRYPTOKI_ALREADY_INITIALIZED is tolerated, and then this code never
 * calls C_Finalize) and the last cmk_p11_close calls C_Finalize. Modules are never unmapped
 * (RTLD_NODELETE): many leave atexit or thread-specific destructors behind.
 * PKCS#11 login state is per token per process: once any handle has logged in to a token,
 * another handle on that token is logged in too and cannot check its own PIN. After a
 * logout behind the handle's back (another handle closed the process's last session on the
 * token, or C_Logout) a call that gets CKR_USER_NOT_LOGGED_IN — or finds no private key in
 * a session that turns out to be public — logs in again and retries once; a lost session
 * (CKR_SESSION_HANDLE_INVALID / CLOSED) is replaced and the call retried once. Sessions are
 * read/write (key generation and destruction need it); at most 16 idle ones are kept.
 * Not fork-safe: PKCS#11 state does not survive fork(); use handles (and providers) only
 * in the process that opened them.
 */
#ifndef CMK_PKCS11_H
#define CMK_PKCS11_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "cmkstore_kek.h"
#include "core/base/error.h"

#define CMK_P11_SCHEME      "pkcs11:"
#define CMK_P11_ID_LEN      16  /* CKA_ID of a cmkstore key version */
#define CMK_P11_VERSION_LEN 32  /* hex characters of a version string */
#define CMK_P11_TOKEN_MAX   32  /* CK_TOKEN_INFO.label: 32 bytes, blank padded */
#define CMK_P11_LABEL_MAX   128 /* our limit for a key label (CKA_LABEL) */
#define CMK_P11_URI_ID_MAX  64  /* longest id= accepted by the parser */
#define CMK_P11_PIN_MAX     256
#define CMK_P11_PATH_MAX    4096 /* module and PIN file paths */

/* The environment the operator configures module and PIN with (see above). */
#define CMK_P11_ENV_MODULE   "CMKSTORE_PKCS11_MODULE"
#define CMK_P11_ENV_PIN_FILE "CMKSTORE_PKCS11_PIN_FILE"
#define CMK_P11_ENV_PIN      "CMKSTORE_PKCS11_PIN"

/* ---- URIs -------------------------------------------------------------------------------- */

/* A parsed key identifier. Strings are decoded and NUL-terminated. */
typedef struct cmk_p11_uri {
    char token[CMK_P11_TOKEN_MAX + 1];
    char object[CMK_P11_LABEL_MAX + 1];
    int has_id;
    size_t id_len;
    unsigned char id[CMK_P11_URI_ID_MAX];
    char module_path[CMK_ID_MAX]; /* "" if the URI has no module-path */
    char pin_file[CMK_ID_MAX];    /* from pin-source=file:<path>; "" if none */
    char query[CMK_ID_MAX];       /* the raw query after '?' (validated), "" if none */
} cmk_p11_uri;

/* Non-zero if kid starts with "pkcs11:" (the scheme is case-insensitive). */
int cmk_p11_is_uri(const char *kid);

/* Parses an RFC 7512 URI as described above into *out. CMK_E_INVAL on any syntax error, a
 * missing token= or object=, a value too long, a type other than private, a pin-source that
 * is not file:, or pin-value. Messages name the attribute and the offset but never echo a
 * value (the input may hold a secret; only RFC 7512 type names are quoted). Pure function:
 * thread-safe, no I/O. */
CMK_MUST_CHECK cmk_err cmk_p11_uri_parse(const char *uri, cmk_p11_uri *out, cmk_errbuf *eb);

/* Formats the canonical identifier: versioned (with id=) if u->has_id and versioned, else
 * versionless; the raw query is appended. CMK_E_INVAL if it does not fit in cap. */
CMK_MUST_CHECK cmk_err cmk_p11_uri_format(const cmk_p11_uri *u, int versioned, char *out,
                                          size_t cap, cmk_errbuf *eb);

/* Builds a canonical identifier from its parts: version (32 hex, NULL or "" for a
 * versionless identifier), module_path and pin_file (NULL or "": not in the identifier; they
 * go to the query, percent-encoded). CMK_E_INVAL if a part is invalid or it does not fit. */
CMK_MUST_CHECK cmk_err cmk_p11_uri_build(const char *token, const char *label, const char *version,
                                         const char *module_path, const char *pin_file, char *out,
                                         size_t cap, cmk_errbuf *eb);

/* ---- versions ---------------------------------------------------------------------------- */

typedef struct cmk_p11_version {
    uint32_t seq;
    unsigned char id[CMK_P11_ID_LEN];
    char version[CMK_P11_VERSION_LEN + 1]; /* lowercase hex of id */
    unsigned bits;                         /* modulus size */
} cmk_p11_version;

/* Decodes a version string (32 hex chars, either case) into its CKA_ID and seq.
 * CMK_E_INVAL if malformed or seq is 0. */
CMK_MUST_CHECK cmk_err cmk_p11_version_parse(const char *version, unsigned char id[CMK_P11_ID_LEN],
                                             uint32_t *seq, cmk_errbuf *eb);

/* ---- handles ----------------------------------------------------------------------------- */

/* A loaded module, one token in it, and the user PIN for it. */
typedef struct cmk_p11 cmk_p11;

/* Loads module_path (or shares an already loaded copy), finds the token whose label is
 * token_label and logs in with pin (copied into secret memory; the caller may cleanse its
 * copy at once). *out is owned by the caller: release it with cmk_p11_close. */
CMK_MUST_CHECK cmk_err cmk_p11_open(const char *module_path, const char *token_label,
                                    const char *pin, cmk_p11 **out, cmk_errbuf *eb);

/* Like cmk_p11_open with module and PIN resolved as the provider does (see above):
 * module_path and pin_file may be NULL to use the environment / <home>/pkcs11.json. home
 * may be NULL (no pkcs11.json). */
CMK_MUST_CHECK cmk_err cmk_p11_open_home(const char *home, const char *token_label,
                                         const char *module_path, const char *pin_file,
                                         cmk_p11 **out, cmk_errbuf *eb);

/* Closes the handle's sessions, cleanses the PIN, drops the module reference (C_Finalize on
 * the last one). No call on h may be in flight. NULL is a no-op. */
void cmk_p11_close(cmk_p11 *h);

/* The module path and token label the handle was opened with (for messages). */
const char *cmk_p11_module(const cmk_p11 *h);
const char *cmk_p11_token(const cmk_p11 *h);

/* Resolves the module path: module_path if not NULL/"", else $CMKSTORE_PKCS11_MODULE, else
 * "module" in <home>/pkcs11.json. CMK_E_INVAL if none is configured. */
CMK_MUST_CHECK cmk_err cmk_p11_resolve_module(const char *home, const char *module_path, char *out,
                                              size_t cap, cmk_errbuf *eb);

/* Loads the PIN (see "Module and PIN resolution"; pin_file overrides): *pin receives a
 * NUL-terminated copy in secret memory (free with cmk_secfree), where a short description
 * of its source for messages ("pin-source file /x", "$CMKSTORE_PKCS11_PIN", ...).
 * CMK_E_KEY_DENIED if no PIN is configured or the PIN file cannot be read. */
CMK_MUST_CHECK cmk_err cmk_p11_load_pin(const char *home, const char *pin_file, char **pin,
                                        char *where, size_t wherecap, cmk_errbuf *eb);

/* ---- keys (label = CKA_LABEL; version = 32-hex version string) ---------------------------- */

/* Generates a new version of key `label` (bits 2048, 3072 or 4096) with seq = highest + 1.
 * Calls on one handle are serialised; see "Keys and versions" for concurrent processes. */
CMK_MUST_CHECK cmk_err cmk_p11_key_generate(cmk_p11 *h, const char *label, unsigned bits,
                                            cmk_p11_version *out, cmk_errbuf *eb);

/* Every version of `label`, sorted oldest first (ascending seq, then CKA_ID). *out is
 * malloc'd (free()); *n may be 0 (no versions: *out NULL, CMK_OK). */
CMK_MUST_CHECK cmk_err cmk_p11_key_versions(cmk_p11 *h, const char *label, cmk_p11_version **out,
                                            size_t *n, cmk_errbuf *eb);

/* The version named (NULL or "": the latest). CMK_E_KEY_NOT_FOUND if absent. */
CMK_MUST_CHECK cmk_err cmk_p11_key_get(cmk_p11 *h, const char *label, const char *version,
                                       cmk_p11_version *out, cmk_errbuf *eb);

/* The version's public key, built from CKA_MODULUS / CKA_PUBLIC_EXPONENT (of the public-key
 * object, else of the private-key object, whose modulus and exponent are public). The
 * caller frees *out with EVP_PKEY_free. version NULL or "": the latest. */
CMK_MUST_CHECK cmk_err cmk_p11_key_public(cmk_p11 *h, const char *label, const char *version,
                                          EVP_PKEY **out, cmk_errbuf *eb);

/* Protection attributes of a version's private key: 1 true, 0 false, -1 not reported. */
typedef struct cmk_p11_key_attrs {
    int extractable, sensitive, always_sensitive, never_extractable;
} cmk_p11_key_attrs;
CMK_MUST_CHECK cmk_err cmk_p11_key_attrs_get(cmk_p11 *h, const char *label, const char *version,
                                             cmk_p11_key_attrs *out, cmk_errbuf *eb);

/* Destroys one version (both halves). CMK_E_KEY_NOT_FOUND if absent. Irreversible: every
 * data key wrapped by the version becomes unrecoverable. */
CMK_MUST_CHECK cmk_err cmk_p11_key_destroy(cmk_p11 *h, const char *label, const char *version,
                                           cmk_errbuf *eb);
/* Destroys every version of `label`; *ndestroyed (may be NULL) receives the number of
 * versions. CMK_E_KEY_NOT_FOUND if there was none. */
CMK_MUST_CHECK cmk_err cmk_p11_key_destroy_all(cmk_p11 *h, const char *label, size_t *ndestroyed,
                                               cmk_errbuf *eb);

/* The wrap algorithms the token can undo with this version: bitmask of (1u << cmk_wrap_alg),
 * negotiated by round trips on first use and cached in the handle. version required. */
CMK_MUST_CHECK cmk_err cmk_p11_wrap_algs(cmk_p11 *h, const char *label, const char *version,
                                         unsigned *algs, cmk_errbuf *eb);

/* Wraps dek (keylen bytes) with the version's public key in software; out receives at most
 * *outlen (capacity in, length out) bytes. Checks first that the private key still exists
 * and that the token can undo alg (else CMK_E_UNSUPPORTED). */
CMK_MUST_CHECK cmk_err cmk_p11_wrap(cmk_p11 *h, const char *label, const char *version,
                                    cmk_wrap_alg alg, const unsigned char *dek, size_t keylen,
                                    unsigned char *out, size_t *outlen, cmk_errbuf *eb);

/* Unwraps in the token (C_Decrypt, CKM_RSA_PKCS_OAEP with alg's hash and MGF) into dek
 * (capacity *keylen in, length out). The caller zeroizes dek. */
CMK_MUST_CHECK cmk_err cmk_p11_unwrap(cmk_p11 *h, const char *label, const char *version,
                                      cmk_wrap_alg alg, const unsigned char *wrapped,
                                      size_t wrappedlen, unsigned char *dek, size_t *keylen,
                                      cmk_errbuf *eb);

/* ---- the KEK provider -------------------------------------------------------------------- */

/* A provider for pkcs11: key identifiers (see above). home may be NULL (no pkcs11.json).
 * Open handles are cached per (module path, token label) and shared by all threads; a
 * handle that hits a transport fault (CMK_E_KEY_UNREACHABLE) or a denial (CMK_E_KEY_DENIED)
 * is dropped, so the next call reopens the module, finds the token again and reads the PIN
 * again. Only successful logins are cached; a changed PIN does not affect a handle that is
 * already logged in. A PIN the token rejected is remembered (as a keyed hash) and not
 * presented again for that module and token until the configured PIN changes: real HSMs
 * lock the user PIN after a few failed logins, and the store retries on every call. The
 * principal is not an HSM credential (the PIN is): it is used in messages only. Free with
 * cmk_kek_provider_free (kek.h): release(self), then free(*out). */
#define CMK_P11_PROV_OBEY_QUERY 1u /* load module-path and read pin-source of identifiers */
CMK_MUST_CHECK cmk_err cmk_pkcs11_provider_new(const char *home, unsigned flags,
                                               cmk_kek_provider **out, cmk_errbuf *eb);

#endif
