#!/usr/bin/env bash
# test_referrers.sh: the referrers API (distribution-spec v1.1 "Listing Referrers", issue 14) of
# regslim as a registry and as a mirror. An image pushed with skopeo, oras-style artifacts pushed
# with curl (a manifest with subject and artifactType over the empty config blob `{}`, one with a
# custom config type and no artifactType, an index with a subject, a referrer pushed before its
# subject); the OCI-Subject header of their PUTs; the exact descriptors of the referrers list,
# the artifactType filter and OCI-Filters-Applied, an empty list (200) for an unknown digest, 400
# DIGEST_INVALID; a push under a check-only push policy; isolation between repositories; the
# index after a restart, and a referrers tag in a data directory from before the index. As a
# mirror in front of the lab's docker-registry (Debian's distribution 2.8, which has no referrers
# API): the upstream's referrers tag (`sha256-<hex>`, pushed here by the test) read through
# regslim, merged with a referrer pushed to regslim under the same name, cached (served with the
# upstream down, revalidated after the TTL, stale when the upstream fails); an upstream that
# answers 401 gives an empty list, cached too.
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start

TINY_OCI=$REGSLIM_LAB/fixtures/oci/tiny
CONF=$REGSLIM_LAB/refs
W=$CONF/work
mkdir -p "$W"
htpasswd -Bbc "$CONF/htpasswd" alice alicepw 2> /dev/null
cat > "$CONF/regslim.json" << EOF
{"auth": {"htpasswd": "$CONF/htpasswd", "anonymous_pull": true,
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]},
 "push": {"policies": [{"repositories": ["gated/*"], "mode": "check-only", "rules": {"secrets": {"action": "deny"}}}]}}
EOF
start_regslim --config "$CONF/regslim.json"
H=127.0.0.1:$RS_PORT
U=(-u alice:alicepw)
OCI_M=application/vnd.oci.image.manifest.v1+json
OCI_I=application/vnd.oci.image.index.v1+json

# push_blob HOSTPORT REPO FILE [CURL ARGS]: POST then PUT ?digest= with the bytes (docker-registry
# has no single-POST upload); prints the final HTTP status.
push_blob() {
	local hp=$1 repo=$2 f=$3 loc sep
	shift 3
	loc=$(rs_curl -o /dev/null -D - -X POST "$@" "http://$hp/v2/$repo/blobs/uploads/" | tr -d '\r' |
		header_value Location)
	[[ $loc == http* ]] || loc=http://$hp$loc
	sep='?'
	[[ $loc != *'?'* ]] || sep='&'
	rs_curl -o /dev/null -w '%{http_code}' -X PUT "$@" -H "Content-Type: application/octet-stream" \
		--data-binary "@$f" "$loc${sep}digest=$(sha256_of "$f")"
}
# put_manifest HOSTPORT REPO REF FILE TYPE [CURL ARGS]: PUT; the answer's headers (CR removed).
put_manifest() {
	local hp=$1 repo=$2 ref=$3 f=$4 type=$5
	shift 5
	rs_curl -o /dev/null -D - -X PUT "$@" -H "Content-Type: $type" --data-binary "@$f" \
		"http://$hp/v2/$repo/manifests/$ref" | tr -d '\r'
}
status_of() { head -n 1 | awk '{print $2}'; }
# referrers REPO DIGEST [QUERY]: the answer's body into $W/ref.json, headers into $W/ref.hdr;
# prints the status.
referrers() {
	rs_curl -o "$W/ref.json" -D "$W/ref.hdr" -w '%{http_code}' "$RS_URL/v2/$1/referrers/$2${3:+?$3}"
}
ref_header() { tr -d '\r' < "$W/ref.hdr" | header_value "$1"; }
# descriptor FILE TYPE: the referrers descriptor regslim must give for manifest FILE of TYPE:
# mediaType, digest, size, artifactType (the manifest's, else an image manifest's config type),
# annotations; keys sorted.
descriptor() {
	jq -cS --arg mt "$2" --arg d "$(sha256_of "$1")" --argjson s "$(stat -c %s "$1")" \
		'{mediaType: $mt, digest: $d, size: $s}
		 + (if .artifactType then {artifactType: .artifactType}
		    elif .config then {artifactType: .config.mediaType} else {} end)
		 + (if .annotations then {annotations: .annotations} else {} end)' "$1"
}
# listed: the manifests of $W/ref.json, each with sorted keys, sorted by digest, one per line.
listed() { jq -cS '.manifests | sort_by(.digest)[]' "$W/ref.json"; }
# want DESCRIPTOR...: those, sorted by digest, one per line.
want() { printf '%s\n' "$@" | jq -cS -s 'sort_by(.digest)[]'; }

# ------------------------------------------------------------ the subject: an image (skopeo)
check "skopeo_push_subject_image" timeout 120 skopeo copy --dest-tls-verify=false --dest-creds alice:alicepw \
	"oci:$TINY_OCI:latest" "docker://$H/team/app:1"
manifest_get "$H" team/app 1 > "$W/subject.json"
SUBJ=$(sha256_of "$W/subject.json")
SUBJ_SIZE=$(stat -c %s "$W/subject.json")
SUBJ_TYPE=$(jq -r '.mediaType // "application/vnd.oci.image.manifest.v1+json"' "$W/subject.json")

# ------------------------------------------------------------ oras-style artifacts (curl)
printf '{}' > "$W/empty"
EMPTY=$(sha256_of "$W/empty")
expect_eq "empty_blob_digest" "$EMPTY" sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a
printf '{"spdxVersion":"SPDX-2.3","name":"tiny"}' > "$W/sbom"
printf '{"sig":"c2lnbmF0dXJl"}' > "$W/sigcfg"
for f in empty sbom sigcfg; do
	expect_eq "push_blob_$f" "$(push_blob "$H" team/app "$W/$f" "${U[@]}")" 201
done
subject_json="{\"mediaType\":\"$SUBJ_TYPE\",\"digest\":\"$SUBJ\",\"size\":$SUBJ_SIZE}"
# A: artifactType over the empty config, one layer, annotations
cat > "$W/a.json" << EOF
{"schemaVersion":2,"mediaType":"$OCI_M","artifactType":"application/vnd.example.sbom.v1",
 "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"$EMPTY","size":2,"data":"e30="},
 "layers":[{"mediaType":"application/spdx+json","digest":"$(sha256_of "$W/sbom")","size":$(stat -c %s "$W/sbom")}],
 "subject":$subject_json,
 "annotations":{"org.opencontainers.image.created":"2026-01-01T00:00:00Z","org.example.sbom.format":"spdx"}}
EOF
# B: no artifactType, a custom config type (the list names that type), no annotations
cat > "$W/b.json" << EOF
{"schemaVersion":2,"mediaType":"$OCI_M",
 "config":{"mediaType":"application/vnd.example.signature.config.v1+json","digest":"$(sha256_of "$W/sigcfg")","size":$(stat -c %s "$W/sigcfg")},
 "layers":[],"subject":$subject_json}
EOF
# C: an index with a subject and no artifactType (its descriptor has none)
cat > "$W/c.json" << EOF
{"schemaVersion":2,"mediaType":"$OCI_I","manifests":[],"subject":$subject_json,
 "annotations":{"org.example.kind":"bundle"}}
EOF
A=$(sha256_of "$W/a.json")
B=$(sha256_of "$W/b.json")
C=$(sha256_of "$W/c.json")
hdrs=$(put_manifest "$H" team/app "$A" "$W/a.json" "$OCI_M" "${U[@]}")
expect_eq "put_artifact_201" "$(echo "$hdrs" | status_of)" 201
expect_eq "put_artifact_oci_subject" "$(echo "$hdrs" | header_value OCI-Subject)" "$SUBJ"
hdrs=$(put_manifest "$H" team/app sig "$W/b.json" "$OCI_M" "${U[@]}")
expect_eq "put_by_tag_oci_subject" "$(echo "$hdrs" | header_value OCI-Subject)" "$SUBJ"
hdrs=$(put_manifest "$H" team/app "$C" "$W/c.json" "$OCI_I" "${U[@]}")
expect_eq "put_index_oci_subject" "$(echo "$hdrs" | header_value OCI-Subject)" "$SUBJ"
hdrs=$(put_manifest "$H" team/app 1 "$W/subject.json" "$SUBJ_TYPE" "${U[@]}")
expect_eq "put_without_subject_201" "$(echo "$hdrs" | status_of)" 201
expect "put_without_subject_no_oci_subject" "! echo \"\$hdrs\" | grep -qi '^OCI-Subject:'" "$hdrs"
# a subject whose digest is not a digest: refused
jq -c '.subject.digest = "sha256:nothex"' "$W/b.json" > "$W/bad.json"
hdrs=$(put_manifest "$H" team/app bad "$W/bad.json" "$OCI_M" "${U[@]}")
expect_eq "put_bad_subject_400" "$(echo "$hdrs" | status_of)" 400
body=$(rs_curl -X PUT "${U[@]}" -H "Content-Type: $OCI_M" --data-binary "@$W/bad.json" "$RS_URL/v2/team/app/manifests/bad")
expect_eq "put_bad_subject_manifest_invalid" "$(echo "$body" | jq -r '.errors[0].code')" MANIFEST_INVALID

# ------------------------------------------------------------ the referrers list
WANT_ALL=$(want "$(descriptor "$W/a.json" "$OCI_M")" "$(descriptor "$W/b.json" "$OCI_M")" \
	"$(descriptor "$W/c.json" "$OCI_I")")
expect_eq "list_200" "$(referrers team/app "$SUBJ")" 200
expect_eq "list_content_type" "$(ref_header Content-Type)" "$OCI_I"
expect_eq "list_is_an_index" "$(jq -c '[.schemaVersion, .mediaType]' "$W/ref.json")" "[2,\"$OCI_I\"]"
expect_eq "list_exact_descriptors" "$(listed)" "$WANT_ALL"
expect_eq "list_b_artifact_type_is_config_type" \
	"$(jq -r --arg d "$B" '.manifests[] | select(.digest == $d) | .artifactType' "$W/ref.json")" \
	application/vnd.example.signature.config.v1+json
expect_eq "list_index_has_no_artifact_type" \
	"$(jq -r --arg d "$C" '.manifests[] | select(.digest == $d) | has("artifactType")' "$W/ref.json")" false
expect_eq "list_no_filter_header" "$(ref_header OCI-Filters-Applied)" ""
expect_eq "head_200" "$(http_code "$RS_URL/v2/team/app/referrers/$SUBJ" -I)" 200

expect_eq "filter_200" "$(referrers team/app "$SUBJ" artifactType=application/vnd.example.sbom.v1)" 200
expect_eq "filter_header" "$(ref_header OCI-Filters-Applied)" artifactType
expect_eq "filter_exact" "$(listed)" "$(want "$(descriptor "$W/a.json" "$OCI_M")")"
referrers team/app "$SUBJ" artifactType=application/vnd.example.signature.config.v1%2Bjson > /dev/null
expect_eq "filter_by_config_type" "$(jq -r '[.manifests[].digest] | join(",")' "$W/ref.json")" "$B"
referrers team/app "$SUBJ" artifactType=application/none > /dev/null
expect_eq "filter_none_matches_empty" "$(jq -c .manifests "$W/ref.json")" "[]"
expect_eq "filter_none_matches_header" "$(ref_header OCI-Filters-Applied)" artifactType

UNKNOWN=sha256:$(printf 'nothing refers to this' | sha256sum | cut -d' ' -f1)
expect_eq "unknown_digest_200" "$(referrers team/app "$UNKNOWN")" 200
expect_eq "unknown_digest_empty_index" "$(jq -c . "$W/ref.json")" \
	"{\"schemaVersion\":2,\"mediaType\":\"$OCI_I\",\"manifests\":[]}"
expect_eq "bad_digest_400" "$(referrers team/app sha256:xyz)" 400
expect_eq "bad_digest_code" "$(jq -r '.errors[0].code' "$W/ref.json")" DIGEST_INVALID
expect_eq "not_a_digest_400" "$(referrers team/app latest)" 400
expect_eq "post_refused" "$(http_code "$RS_URL/v2/team/app/referrers/$SUBJ" -X POST "${U[@]}")" 405

# a referrer pushed before its subject exists
GHOST=sha256:$(printf 'a subject pushed later' | sha256sum | cut -d' ' -f1)
jq -c --arg d "$GHOST" '.subject = {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: 10}' \
	"$W/a.json" > "$W/d.json"
hdrs=$(put_manifest "$H" team/app "$(sha256_of "$W/d.json")" "$W/d.json" "$OCI_M" "${U[@]}")
expect_eq "put_before_subject_201" "$(echo "$hdrs" | status_of)" 201
expect_eq "put_before_subject_oci_subject" "$(echo "$hdrs" | header_value OCI-Subject)" "$GHOST"
referrers team/app "$GHOST" > /dev/null
expect_eq "list_before_subject" "$(listed)" "$(want "$(descriptor "$W/d.json" "$OCI_M")")"

# ------------------------------------------------------------ isolation between repositories
expect_eq "other_repo_sees_nothing" "$(referrers team/other "$SUBJ"; jq -c .manifests "$W/ref.json")" "200[]"
# the same kind of artifact pushed to team/other is listed there only
expect_eq "other_push_blob" "$(push_blob "$H" team/other "$W/empty" "${U[@]}")" 201
jq -c '.annotations = {"org.example.repo":"other"} | .layers = []' "$W/a.json" > "$W/e.json"
put_manifest "$H" team/other "$(sha256_of "$W/e.json")" "$W/e.json" "$OCI_M" "${U[@]}" > /dev/null
referrers team/other "$SUBJ" > /dev/null
expect_eq "other_repo_lists_its_own" "$(listed)" "$(want "$(descriptor "$W/e.json" "$OCI_M")")"
referrers team/app "$SUBJ" > /dev/null
expect_eq "app_repo_unchanged" "$(listed)" "$WANT_ALL"

# ------------------------------------------------------------ under a push policy (check-only)
for f in empty sigcfg; do
	expect_eq "gated_push_blob_$f" "$(push_blob "$H" gated/app "$W/$f" "${U[@]}")" 201
done
hdrs=$(put_manifest "$H" gated/app "$B" "$W/b.json" "$OCI_M" "${U[@]}")
expect_eq "gated_put_201" "$(echo "$hdrs" | status_of)" 201
expect_eq "gated_put_oci_subject" "$(echo "$hdrs" | header_value OCI-Subject)" "$SUBJ"
referrers gated/app "$SUBJ" > /dev/null
expect_eq "gated_listed" "$(listed)" "$(want "$(descriptor "$W/b.json" "$OCI_M")")"

# ------------------------------------------------------------ restart
restart_regslim
referrers team/app "$SUBJ" > /dev/null
expect_eq "restart_keeps_list" "$(listed)" "$WANT_ALL"
referrers team/other "$SUBJ" > /dev/null
expect_eq "restart_keeps_isolation" "$(listed)" "$(want "$(descriptor "$W/e.json" "$OCI_M")")"

# ------------------------------------------------------------ manifests pushed before the index
# A data directory without the index (written before regslim had the referrers API): manifests
# listed by a referrers tag pushed to the repository that have the digest as subject are listed
# (distribution-spec, "Enabling the Referrers API"); an entry whose subject is another is not.
stop_regslim
rm -rf "$RS_DATA/push/referrers"
start_regslim --config "$CONF/regslim.json"
referrers team/app "$SUBJ" > /dev/null
expect_eq "old_data_without_index_empty" "$(jq -c .manifests "$W/ref.json")" "[]"
jq -n -c --arg mt "$OCI_I" --argjson a "$(descriptor "$W/a.json" "$OCI_M")" \
	--argjson b "$(descriptor "$W/b.json" "$OCI_M")" --argjson d "$(descriptor "$W/d.json" "$OCI_M")" \
	'{schemaVersion: 2, mediaType: $mt, manifests: [$a, $b, $d]}' > "$W/tag.json"
hdrs=$(put_manifest "$H" team/app "sha256-${SUBJ#sha256:}" "$W/tag.json" "$OCI_I" "${U[@]}")
expect_eq "referrers_tag_pushed_201" "$(echo "$hdrs" | status_of)" 201
referrers team/app "$SUBJ" > /dev/null
expect_eq "referrers_tag_entries_listed" "$(listed)" \
	"$(want "$(descriptor "$W/a.json" "$OCI_M")" "$(descriptor "$W/b.json" "$OCI_M")")"

# ------------------------------------------------------------ the mirror: upstream's referrers tag
UPSUBJ=$(manifest_digest "$REG_PLAIN" library/tiny latest)
UPSUBJ_SIZE=$(manifest_get "$REG_PLAIN" library/tiny latest | wc -c)
# before the upstream has any: an empty list (docker-registry answers 404 to the referrers API and
# to the referrers tag)
upstream_mark
expect_eq "mirror_none_yet_200" "$(referrers library/tiny "$UPSUBJ")" 200
expect_eq "mirror_none_yet_empty" "$(jq -c .manifests "$W/ref.json")" "[]"
expect_ge "mirror_asked_referrers_api" "$(upstream_count GET "^/v2/library/tiny/referrers/$UPSUBJ\$")" 1
expect_ge "mirror_asked_referrers_tag" \
	"$(upstream_count GET "^/v2/library/tiny/manifests/sha256-${UPSUBJ#sha256:}\$")" 1
# An artifact pushed to the upstream with its referrers tag, as a client without the API does.
expect_eq "upstream_push_blob" "$(push_blob "$REG_PLAIN" library/tiny "$W/empty")" 201
cat > "$W/u.json" << EOF
{"schemaVersion":2,"mediaType":"$OCI_M","artifactType":"application/vnd.example.upstream.sig.v1",
 "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"$EMPTY","size":2},"layers":[],
 "subject":{"mediaType":"$OCI_M","digest":"$UPSUBJ","size":$UPSUBJ_SIZE},
 "annotations":{"org.example.signer":"upstream"}}
EOF
UA=$(sha256_of "$W/u.json")
expect_eq "upstream_push_artifact" "$(put_manifest "$REG_PLAIN" library/tiny "$UA" "$W/u.json" "$OCI_M" | status_of)" 201
UDESC=$(descriptor "$W/u.json" "$OCI_M")
jq -c -n --argjson d "$UDESC" --arg mt "$OCI_I" '{schemaVersion: 2, mediaType: $mt, manifests: [$d]}' > "$W/utag.json"
expect_eq "upstream_push_referrers_tag" \
	"$(put_manifest "$REG_PLAIN" library/tiny "sha256-${UPSUBJ#sha256:}" "$W/utag.json" "$OCI_I" | status_of)" 201
# regslim cached the empty answer for the tag TTL (300 s): a new regslim data dir sees the tag
stop_regslim
RS_DATA=$REGSLIM_LAB/rs2 start_regslim --config "$CONF/regslim.json"
upstream_mark
expect_eq "mirror_tag_schema_200" "$(referrers library/tiny "$UPSUBJ")" 200
expect_eq "mirror_tag_schema_exact" "$(listed)" "$(want "$UDESC")"
# merged with a referrer pushed to regslim under the same name
expect_eq "mirror_push_blob" "$(push_blob "$H" library/tiny "$W/empty" "${U[@]}")" 201
jq -c --arg d "$UPSUBJ" --argjson s "$UPSUBJ_SIZE" \
	'.subject = {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s}
	 | .artifactType = "application/vnd.example.regslim.attestation.v1" | .layers = []
	 | .annotations = {"org.example.by":"regslim"}' "$W/a.json" > "$W/m.json"
hdrs=$(put_manifest "$H" library/tiny "$(sha256_of "$W/m.json")" "$W/m.json" "$OCI_M" "${U[@]}")
expect_eq "mirror_pushed_referrer_oci_subject" "$(echo "$hdrs" | header_value OCI-Subject)" "$UPSUBJ"
referrers library/tiny "$UPSUBJ" > /dev/null
expect_eq "mirror_merged_exact" "$(listed)" "$(want "$UDESC" "$(descriptor "$W/m.json" "$OCI_M")")"
referrers library/tiny "$UPSUBJ" artifactType=application/vnd.example.upstream.sig.v1 > /dev/null
expect_eq "mirror_filter_upstream_only" "$(listed)" "$(want "$UDESC")"
expect_eq "mirror_filter_header" "$(ref_header OCI-Filters-Applied)" artifactType
# cached like a tag: within the TTL the upstream is not asked again
n=$(upstream_count GET "^/v2/library/tiny/(referrers/|manifests/sha256-)")
referrers library/tiny "$UPSUBJ" > /dev/null
expect_eq "mirror_cached_no_new_upstream_request" \
	"$(upstream_count GET "^/v2/library/tiny/(referrers/|manifests/sha256-)")" "$n"
# and served with the upstream down
upstream_stop
expect_eq "mirror_upstream_down_200" "$(referrers library/tiny "$UPSUBJ")" 200
expect_eq "mirror_upstream_down_cached_list" "$(listed)" "$(want "$UDESC" "$(descriptor "$W/m.json" "$OCI_M")")"
upstream_restart
# another name does not see them (a repository the upstream does not have)
referrers library/nosuch "$UPSUBJ" > /dev/null
expect_eq "mirror_other_name_empty" "$(jq -c .manifests "$W/ref.json")" "[]"

# ------------------------------------------------------------ the mirror: TTL and stale-if-error
# a second instance whose upstream's tag_ttl_s is 1: after 2 s the list is asked again, and with
# the upstream down the cached list is served stale
cat > "$CONF/ttl.json" << EOF
{"upstreams": [{"name": "lab", "url": "http://$REG_PLAIN", "default": true, "tag_ttl_s": 1, "timeout_s": 5}]}
EOF
P2=$((LAB_PORT_BASE + 51))
check "ttl_instance_starts" regslim_spawn ttl "$P2" "" "$REGSLIM_LAB/rs-ttl" --config "$CONF/ttl.json"
TTL_LOG=$LOGS/regslim-ttl.log
ttl_referrers() { rs_curl -o "$W/ref.json" -w '%{http_code}' "http://127.0.0.1:$P2/v2/library/tiny/referrers/$1"; }
ttl_referrers "$UPSUBJ" > /dev/null
expect_eq "ttl_first_answer" "$(listed)" "$(want "$UDESC")"
sleep 2
upstream_mark
ttl_referrers "$UPSUBJ" > /dev/null
expect_ge "ttl_expired_asks_again" "$(upstream_count GET "^/v2/library/tiny/(referrers/|manifests/sha256-)")" 1
sleep 2
upstream_stop
expect_eq "stale_200" "$(ttl_referrers "$UPSUBJ")" 200
expect_eq "stale_cached_list" "$(listed)" "$(want "$UDESC")"
expect "stale_logged" "regslim_log_has 'serving the cached referrers of $UPSUBJ' '$TTL_LOG'" "$(tail -n 3 "$TTL_LOG")"
expect_ge "stale_counted" "$(metric regslim_stale_served_total "" "http://127.0.0.1:$P2/metrics")" 1
# nothing cached and the upstream down: regslim's own referrers only (none here), logged
expect_eq "down_uncached_200" "$(ttl_referrers "$UNKNOWN")" 200
expect_eq "down_uncached_empty" "$(jq -c .manifests "$W/ref.json")" "[]"
expect "down_uncached_logged" "regslim_log_has \"answering regslim's own only\" '$TTL_LOG'" "$(tail -n 3 "$TTL_LOG")"
upstream_restart
lab_stop regslim-ttl 15

# ------------------------------------------------------------ an upstream that refuses regslim
# The lab's htpasswd registry without credentials: 401 to the referrers API and to the tag. That is
# "none this upstream lets regslim see": an empty list, cached like any other answer.
upstream_also auth
AUTH_LOG=$LOGS/registry-${REG_AUTH##*:}.log
P3=$((LAB_PORT_BASE + 52))
check "noauth_instance_starts" regslim_spawn noauth "$P3" "http://$REG_AUTH" "$REGSLIM_LAB/rs-noauth"
upstream_mark "$AUTH_LOG"
expect_eq "refused_upstream_200" \
	"$(rs_curl -o "$W/ref.json" -w '%{http_code}' "http://127.0.0.1:$P3/v2/library/tiny/referrers/$UPSUBJ")" 200
expect_eq "refused_upstream_empty" "$(jq -c .manifests "$W/ref.json")" "[]"
n=$(upstream_count GET "^/v2/library/tiny/(referrers/|manifests/sha256-)" "" "$AUTH_LOG")
expect_ge "refused_upstream_was_asked" "$n" 1
rs_curl -o /dev/null "http://127.0.0.1:$P3/v2/library/tiny/referrers/$UPSUBJ"
expect_eq "refused_upstream_answer_cached" \
	"$(upstream_count GET "^/v2/library/tiny/(referrers/|manifests/sha256-)" "" "$AUTH_LOG")" "$n"
lab_stop regslim-noauth 15

finish
