/*
 * registry_access.h — who may do what in the registry: the access a request needs, and the
 * per-repository access file (`cmkstore serve --access FILE`) that grants it to the users of
 * Basic authentication.
 *
 * The access file, one statement per line ('#' starts a comment line):
 *
 *   group NAME USER...                 NAME's members (a group may be given on several lines)
 *   allow SUBJECT PATTERN ACTIONS      SUBJECT may do ACTIONS on repositories matching PATTERN
 *   catalog SUBJECT...                 SUBJECT may list the catalog (GET /v2/_catalog)
 *
 * SUBJECT is a user name, @NAME (a group's members) or * (every authenticated client, holders
 * of static tokens included; a static token has no user name, so only * rules apply to it).
 * PATTERN is a repository name in which * matches any run of characters but '/', and **
 * any run including '/' (team/<*> matches team/app, team/<**> also team/a/b, <**> matches
 * every repository; <> only set the stars apart here). ACTIONS is a comma-separated list of pull,
 * push, delete, or *. What a client may do is the union of every allow line that matches it;
 * nothing else.
 *
 * Needs: GET/HEAD of manifests, blobs, tags, referrers: pull; manifest PUT and every upload
 * request: pull and push; DELETE of a manifest or blob: delete; /v2/ and /metrics: only an
 * authenticated client; the catalog: REG_NEED_CATALOG. A cross-repository mount also needs
 * pull on the source repository (checked where the mount is made).
 *
 * Pure: parsing and checks do no I/O (reg_access_load reads the file) and keep no global
 * state; a loaded table is read-only and may be shared by threads. Fuzzed:
 * tests/fuzz/fuzz_access.c.
 */
#ifndef CMK_REGISTRY_ACCESS_H
#define CMK_REGISTRY_ACCESS_H

#include <stddef.h>

#include "cmkstore.h"
#include "tools/serve/http_jwt.h"
#include "tools/serve/registry_route.h"

/* Action bits are those of token access entries (JWT_ACT_PULL, _PUSH, _DELETE). */
#define REG_NEED_CATALOG    16u
#define REG_ACCESS_FILE_MAX (1u << 20)

typedef struct reg_access reg_access;

/* What a request to endpoint rt with method needs: JWT_ACT_* bits on its repository,
 * REG_NEED_CATALOG, or 0 (authentication alone). */
unsigned reg_access_needs(enum reg_rt rt, const char *method);

/* "pull,push" for the action bits (catalog: "*"); out holds at least 32 bytes. */
void reg_access_actions_str(unsigned bits, char *out, size_t cap);

/* 1 if name matches pattern (see above). */
int reg_access_match(const char *pattern, const char *name);

/* Parses an access file's text[0..len). CMK_E_INVAL with the line number and what was
 * expected in err; CMK_E_NOMEM. */
cmk_err reg_access_parse(const char *text, size_t len, reg_access **out, char *err, size_t cap);
/* Reads and parses path (at most REG_ACCESS_FILE_MAX bytes). CMK_E_NOT_FOUND, CMK_E_IO,
 * and the errors of reg_access_parse; err names the file. */
cmk_err reg_access_load(const char *path, reg_access **out, char *err, size_t cap);
void reg_access_free(reg_access *a);
/* Statements loaded (allow lines, catalog subjects). */
size_t reg_access_rules(const reg_access *a);

/* The action bits user ("" for a client without a user name) has on repository repo. */
unsigned reg_access_granted(const reg_access *a, const char *user, const char *repo);
/* 1 if user may list the catalog. */
int reg_access_catalog(const reg_access *a, const char *user);

#endif
