/*
 * provider.c — the Azure Key Vault KEK provider (see akv.h): key identifiers resolved to
 * Key Vault REST requests, the 401 challenge handled per vault, the store's identity mapped
 * to the token source's client id, and the vault's replies mapped to key-access errors.
 */
#include "kek/akv/akv.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/base/fsutil.h"
#include "core/base/secmem.h"
#include "kek/akv/challenge.h"
#include "kek/akv/errmap.h"
#include "kek/akv/http.h"
#include "kek/akv/json.h"
#include "kek/akv/kid.h"
#include "kek/akv/token.h"
#include "kek/identity/identity.h"
#include "kek/provider.h"

#define API_VERSION "api-version=7.4"
#define MAX_VAULTS  32

typedef struct vchal {
    char base[300];
    cmk_akv_challenge ch;
} vchal;

typedef struct aprov {
    char home[CMK_PATH_MAX];
    pthread_mutex_t mu;
    int ready;       /* transport and credentials made (at first use) */
    cmk_err init_rc; /* their failure, repeated to every call */
    cmk_errbuf init_eb;
    cmk_akv_http *http;
    cmk_akv_auth *auth;
    int skip_resource_check;
    vchal chal[MAX_VAULTS]; /* the challenge learnt from each vault */
    size_t nchal;
} aprov;

/* The identity a call acts as. */
typedef struct who {
    char client_id[128]; /* for the managed-identity endpoint; "" : system-assigned */
    char show[200];      /* for messages */
} who;

/* What one call is about. */
typedef struct actx {
    aprov *p;
    cmk_akv_kid k;
    who w;
    cmk_akv_where where;
} actx;

static cmk_err ensure_ready(aprov *p, cmk_errbuf *eb)
{
    cmk_akv_http_cfg cfg;
    cmk_err rc;

    pthread_mutex_lock(&p->mu);
    if (!p->ready) {
        const char *skip = getenv("CMKSTORE_AKV_DISABLE_CHALLENGE_RESOURCE_VERIFICATION");
        cmk_akv_http_cfg_default(&cfg);
        p->skip_resource_check = skip && strcmp(skip, "1") == 0;
        p->init_rc = cmk_akv_http_new(&cfg, &p->http, &p->init_eb);
        if (p->init_rc == CMK_OK)
            p->init_rc = cmk_akv_auth_new(p->http, &p->auth, &p->init_eb);
        p->ready = 1;
    }
    rc = p->init_rc;
    if (rc != CMK_OK && eb)
        *eb = p->init_eb;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

static int chal_get(aprov *p, const char *base, cmk_akv_challenge *out)
{
    int found = 0;

    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->nchal && !found; i++)
        if (strcmp(p->chal[i].base, base) == 0) {
            *out = p->chal[i].ch;
            found = 1;
        }
    pthread_mutex_unlock(&p->mu);
    return found;
}

static void chal_put(aprov *p, const char *base, const cmk_akv_challenge *ch)
{
    size_t i;

    pthread_mutex_lock(&p->mu);
    for (i = 0; i < p->nchal; i++)
        if (strcmp(p->chal[i].base, base) == 0)
            break;
    if (i == p->nchal) {
        /* A full table forgets the oldest vault: it is only asked again. */
        if (p->nchal == MAX_VAULTS) {
            memmove(p->chal, p->chal + 1, sizeof(p->chal[0]) * (MAX_VAULTS - 1));
            i = MAX_VAULTS - 1;
        } else {
            p->nchal++;
        }
    }
    snprintf(p->chal[i].base, sizeof(p->chal[i].base), "%s", base);
    p->chal[i].ch = *ch;
    pthread_mutex_unlock(&p->mu);
}

/* The principal of a call as the token source's identity. */
static cmk_err resolve_who(aprov *p, const char *principal, who *w, cmk_errbuf *eb)
{
    cmk_identity id;
    cmk_errbuf tmp;

    memset(w, 0, sizeof(*w));
    if (*cmk_akv_auth_env_client(p->auth)) {
        /* The host's Azure identity, named by the operator: the home's identities are not
         * Azure's, so on an Azure host this is how a user-assigned identity is chosen. */
        snprintf(w->client_id, sizeof(w->client_id), "%s", cmk_akv_auth_env_client(p->auth));
        snprintf(w->show, sizeof(w->show), "client id %.64s (AZURE_CLIENT_ID, for principal %.64s)",
                 w->client_id, principal && *principal ? principal : "[system]");
        return CMK_OK;
    }
    if (!principal || !*principal) {
        snprintf(w->show, sizeof(w->show), "[system]");
        return CMK_OK;
    }
    if (p->home[0] && cmk_identity_get_by_principal(p->home, principal, &id, &tmp) == CMK_OK) {
        if (strcmp(id.type, "UserAssigned") == 0) {
            snprintf(w->client_id, sizeof(w->client_id), "%s", id.client_id);
            snprintf(w->show, sizeof(w->show), "'%.64s' (client id %s)", id.name, id.client_id);
        } else {
            snprintf(w->show, sizeof(w->show), "[system] (principal %s)", principal);
        }
        return CMK_OK;
    }
    if (strcmp(cmk_akv_auth_kind(p->auth), "managed identity (IMDS)") != 0) {
        /* The secret and workload sources name their own client (AZURE_CLIENT_ID). */
        snprintf(w->show, sizeof(w->show), "principal %.64s", principal);
        return CMK_OK;
    }
    return cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                          "identity with principal id %.64s is not in the home %.200s, so its "
                          "client id for the managed-identity endpoint is unknown",
                          principal, p->home[0] ? p->home : "(none)");
}

static cmk_err ctx_open(aprov *p, const char *kid, const char *principal, const char *op,
                        int need_version, actx *c, cmk_errbuf *eb)
{
    cmk_err rc;

    memset(c, 0, sizeof(*c));
    c->p = p;
    rc = cmk_akv_kid_parse(kid, &c->k, eb);
    if (rc == CMK_OK && need_version && !c->k.version[0])
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "%s needs a versioned key identifier "
                            "(https://<vault-host>/keys/<name>/<version>), not '%.200s'",
                            op, kid);
    if (rc == CMK_OK)
        rc = ensure_ready(p, eb);
    if (rc == CMK_OK)
        rc = resolve_who(p, principal, &c->w, eb);
    c->where.op = op;
    c->where.host = c->k.base; /* with its port: several vaults may share a host */
    c->where.key = c->k.name;
    c->where.version = c->k.version;
    c->where.identity = c->w.show;
    return rc;
}

/* One Key Vault request with the challenge protocol: a vault not yet met gets the request
 * without a token and answers 401 with its challenge; a token refused with 401 is renewed
 * once. On CMK_OK *r holds the final reply (any status but a handled 401). */
static cmk_err kv_call(actx *c, const char *method, const char *url, const char *body,
                       size_t bodylen, cmk_akv_resp *r, cmk_errbuf *eb)
{
    cmk_akv_challenge ch, nch;
    int have = chal_get(c->p, c->k.base, &ch), fresh = 0;
    char what[400];
    cmk_err rc;

    snprintf(what, sizeof(what), "vault %s (%s of key '%s', identity %s)", c->k.base, c->where.op,
             c->k.name, c->w.show);
    for (int i = 0; i < 3; i++) {
        const char *hdrs[4] = {"Accept: application/json", NULL, NULL, NULL};
        char *tok = NULL, *auth = NULL;
        int h = 1;

        if (have) {
            rc = cmk_akv_auth_token(c->p->auth, c->w.client_id, &ch, fresh, &tok, eb);
            if (rc != CMK_OK)
                return cmk_eb_prefix(eb, rc, "cannot get a token for %s", what);
            auth = cmk_secalloc(strlen(tok) + 32);
            if (!auth) {
                cmk_secfree(tok);
                return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
            }
            snprintf(auth, strlen(tok) + 32, "Authorization: Bearer %s", tok);
            cmk_secfree(tok);
            hdrs[h++] = auth;
        }
        if (body)
            hdrs[h++] = "Content-Type: application/json";
        {
            cmk_akv_req rq = {
                .method = method, .url = url, .headers = hdrs, .body = body, .bodylen = bodylen};
            rc = cmk_akv_http_do(c->p->http, &rq, what, r, eb);
        }
        cmk_secfree(auth);
        if (rc != CMK_OK || r->status != 401)
            return rc;
        if (cmk_akv_challenge_parse(r->www_auth, &nch, NULL) != CMK_OK)
            return CMK_OK; /* a 401 without a usable challenge: mapped as a refusal */
        if (!c->p->skip_resource_check && !cmk_akv_challenge_domain_ok(&nch, c->k.host)) {
            cmk_akv_resp_free(r);
            return cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                                  "%s: the vault's challenge names resource %s, which is not "
                                  "of the vault's domain %s; no token is sent to it (set "
                                  "CMKSTORE_AKV_DISABLE_CHALLENGE_RESOURCE_VERIFICATION=1 "
                                  "only for a vault known to use another resource)",
                                  what, nch.resource, c->k.host);
        }
        if (have && fresh)
            return CMK_OK; /* even a fresh token is refused */
        fresh = have;      /* had a token (cached): the next one is fetched anew */
        have = 1;
        ch = nch;
        chal_put(c->p, c->k.base, &ch);
        cmk_akv_resp_free(r);
    }
    return CMK_OK;
}

/* A failed reply mapped; a key not found is looked up among the deleted keys. */
static cmk_err map_failure(actx *c, const cmk_akv_resp *r, cmk_errbuf *eb)
{
    cmk_akv_error e;
    cmk_err rc;

    cmk_akv_error_parse(r->body, r->len, &e);
    rc = cmk_akv_error_map(r->status, &e, &c->where, eb);
    if (rc == CMK_E_KEY_NOT_FOUND) {
        char url[800];
        cmk_akv_resp d;
        cmk_errbuf deb;
        snprintf(url, sizeof(url), "%s/deletedkeys/%s?" API_VERSION, c->k.base, c->k.name);
        if (kv_call(c, "GET", url, NULL, 0, &d, &deb) == CMK_OK && d.status == 200)
            rc = cmk_errbuf_set(eb, CMK_E_KEY_DELETED,
                                "key '%s' in vault %s is deleted (recoverable until purged): "
                                "recover it to use it again (identity %s)",
                                c->k.name, c->k.host, c->w.show);
        cmk_akv_resp_free(&d);
    }
    return rc;
}

static int prov_handles(void *self, const char *kid)
{
    (void)self;
    return cmk_akv_kid_claims(kid);
}

static cmk_err prov_describe(void *self, const char *kid, const char *principal, cmk_key_desc *out,
                             cmk_errbuf *eb)
{
    char url[800];
    cmk_akv_resp r;
    cmk_akv_key key;
    actx c;
    time_t now = time(NULL);
    cmk_err rc;

    memset(out, 0, sizeof(*out));
    memset(&r, 0, sizeof(r));
    rc = ctx_open(self, kid, principal, "get", 0, &c, eb);
    if (rc != CMK_OK)
        return rc;
    if (c.k.version[0])
        snprintf(url, sizeof(url), "%s/keys/%s/%s?" API_VERSION, c.k.base, c.k.name, c.k.version);
    else
        snprintf(url, sizeof(url), "%s/keys/%s?" API_VERSION, c.k.base, c.k.name);
    rc = kv_call(&c, "GET", url, NULL, 0, &r, eb);
    if (rc != CMK_OK)
        goto out;
    if (r.status != 200) {
        rc = map_failure(&c, &r, eb);
        goto out;
    }
    rc = cmk_akv_key_parse(r.body, r.len, &key, eb);
    if (rc != CMK_OK) {
        rc = cmk_eb_prefix(eb, CMK_E_KEY_UNREACHABLE,
                           "vault %s answered get of key '%s' with "
                           "a malformed key",
                           c.k.host, c.k.name);
        goto out;
    }
    c.where.version = key.version;
    if (c.k.version[0] && strcasecmp(key.version, c.k.version) != 0) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "vault %s answered get of key '%s' version %s with version %s",
                            c.k.host, c.k.name, c.k.version, key.version);
        goto out;
    }
    if (!key.enabled || (key.nbf && now < key.nbf) || (key.exp && now >= key.exp)) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DISABLED,
                            "key '%s' version %s in vault %s is %s (identity %s)", c.k.name,
                            key.version, c.k.host,
                            !key.enabled               ? "disabled"
                            : key.nbf && now < key.nbf ? "not valid yet (nbf)"
                                                       : "expired (exp)",
                            c.w.show);
        goto out;
    }
    if ((key.kty == CMK_KTY_RSA || key.kty == CMK_KTY_RSA_HSM) &&
        (key.ops & (CMK_AKV_OP_WRAP | CMK_AKV_OP_UNWRAP)) !=
            (CMK_AKV_OP_WRAP | CMK_AKV_OP_UNWRAP)) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                            "key '%s' version %s in vault %s does not allow %s%s%s (its key_ops): "
                            "a key-encryption key needs wrapKey and unwrapKey",
                            c.k.name, key.version, c.k.host,
                            key.ops & CMK_AKV_OP_WRAP ? "" : "wrapKey", key.ops == 0 ? " and " : "",
                            key.ops & CMK_AKV_OP_UNWRAP ? "" : "unwrapKey");
        goto out;
    }
    rc = cmk_akv_kid_format(&c.k, key.version, out->kid, sizeof(out->kid), eb);
    if (rc == CMK_OK)
        rc = cmk_akv_kid_format(&c.k, NULL, out->versionless, sizeof(out->versionless), eb);
    if (rc != CMK_OK)
        goto out;
    out->requested_versioned = c.k.version[0] != '\0';
    snprintf(out->version, sizeof(out->version), "%s", key.version);
    out->kty = key.kty;
    out->bits = key.bits;
    out->enabled = 1;
    out->wrap_algs = key.kty == CMK_KTY_RSA || key.kty == CMK_KTY_RSA_HSM
                         ? (1u << CMK_WRAP_RSA_OAEP_256) | (1u << CMK_WRAP_RSA_OAEP)
                         : 0;
out:
    cmk_akv_resp_free(&r);
    if (rc != CMK_OK)
        memset(out, 0, sizeof(*out));
    return rc;
}

/* wrapkey / unwrapkey: in (inlen bytes) sent base64url, the result decoded into out. */
static cmk_err key_op(aprov *p, const char *vkid, const char *principal, int unwrap,
                      cmk_wrap_alg alg, const unsigned char *in, size_t inlen, unsigned char *out,
                      size_t cap, size_t *outlen, cmk_errbuf *eb)
{
    const char *op = unwrap ? "unwrapKey" : "wrapKey";
    char url[800], *body = NULL;
    size_t blen, cap_body;
    cmk_akv_resp r;
    actx c;
    cmk_err rc;

    *outlen = 0;
    memset(&r, 0, sizeof(r));
    rc = ctx_open(p, vkid, principal, op, 1, &c, eb);
    if (rc != CMK_OK)
        return rc;
    if (alg != CMK_WRAP_RSA_OAEP_256 && alg != CMK_WRAP_RSA_OAEP)
        return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                              "wrap algorithm %d is not supported: use RSA-OAEP-256 or RSA-OAEP",
                              (int)alg);
    if (!in || inlen == 0 || inlen > CMK_WRAPPED_MAX)
        return cmk_errbuf_set(eb, unwrap ? CMK_E_INTEGRITY : CMK_E_INVAL,
                              "cannot %s %zu bytes with key '%s' in vault %s", op, inlen, c.k.name,
                              c.k.host);
    snprintf(url, sizeof(url), "%s/keys/%s/%s/%s?" API_VERSION, c.k.base, c.k.name, c.k.version,
             unwrap ? "unwrapkey" : "wrapkey");
    /* The data key travels in this body when wrapping: secure memory, wiped. */
    cap_body = inlen * 4 / 3 + 80;
    body = cmk_secalloc(cap_body);
    if (!body)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
    blen = (size_t)snprintf(body, cap_body, "{\"alg\":\"%s\",\"value\":\"", cmk_wrap_alg_name(alg));
    cmk_akv_b64url_encode(in, inlen, body + blen);
    blen += strlen(body + blen);
    memcpy(body + blen, "\"}", 3);
    blen += 2;
    rc = kv_call(&c, "POST", url, body, blen, &r, eb);
    cmk_secfree(body);
    if (rc != CMK_OK)
        goto out;
    if (r.status != 200) {
        rc = map_failure(&c, &r, eb);
        goto out;
    }
    rc = cmk_akv_result_parse(r.body, r.len, out, cap, outlen, eb);
    if (rc != CMK_OK)
        rc = cmk_eb_prefix(eb, unwrap ? CMK_E_INTEGRITY : CMK_E_CRYPTO,
                           "vault %s answered %s with key '%s' version %s (identity %s) "
                           "unusably",
                           c.k.host, op, c.k.name, c.k.version, c.w.show);
out:
    cmk_akv_resp_free(&r);
    return rc;
}

static cmk_err prov_wrap(void *self, const char *vkid, const char *principal, cmk_wrap_alg alg,
                         const unsigned char *dek, size_t keylen, unsigned char *out,
                         size_t *outlen, cmk_errbuf *eb)
{
    return key_op(self, vkid, principal, 0, alg, dek, keylen, out, CMK_WRAPPED_MAX, outlen, eb);
}

static cmk_err prov_unwrap(void *self, const char *vkid, const char *principal, cmk_wrap_alg alg,
                           const unsigned char *wrapped, size_t wrappedlen, unsigned char *dek,
                           size_t *keylen, cmk_errbuf *eb)
{
    size_t cap = *keylen;

    return key_op(self, vkid, principal, 1, alg, wrapped, wrappedlen, dek, cap, keylen, eb);
}

static void prov_release(void *self)
{
    aprov *p = self;

    if (!p)
        return;
    cmk_akv_auth_free(p->auth);
    cmk_akv_http_free(p->http);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static const cmk_kek_provider akv_ops = CMK_KEK_PROVIDER_OPS("akv", prov);

cmk_err cmk_akv_provider_new(const char *home, cmk_kek_provider **out, cmk_errbuf *eb)
{
    aprov *p = calloc(1, sizeof(*p));

    *out = NULL;
    if (!p)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory creating the akv provider");
    pthread_mutex_init(&p->mu, NULL);
    if (home && *home && cmk_path(p->home, sizeof(p->home), eb, "%s", home) != CMK_OK) {
        prov_release(p);
        return eb ? eb->code : CMK_E_INVAL;
    }
    return cmk_kek_provider_make(&akv_ops, p, out, eb);
}
