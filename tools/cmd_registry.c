/*
 * cmd_registry.c — `cmkstore registry gc|stats`: garbage collection of a registry store and
 * its usage (tools/serve/registry_gc.h does the work; this file parses, prints and exits).
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/serve/registry_gc.h"
#include "tools/serve/registry_meta.h"

#define STORE_OPT                                                                                  \
    {                                                                                              \
        "store", 0, CLI_STR, 1, "DIR", "Directory of the store."                                   \
    }

static const cli_opt gc_opts[] = {
    STORE_OPT,
    {"dry-run", 0, CLI_FLAG, 0, NULL,
     "Report what would be freed; change nothing (no lock, no record written)."},
    {"delete-untagged", 0, CLI_FLAG, 0, NULL,
     "Also delete manifests that no tag reaches (directly, as a child of a tagged index, or "
     "as a referrer of a reached manifest) and that are older than the grace period; then "
     "what only they named is freed too."},
    {"grace", 0, CLI_UINT, 0, "S",
     "Blobs written and links made less than S seconds ago survive (default 3600): an upload "
     "that finished but whose manifest is still to come is not collected."},
    CLI_OPT_END,
};

static const cli_opt stats_opts[] = {
    STORE_OPT,
    CLI_OPT_END,
};

static int run_gc(const cli_cmd *cmd, cli_args *a)
{
    rgc_opts o = {.grace_s = (int64_t)cli_num(a, "grace", RGC_GRACE_DEF),
                  .dry_run = cli_isset(a, "dry-run"),
                  .delete_untagged = cli_isset(a, "delete-untagged")};
    cmk_errbuf eb = {0};
    json_t *rep = NULL;
    cmk_store *s = NULL;
    cmk_err rc;
    int ex;

    if (cli_num(a, "grace", 0) > 366u * 86400)
        return cli_usage_error(cmd, "--grace must be at most 31622400 seconds (366 days)");
    ex = cli_open_store(a, &s);
    if (ex != CLI_EXIT_OK)
        return ex;
    rc = rgc_run(s, &o, &rep, &eb);
    if (rc != CMK_OK)
        ex = cli_fail(rc, &eb, CLI_HINT_STORE, "%s", cmd->path);
    else
        ex = cli_print_json(rep);
    cmk_store_close(s);
    return ex;
}

static int run_stats(const cli_cmd *cmd, cli_args *a)
{
    json_t *names = NULL, *repos = json_array(), *out = NULL, *v;
    uint64_t ubytes = 0, ublobs = 0;
    cmk_store *s = NULL;
    size_t i;
    cmk_err rc;
    int ex;

    if (!repos)
        return cli_print_json(NULL);
    ex = cli_open_store(a, &s);
    if (ex != CLI_EXIT_OK) {
        json_decref(repos);
        return ex;
    }
    rc = rgc_usage_get(s, &ubytes, &ublobs);
    if (rc == CMK_OK)
        rc = rmeta_list_repos(s, &names);
    json_array_foreach(names, i, v)
    {
        json_t *rec = NULL;
        if (rc != CMK_OK)
            break;
        rc = rmeta_load(s, json_string_value(v), &rec);
        if (rc == CMK_E_NOT_FOUND) {
            rc = CMK_OK;
            continue;
        }
        if (rc != CMK_OK)
            break;
        json_array_append_new(
            repos,
            json_pack("{s:O, s:I, s:I, s:I, s:I}", "name", v, "bytes",
                      (json_int_t)rmeta_repo_bytes(rec), "blobs",
                      (json_int_t)json_object_size(json_object_get(rec, "blobs")), "manifests",
                      (json_int_t)json_object_size(json_object_get(rec, "manifests")), "tags",
                      (json_int_t)json_object_size(json_object_get(rec, "tags"))));
        json_decref(rec);
    }
    if (rc != CMK_OK) {
        ex = cli_fail(rc, NULL, CLI_HINT_STORE, "%s", cmd->path);
    } else {
        out = json_pack("{s:I, s:I, s:I, s:O}", "repositories_count",
                        (json_int_t)json_array_size(repos), "bytes", (json_int_t)ubytes, "blobs",
                        (json_int_t)ublobs, "repositories", repos);
        ex = cli_print_json(out);
    }
    json_decref(names);
    json_decref(repos);
    cmk_store_close(s);
    return ex;
}

const cli_cmd cli_registry_cmds[] = {
    {.path = "registry gc",
     .summary = "Free the blobs no repository references (garbage collection)",
     .description =
         "Marks every blob that a repository's manifests name (configs, layers, index "
         "children) or that a repository linked less than the grace period ago, and deletes the "
         "stored blobs that nothing marks and that were written more than the grace period "
         "ago, with their stale links; repositories left empty leave the catalog. Runs online: "
         "`cmkstore serve` front-ends may push and pull meanwhile (a push that links a blob "
         "being collected is kept, or refused with 503 and retried by the client). One "
         "collection runs at a time per store. Prints what it freed as JSON (blobs, bytes as "
         "pushed, bytes on disk, digests).\n"
         "Every blob of the store that no repository references is collected, including blobs "
         "put with `cmkstore blob put`.\n"
         "Last, what writers that died or lost a race left in an s3:// store and no blob "
         "reaches is swept: incomplete multipart uploads and data objects that no blob's link "
         "object names, once older than CMKSTORE_S3_ORPHAN_GRACE seconds (default 86400, apart "
         "from --grace; it must be far longer than any put takes). This reads the link object "
         "of every blob larger than one part (one request each). Reported as orphans_deleted, "
         "orphan_bytes_deleted and orphan_uploads_aborted (with --dry-run: what would go). A "
         "link object that cannot be read stops the sweep before it deletes anything. A "
         "directory store has nothing to sweep (every open removes dead writers' temporaries).",
     .opts = gc_opts,
     .example = "cmkstore registry gc --store ./registry --dry-run\n"
                "cmkstore registry gc --store ./registry --delete-untagged --grace 600",
     .run = run_gc},
    {.path = "registry stats",
     .summary = "Show the registry's usage: bytes and blobs stored, per repository",
     .description =
         "Prints as JSON the bytes and blobs the store holds (as pushed: the sizes that quotas "
         "count; recomputed by each collection) and, for each repository of the catalog, the "
         "bytes of the distinct blobs and manifests it holds (what --quota-repo limits), its "
         "blob links, manifests and tags.",
     .opts = stats_opts,
     .example = "cmkstore registry stats --store ./registry",
     .run = run_stats},
    {.path = NULL},
};
