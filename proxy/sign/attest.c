/* attest: the cosign signatures of an optimized tag and its attestation
 * (attest.h). The attestation's JSON and manifest come from
 * config/cosigndoc.c; blobs and the manifest go into the pushed area of the
 * client's repository through store.h (cosign_put_blob,
 * store_pushed_put_manifest by digest), where the referrers index lists it
 * under its subject. Whether one exists is read back from that index, under
 * one mutex (the referrers walked with imagewalk), so concurrent pulls make
 * one. */
#include "attest.h"

#include "cosign.h"
#include "cosigndoc.h"
#include "digest.h"
#include "imagewalk.h"
#include "log.h"
#include "rs_limits.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ATTEST_REF_MAX 1024

static pthread_mutex_t attest_lock = PTHREAD_MUTEX_INITIALIZER;

/* The walk of one referrer: is it an attestation? */
static enum rs_code is_attestation(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                   enum imagewalk_step *step, struct rs_err *err)
{
	(void)err;
	bool *found = ctx;
	if (ev == IMAGEWALK_ENTER && n->depth == 0) {
		*found = n->manifest && n->manifest->artifact_type &&
		         strcmp(n->manifest->artifact_type, COSIGNDOC_ATTEST_TYPE) == 0;
		*step = IMAGEWALK_STOP;
	}
	return RS_OK;
}

/* Whether name holds an attestation whose subject is digest (its digest
 * into out). */
static bool attested(struct store *st, const char *name, const char *digest, char out[DIGEST_STR_SIZE])
{
	char(*v)[DIGEST_STR_SIZE] = NULL;
	size_t n = 0;
	struct rs_err err = {0};
	bool found = false;
	if (store_pushed_referrers(st, name, digest, &v, &n, RS_LIMIT_INDEX_MANIFESTS_MAX, &err) != RS_OK)
		return false;
	for (size_t i = 0; !found && i < n; i++) {
		char *buf = NULL, *type = NULL;
		size_t len = 0;
		const struct imagewalk walk = {.visit = is_attestation, .ctx = &found};
		if (store_pushed_holds(st, name, STORE_MANIFEST, v[i]) &&
		    store_manifest_get(st, STORE_PUSHED, v[i], RS_LIMIT_MANIFEST_MAX_BYTES, &buf, &len, &type, &err) == RS_OK &&
		    imagewalk_bytes(&walk, v[i], buf, len, type, &err) != RS_OK)
			found = false;
		if (found)
			snprintf(out, DIGEST_STR_SIZE, "%s", v[i]);
		free(buf);
		free(type);
	}
	free(v);
	return found;
}

/* The attestation's record of rq (the verified list in v, 2 entries). */
static enum rs_code record(char **out, size_t *out_len, const struct attest_request *rq, const char *reference,
                           const char *subject_type, const char *created, struct rs_err *err)
{
	struct cosigndoc_verified v[2];
	size_t n = 0;
	char gpg_sig[32];
	const struct sign_verified *w = rq->verified;
	if (w && w->gpg) {
		snprintf(gpg_sig, sizeof(gpg_sig), "signature-%u", w->gpg_index);
		v[n++] = (struct cosigndoc_verified){"gpg", w->gpg_fpr, gpg_sig, w->gpg_source};
	}
	if (w && w->cosign)
		v[n++] = (struct cosigndoc_verified){"cosign", w->cosign_key, w->cosign_signature, w->cosign_source};
	const struct cosigndoc_attestation a = {
		.reference = reference,
		.optimized_digest = rq->optimized_digest,
		.optimized_media_type = subject_type,
		.original_digest = rq->original_digest,
		.verify_rule = rq->verify_rule,
		.verified = v,
		.verified_count = n,
		.policy_digest = rq->policy_digest,
		.optimizer_version = "regslim " REGSLIM_VERSION,
		.report_digest = rq->report_digest,
		.created = created,
	};
	return cosigndoc_attestation(out, out_len, &a, err);
}

/* Make the attestation of rq in rq->name (the caller holds attest_lock and
 * checked there is none). *out receives its digest. */
static enum rs_code make(struct sign *s, const struct attest_request *rq, const char *reference,
                         char out[DIGEST_STR_SIZE], struct rs_err *err)
{
	struct cosign *c = sign_cosign(s);
	char *subject = NULL, *stype = NULL, *blob = NULL, *sig = NULL, *body = NULL;
	size_t slen = 0, blen = 0, mlen = 0;
	char created[32], empty_digest[DIGEST_STR_SIZE], blob_digest[DIGEST_STR_SIZE];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	enum rs_code rc = store_manifest_get(rq->st, STORE_CACHE, rq->optimized_digest, RS_LIMIT_MANIFEST_MAX_BYTES,
	                                     &subject, &slen, &stype, err);
	if (!rc)
		rc = record(&blob, &blen, rq, reference, stype, created, err);
	if (!rc && c)
		rc = cosign_sign_bytes(c, blob, blen, &sig, err);
	if (!rc)
		rc = cosign_put_blob(rq->st, rq->name, COSIGNDOC_EMPTY_JSON, strlen(COSIGNDOC_EMPTY_JSON), empty_digest, err);
	if (!rc)
		rc = cosign_put_blob(rq->st, rq->name, blob, blen, blob_digest, err);
	const struct cosigndoc_desc config = {.media_type = COSIGNDOC_EMPTY_MT, .digest = empty_digest, .size = strlen(COSIGNDOC_EMPTY_JSON), .signature = NULL};
	const struct cosigndoc_desc layer = {.media_type = COSIGNDOC_ATTEST_TYPE, .digest = blob_digest, .size = blen, .signature = sig};
	const struct cosigndoc_desc sub = {.media_type = stype, .digest = rq->optimized_digest, .size = slen, .signature = NULL};
	if (!rc)
		rc = cosigndoc_manifest(&body, &mlen, COSIGNDOC_ATTEST_TYPE, &config, &layer, 1, &sub, created, err);
	if (!rc) {
		digest_buffer(out, body, mlen);
		char stored[DIGEST_STR_SIZE];
		rc = store_pushed_put_manifest(rq->st, rq->name, out, COSIGNDOC_MANIFEST_MT, body, mlen, stored, err);
	}
	free(subject);
	free(stype);
	free(blob);
	free(sig);
	free(body);
	return rc;
}

enum rs_code attest_image(struct sign *s, const struct attest_request *rq, struct rs_err *err)
{
	struct cosign *c = sign_cosign(s);
	if (!c && !sign_signs(s))
		return RS_OK;
	char reference[ATTEST_REF_MAX], repository[ATTEST_REF_MAX];
	if ((size_t)snprintf(reference, sizeof(reference), "%s/%s:%s", rq->upstream, rq->repo, rq->tag) >=
	            sizeof(reference) ||
	    (size_t)snprintf(repository, sizeof(repository), "%s/%s", rq->upstream, rq->repo) >= sizeof(repository))
		return rs_err_set(err, RS_BAD_INPUT, "reference %.100s/%.100s:%.60s is too long to sign", rq->upstream,
		                  rq->repo, rq->tag);
	enum rs_code rc = RS_OK;
	if (c) {
		char(*v)[DIGEST_STR_SIZE] = NULL;
		size_t n = 0;
		rc = sign_index_manifests(s, rq->optimized_digest, &v, &n, err);
		if (!rc)
			rc = cosign_sign_manifest(c, STORE_CACHE, rq->name, reference, rq->optimized_digest, err);
		for (size_t i = 0; !rc && i < n; i++)
			rc = cosign_sign_manifest(c, STORE_CACHE, rq->name, reference, v[i], err);
		free(v);
		if (rc)
			return rc;
	}
	pthread_mutex_lock(&attest_lock);
	char digest[DIGEST_STR_SIZE] = "";
	bool made = false;
	if (!attested(rq->st, rq->name, rq->optimized_digest, digest)) {
		rc = make(s, rq, reference, digest, err);
		made = rc == RS_OK;
	}
	/* also for one made before: its signatures may have failed then */
	if (!rc)
		rc = sign_gpg_manifest(s, rq->repo, repository, digest, err);
	if (!rc && c)
		rc = cosign_sign_manifest(c, STORE_PUSHED, rq->name, repository, digest, err);
	pthread_mutex_unlock(&attest_lock);
	if (made && !rc)
		log_event(LOG_INFO, "attestation %s of %s (from %s) in %s%s%s", digest, rq->optimized_digest,
		          rq->original_digest, rq->name, c ? ", cosign-signed" : "", sign_signs(s) ? ", GPG-signed" : "");
	return rc;
}
