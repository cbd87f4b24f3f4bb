/*
 * registry_meta.h — the OCI registry's repository metadata, kept in the store as encrypted
 * records (cmk_meta_*), and the name, tag and digest grammars of the distribution spec.
 *
 * One record per repository, named "repo/<name>" (the name is hidden on disk: the store keys
 * record files by an HMAC of the name), holding compact JSON:
 *
 *   {"v": 1,
 *    "tags":      {"<tag>": "<manifest digest>"},
 *    "manifests": {"<digest>": {"mediaType", "size", "artifactType"?, "subject"?,
 *                               "annotations"? (referrers only), "refs": [digests]}},
 *    "blobs":     {"<digest>": <size>}}
 *
 * "blobs" are the blobs pushed to or mounted into the repository (its links); "refs" are the
 * blobs and child manifests a manifest names (config, layers, index entries). Every change
 * goes through cmk_meta_update, so concurrent pushes to one repository never lose a write.
 * A record that becomes empty is deleted. Also kept, for collection (registry_gc.h):
 * "linked": {"<digest>": <unix time of the link>} and each manifest's "pushed" time.
 *
 * The catalog is one more record, RMETA_CATALOG: {"v": 1, "repositories": [sorted names]},
 * updated when a repository record is created or deleted, so listing the repositories reads
 * one record whatever their number. A store without it (older) gets it built from the
 * records at the first listing; collection rebuilds it from the records it reads.
 */
#ifndef CMK_REGISTRY_META_H
#define CMK_REGISTRY_META_H

#include <jansson.h>
#include <stdint.h>

#include "cmkstore.h"

/* Longest repository name we accept (the spec bounds host + name by 255). */
#define REG_NAME_MAX 255
#define REG_TAG_MAX  128

/* 1 if name matches the spec's repository-name grammar
 * [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)* and is at most
 * REG_NAME_MAX characters. */
int registry_name_valid(const char *name);
/* 1 if tag matches [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}. */
int registry_tag_valid(const char *tag);
/* 1 if d is a digest this registry can verify: sha256:<64 hex> or sha512:<128 hex>,
 * lowercase. */
int registry_digest_valid(const char *d);
/* 1 if d has the general digest shape algorithm ":" encoded (used to tell a reference that
 * is meant as a digest from a tag). */
int registry_looks_like_digest(const char *d);

/* Loads the record of repository repo. CMK_E_NOT_FOUND if the repository has none.
 * *out: caller json_decref's. */
cmk_err rmeta_load(cmk_store *s, const char *repo, json_t **out);

/* Lookups on a loaded record. */
int rmeta_blob(const json_t *rec, const char *digest, uint64_t *size);
json_t *rmeta_manifest(const json_t *rec, const char *digest);
const char *rmeta_tag(const json_t *rec, const char *tag);

/* Links a blob into repo (creating the record). */
cmk_err rmeta_link_blob(cmk_store *s, const char *repo, const char *digest, uint64_t size);
/* Unlinks a blob from repo; CMK_E_NOT_FOUND if it is not linked there. */
cmk_err rmeta_unlink_blob(cmk_store *s, const char *repo, const char *digest);
/* Records manifest digest (entry is borrowed) and, if tag is not NULL, points tag at it. */
cmk_err rmeta_put_manifest(cmk_store *s, const char *repo, const char *digest, const json_t *entry,
                           const char *tag);
/* Removes manifest digest and every tag that points at it; CMK_E_NOT_FOUND if absent. */
cmk_err rmeta_delete_manifest(cmk_store *s, const char *repo, const char *digest);
/* Removes a tag (the manifest stays); CMK_E_NOT_FOUND if absent. */
cmk_err rmeta_delete_tag(cmk_store *s, const char *repo, const char *tag);

/* *referenced = 1 if any repository links digest as a blob, holds it as a manifest, or has a
 * manifest that refers to it. Scans every repository record. */
cmk_err rmeta_is_referenced(cmk_store *s, const char *digest, int *referenced);

/* Record names of the registry's own state beside the repositories. */
#define RMETA_CATALOG "registry/catalog"
/* Attempts of a read-modify-write that another process keeps changing under us. */
#define RMETA_CAS_TRIES 64

/* cmk_meta_update, retried on CMK_E_BUSY (the record changed between read and write). */
cmk_err rmeta_update_record(cmk_store *s, const char *name, cmk_meta_fn fn, void *arg);

/* Every repository name, sorted (a JSON array of strings; caller json_decref's), from the
 * catalog record: one record read. */
cmk_err rmeta_list_repos(cmk_store *s, json_t **out);
/* The same from every record of the store (each one read and decrypted): what collection
 * marks from, since it does not depend on the catalog being up to date. */
cmk_err rmeta_scan_repos(cmk_store *s, json_t **out);
/* Catalog maintenance: add or remove one name; replace the list by names (sorted; names
 * whose records appeared meanwhile are added back). */
cmk_err rmeta_catalog_add(cmk_store *s, const char *repo);
cmk_err rmeta_catalog_remove(cmk_store *s, const char *repo);
cmk_err rmeta_catalog_rebuild(cmk_store *s, const json_t *names);

/* ---- for collection ---- */

/* Unlinks every digest that is a key of set from repo (absent ones are skipped); *removed
 * (may be NULL) receives how many were. */
cmk_err rmeta_unlink_set(cmk_store *s, const char *repo, const json_t *set, size_t *removed);
/* Deletes the manifests of repo that rmeta_reachable(cutoff) does not reach, judged on the
 * record as it is at the update. */
cmk_err rmeta_delete_unreachable(cmk_store *s, const char *repo, int64_t cutoff, size_t *removed);
/* Adds to set (keys) the manifests of rec reachable from its tags and from manifests pushed
 * after cutoff, through index entries, and the referrers (subject) of reachable manifests. */
cmk_err rmeta_reachable(const json_t *rec, int64_t cutoff, json_t *set);
/* When digest was linked into rec (0: unknown, a record from before link times). */
int64_t rmeta_link_time(const json_t *rec, const char *digest);
/* When a manifest entry was pushed (0: unknown). */
int64_t rmeta_pushed_time(const json_t *manifest);
/* Bytes of the distinct blobs and manifests rec holds (its quota usage). */
uint64_t rmeta_repo_bytes(const json_t *rec);
/* The sorted names of the repositories that link digest, hold it as a manifest or have a
 * manifest referring to it (a JSON array; empty if none; caller json_decref's). */
cmk_err rmeta_referrers(cmk_store *s, const char *digest, json_t **repos);

#endif
