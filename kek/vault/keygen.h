/*
 * keygen.h — internal to kek/vault/: software keys. Generation (OpenSSL), the public
 * version record key.json keeps, and the private key's PEM file (PKCS#8, 0600, never
 * encrypted: the vault's files are its protection, see vault.h). Private key text lives
 * only in secure memory and is cleansed after use. Thread-safe.
 */
#ifndef CMK_VAULT_KEYGEN_H
#define CMK_VAULT_KEYGEN_H

#include <jansson.h>
#include <openssl/evp.h>

#include "core/base/error.h"

typedef enum cmk_vkty { CMK_VKTY_RSA, CMK_VKTY_RSA_HSM, CMK_VKTY_EC } cmk_vkty;

/* Parses a key type ("RSA" when NULL or "", "RSA-HSM", "EC"; any case) and size (0: the
 * type's default) into *t and *bits. CMK_E_UNSUPPORTED for EC-HSM / oct, CMK_E_INVAL for
 * unknown types and sizes. */
CMK_MUST_CHECK cmk_err cmk_vkey_parse_type(const char *kty, unsigned size, cmk_vkty *t,
                                           unsigned *bits, cmk_errbuf *eb);

/* Generates a software key (RSA or EC). The caller frees *out with EVP_PKEY_free. */
CMK_MUST_CHECK cmk_err cmk_vkey_generate(cmk_vkty t, unsigned bits, EVP_PKEY **out, cmk_errbuf *eb);

/* The version record of key.json for pkey's public half: version, kty, bits, dates,
 * enabled and the public JWK fields; never private material. *out is the caller's. */
CMK_MUST_CHECK cmk_err cmk_vkey_version_record(EVP_PKEY *pkey, cmk_vkty t, unsigned bits,
                                               const char *version, json_t **out, cmk_errbuf *eb);

/* Writes pkey's private key to path (atomically, 0600). */
CMK_MUST_CHECK cmk_err cmk_vkey_write_private(EVP_PKEY *pkey, const char *path, cmk_errbuf *eb);

/* Reads the private key of vkid from path. CMK_E_KEY_NOT_FOUND if the file is gone (a purge
 * in progress), CMK_E_CORRUPT if it cannot be read or (want_rsa) is not RSA. */
CMK_MUST_CHECK cmk_err cmk_vkey_read_private(const char *path, const char *vkid, int want_rsa,
                                             EVP_PKEY **out, cmk_errbuf *eb);

#endif
