/*
 * b64url.h — base64url (RFC 4648 section 5, the alphabet with '-' and '_'), as JSON Web Keys,
 * JSON Web Tokens and Key Vault's key operation values use it. Pure functions, bounds-checked;
 * thread-safe.
 */
#ifndef CMK_BASE_B64URL_H
#define CMK_BASE_B64URL_H

#include <stddef.h>

/* Encodes n bytes into out without padding and NUL-terminates it: the characters written
 * (without the NUL), or -1 if cap cannot hold them and the NUL ((n + 2) / 3 * 4 + 1 always
 * can). */
long cmk_b64url_encode(const unsigned char *in, size_t n, char *out, size_t cap);
/* Decodes n characters (trailing '=' padding tolerated) into out: the bytes written, or -1
 * on a character outside the alphabet, a length no encoding has, non-zero spare bits in the
 * last character (only the canonical encoding is accepted), or more than cap bytes. */
long cmk_b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap);

#endif
