#!/usr/bin/env bash
# test_push.sh: the write side of the registry API and client authentication (issue 5,
# foundation): every requirement of the OCI distribution spec's push section with curl, then
# real clients (skopeo, podman, docker) pushing into regslim with credentials and pulling the
# pushed image back through regslim with identical digests; wrong credentials and a user
# without push permission are refused; without an auth section pushes are refused and pulls
# stay anonymous.
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start

TINY_OCI=$REGSLIM_LAB/fixtures/oci/tiny
# the OCI manifest of the tiny fixture's layout (tag latest): what skopeo pushes from oci:
TINY_MANIFEST=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "latest") | .digest' "$TINY_OCI/index.json")
CONF=$REGSLIM_LAB/push
mkdir -p "$CONF"
htpasswd -Bbc "$CONF/htpasswd" alice alicepw 2> /dev/null
htpasswd -Bb "$CONF/htpasswd" bob bobpw 2> /dev/null
cat > "$CONF/regslim.json" << EOF
{"auth": {"htpasswd": "$CONF/htpasswd", "anonymous_pull": true,
          "groups": {"devs": ["alice"]},
          "acl": [{"repository": "*", "groups": ["devs"], "actions": ["pull", "push"]},
                  {"repository": "team/*", "users": ["bob"], "actions": ["pull"]}]},
 "push": {"max_blob_bytes": "1MiB", "upload_idle_timeout_s": 3600}}
EOF
start_regslim --config "$CONF/regslim.json"
H=127.0.0.1:$RS_PORT

# ------------------------------------------------------------ auth
hdrs=$(rs_curl -s -o /dev/null -D - "$RS_URL/v2/" | tr -d '\r')
expect_eq "base_unauthenticated_401" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 401
expect_eq "base_challenge_realm_from_host" "$(echo "$hdrs" | header_value WWW-Authenticate)" \
	"Bearer realm=\"http://$H/auth/token\",service=\"regslim\""
expect_eq "base_basic_ok" "$(http_code "$RS_URL/v2/" -u alice:alicepw)" 200
expect_eq "base_wrong_password_401" "$(http_code "$RS_URL/v2/" -u alice:nope)" 401
expect_eq "token_wrong_password_401" "$(http_code "$RS_URL/auth/token?service=regslim" -u alice:nope)" 401
tokjson=$(rs_curl -u alice:alicepw "$RS_URL/auth/token?service=regslim&scope=repository:team/app:pull,push")
TOK=$(echo "$tokjson" | jq -r .token)
expect_eq "token_has_fields" "$(echo "$tokjson" | jq -r '[.token == .access_token, .expires_in > 0, (.issued_at | length > 0)] | all')" true
AUTH=(-H "Authorization: Bearer $TOK")
expect_eq "base_bearer_ok" "$(http_code "$RS_URL/v2/" "${AUTH[@]}")" 200
# change the signature's last character to another one (never to itself)
last=${TOK: -1}
swap=A
[ "$last" != A ] || swap=B
expect_eq "tampered_token_401" "$(http_code "$RS_URL/v2/" -H "Authorization: Bearer ${TOK%?}$swap")" 401
hdrs=$(rs_curl -s -o /dev/null -D - -X POST "$RS_URL/v2/team/app/blobs/uploads/" | tr -d '\r')
expect_eq "anonymous_push_challenged_with_scope" "$(echo "$hdrs" | header_value WWW-Authenticate)" \
	"Bearer realm=\"http://$H/auth/token\",service=\"regslim\",scope=\"repository:team/app:pull,push\""
body=$(rs_curl -u bob:bobpw -X POST "$RS_URL/v2/team/app/blobs/uploads/")
expect_eq "pull_only_user_push_denied" "$(echo "$body" | jq -r '.errors[0].code')" DENIED
bobtok=$(rs_curl -u bob:bobpw "$RS_URL/auth/token?service=regslim&scope=repository:team/app:pull,push" | jq -r .token)
expect_eq "pull_only_token_push_403" "$(http_code "$RS_URL/v2/team/app/blobs/uploads/" -X POST -H "Authorization: Bearer $bobtok")" 403
expect_eq "anonymous_pull_allowed" "$(http_code "$RS_URL/v2/library/tiny/manifests/latest" "${RS_ACCEPT_ALL[@]}")" 200

# ------------------------------------------------------------ chunked upload
head -c 300000 /dev/urandom > "$CONF/blob"
split -b 100000 -d "$CONF/blob" "$CONF/chunk."
BLOB_DIGEST=sha256:$(sha256sum "$CONF/blob" | cut -d' ' -f1)
hdrs=$(rs_curl -s -o /dev/null -D - -X POST "${AUTH[@]}" "$RS_URL/v2/team/app/blobs/uploads/" | tr -d '\r')
expect_eq "upload_start_202" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 202
expect_eq "upload_start_range" "$(echo "$hdrs" | header_value Range)" "0-0"
UUID=$(echo "$hdrs" | header_value Docker-Upload-UUID)
LOC=$(echo "$hdrs" | header_value Location)
expect_eq "upload_start_location" "$LOC" "/v2/team/app/blobs/uploads/$UUID"
[[ $UUID =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] && pass upload_location_has_uuid ||
	fail upload_location_has_uuid "$UUID"
# No minimum chunk size, so no OCI-Chunk-Min-Length.
expect_eq "upload_start_no_chunk_min" "$(echo "$hdrs" | header_value OCI-Chunk-Min-Length)" ""
patch() { # patch FILE [Content-Range] -> headers
	local extra=()
	[ -z "${2:-}" ] || extra=(-H "Content-Range: $2")
	rs_curl -s -o /dev/null -D - -X PATCH "${AUTH[@]}" -H "Content-Type: application/octet-stream" "${extra[@]}" \
		--data-binary "@$1" "$RS_URL$LOC" | tr -d '\r'
}
hdrs=$(patch "$CONF/chunk.00" "0-99999")
expect_eq "patch_chunk_202" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 202
expect_eq "patch_chunk_range" "$(echo "$hdrs" | header_value Range)" "0-99999"
expect_eq "patch_chunk_location" "$(echo "$hdrs" | header_value Location)" "$LOC"
hdrs=$(patch "$CONF/chunk.00" "0-99999")
expect_eq "patch_repeated_chunk_416" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 416
hdrs=$(patch "$CONF/chunk.02" "200000-299999")
expect_eq "patch_out_of_order_416" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 416
expect_eq "patch_out_of_order_range" "$(echo "$hdrs" | header_value Range)" "0-99999"
hdrs=$(rs_curl -s -o /dev/null -D - "${AUTH[@]}" "$RS_URL$LOC" | tr -d '\r')
expect_eq "upload_status_204" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 204
expect_eq "upload_status_range" "$(echo "$hdrs" | header_value Range)" "0-99999"
expect_eq "upload_status_location" "$(echo "$hdrs" | header_value Location)" "$LOC"
# A chunk without Content-Range (docker's streaming PATCH) appends.
hdrs=$(patch "$CONF/chunk.01")
expect_eq "patch_streaming_range" "$(echo "$hdrs" | header_value Range)" "0-199999"
# Resume after a restart: the upload's state is on disk.
restart_regslim
# Without auth.token_secret_file the signing key is new after a restart: old tokens are refused.
expect_eq "token_from_before_restart_401" "$(http_code "$RS_URL$LOC" "${AUTH[@]}")" 401
TOK=$(rs_curl -u alice:alicepw "$RS_URL/auth/token?service=regslim&scope=repository:team/app:pull,push&scope=repository:team/other:pull,push" | jq -r .token)
AUTH=(-H "Authorization: Bearer $TOK")
hdrs=$(rs_curl -s -o /dev/null -D - "${AUTH[@]}" "$RS_URL$LOC" | tr -d '\r')
expect_eq "upload_resumes_after_restart" "$(echo "$hdrs" | header_value Range)" "0-199999"
bad=sha256:$(printf x | sha256sum | cut -d' ' -f1)
hdrs=$(rs_curl -s -o /dev/null -D - -X PUT "${AUTH[@]}" -H "Content-Type: application/octet-stream" \
	-H "Content-Range: 200000-299999" --data-binary "@$CONF/chunk.02" "$RS_URL$LOC?digest=$BLOB_DIGEST" | tr -d '\r')
expect_eq "put_final_chunk_201" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 201
expect_eq "put_location" "$(echo "$hdrs" | header_value Location)" "/v2/team/app/blobs/$BLOB_DIGEST"
expect_eq "put_digest_header" "$(echo "$hdrs" | header_value Docker-Content-Digest)" "$BLOB_DIGEST"
expect_eq "blob_head_after_push" "$(http_header "$RS_URL/v2/team/app/blobs/$BLOB_DIGEST" Content-Length "${AUTH[@]}")" 300000
got=$(rs_curl "${AUTH[@]}" "$RS_URL/v2/team/app/blobs/$BLOB_DIGEST" | sha256sum | cut -d' ' -f1)
expect_eq "blob_get_after_push" "sha256:$got" "$BLOB_DIGEST"
expect_eq "finished_upload_gone_404" "$(http_code "$RS_URL$LOC" "${AUTH[@]}")" 404

# Digest mismatch, cancel, monolithic, size limit.
LOC2=$(rs_curl -s -o /dev/null -D - -X POST "${AUTH[@]}" "$RS_URL/v2/team/app/blobs/uploads/" | tr -d '\r' | header_value Location)
body=$(rs_curl -X PUT "${AUTH[@]}" -H "Content-Type: application/octet-stream" --data-binary "@$CONF/chunk.00" "$RS_URL$LOC2?digest=$bad")
expect_eq "digest_mismatch_invalid" "$(echo "$body" | jq -r '.errors[0].code')" DIGEST_INVALID
LOC3=$(rs_curl -s -o /dev/null -D - -X POST "${AUTH[@]}" "$RS_URL/v2/team/app/blobs/uploads/" | tr -d '\r' | header_value Location)
expect_eq "cancel_204" "$(http_code "$RS_URL$LOC3" -X DELETE "${AUTH[@]}")" 204
body=$(rs_curl "${AUTH[@]}" "$RS_URL$LOC3")
expect_eq "cancelled_upload_unknown" "$(echo "$body" | jq -r '.errors[0].code')" BLOB_UPLOAD_UNKNOWN
printf 'monolithic blob\n' > "$CONF/mono"
MONO=sha256:$(sha256sum "$CONF/mono" | cut -d' ' -f1)
hdrs=$(rs_curl -s -o /dev/null -D - -X POST "${AUTH[@]}" -H "Content-Type: application/octet-stream" \
	--data-binary "@$CONF/mono" "$RS_URL/v2/team/app/blobs/uploads/?digest=$MONO" | tr -d '\r')
expect_eq "monolithic_post_201" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 201
expect_eq "monolithic_post_digest" "$(echo "$hdrs" | header_value Docker-Content-Digest)" "$MONO"
expect_eq "monolithic_post_location" "$(echo "$hdrs" | header_value Location)" "/v2/team/app/blobs/$MONO"
head -c 1100000 /dev/zero > "$CONF/big"
LOC4=$(rs_curl -s -o /dev/null -D - -X POST "${AUTH[@]}" "$RS_URL/v2/team/app/blobs/uploads/" | tr -d '\r' | header_value Location)
body=$(rs_curl -X PATCH "${AUTH[@]}" -H "Content-Type: application/octet-stream" --data-binary "@$CONF/big" "$RS_URL$LOC4")
expect_eq "size_limit_413" "$(echo "$body" | jq -r '.errors[0].code')" SIZE_INVALID
echo "$body" | grep -q 'push.max_blob_bytes' && pass size_limit_names_key || fail size_limit_names_key "$body"

# Cross-repository mount (the token covers both repositories; one for team/app only gets 401
# insufficient_scope on team/other).
hdrs=$(rs_curl -s -o /dev/null -D - -X POST -H "Authorization: Bearer $(rs_curl -u alice:alicepw "$RS_URL/auth/token?service=regslim&scope=repository:team/app:pull" | jq -r .token)" \
	"$RS_URL/v2/team/other/blobs/uploads/?mount=$BLOB_DIGEST&from=team/app" | tr -d '\r')
echo "$hdrs" | header_value WWW-Authenticate | grep -q 'error="insufficient_scope"' && pass token_scope_enforced ||
	fail token_scope_enforced "$(echo "$hdrs" | head -n 1)"
hdrs=$(rs_curl -s -o /dev/null -D - -X POST "${AUTH[@]}" "$RS_URL/v2/team/other/blobs/uploads/?mount=$BLOB_DIGEST&from=team/app" | tr -d '\r')
expect_eq "mount_present_201" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 201
expect_eq "mount_location" "$(echo "$hdrs" | header_value Location)" "/v2/team/other/blobs/$BLOB_DIGEST"
expect_eq "mount_digest_header" "$(echo "$hdrs" | header_value Docker-Content-Digest)" "$BLOB_DIGEST"
hdrs=$(rs_curl -s -o /dev/null -D - -X POST "${AUTH[@]}" "$RS_URL/v2/team/other/blobs/uploads/?mount=$bad&from=team/app" | tr -d '\r')
expect_eq "mount_absent_falls_back_202" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 202
echo "$hdrs" | header_value Location | grep -Eq '^/v2/team/other/blobs/uploads/[0-9a-f-]{36}$' &&
	pass mount_absent_upload_location || fail mount_absent_upload_location "$(echo "$hdrs" | header_value Location)"

# ------------------------------------------------------------ spec conformance: blobs
# One check per requirement of the distribution spec's push section (the table in
# docs/push.md); Basic credentials, so no token scopes are in the way.
A=(-u alice:alicepw)
OCT=(-H "Content-Type: application/octet-stream")
status() { grep '^HTTP/' | tail -n 1 | awk '{print $2}'; } # the final status from headers on stdin
new_upload() { # new_upload REPO -> the upload's Location
	rs_curl -s -o /dev/null -D - -X POST "${A[@]}" "$RS_URL/v2/$1/blobs/uploads/" | tr -d '\r' | header_value Location
}
printf 'post then put\n' > "$CONF/pp"
PP=sha256:$(sha256sum "$CONF/pp" | cut -d' ' -f1)
L=$(new_upload team/app)
hdrs=$(rs_curl -s -o /dev/null -D - -X PUT "${A[@]}" "${OCT[@]}" --data-binary "@$CONF/pp" "$RS_URL$L?digest=$PP" | tr -d '\r')
expect_eq "post_put_monolithic_201" "$(echo "$hdrs" | status)" 201
expect_eq "post_put_location" "$(echo "$hdrs" | header_value Location)" "/v2/team/app/blobs/$PP"
expect_eq "post_put_location_pullable" "$(rs_curl "${A[@]}" "$RS_URL$(echo "$hdrs" | header_value Location)" | sha256sum | cut -d' ' -f1)" "${PP#sha256:}"
body=$(rs_curl -X POST "${A[@]}" "${OCT[@]}" --data-binary "@$CONF/pp" "$RS_URL/v2/team/app/blobs/uploads/?digest=$bad")
expect_eq "monolithic_post_wrong_digest_400" "$(echo "$body" | jq -r '.errors[0].code')" DIGEST_INVALID
echo "$body" | jq -e '(.errors | length == 1) and (.errors[0] | has("code") and has("message")) and (.errors[0].code | test("^[A-Z_]+$"))' > /dev/null &&
	pass error_body_format || fail error_body_format "$body"
L=$(new_upload team/app)
hdrs=$(rs_curl -s -D - -X PUT "${A[@]}" "${OCT[@]}" --data-binary "@$CONF/pp" "$RS_URL$L" | tr -d '\r')
expect_eq "put_without_digest_400" "$(echo "$hdrs" | status)" 400
expect_eq "put_without_digest_code" "$(echo "$hdrs" | sed -n '/^{/p' | jq -r '.errors[0].code')" DIGEST_INVALID
L=$(new_upload team/app)
hdrs=$(rs_curl -s -o /dev/null -D - -X PATCH "${A[@]}" "${OCT[@]}" -H "Content-Range: 5-9" --data-binary 12345 "$RS_URL$L" | tr -d '\r')
expect_eq "first_chunk_not_at_zero_416" "$(echo "$hdrs" | status)" 416
expect_eq "first_chunk_not_at_zero_range" "$(echo "$hdrs" | header_value Range)" "0-0"
head -c 50000 "$CONF/chunk.00" > "$CONF/half"
hdrs=$(rs_curl -s -o /dev/null -D - -X PATCH "${A[@]}" "${OCT[@]}" -H "Content-Range: 0-99999" --data-binary "@$CONF/half" "$RS_URL$L" | tr -d '\r')
expect_eq "chunk_length_not_range_416" "$(echo "$hdrs" | status)" 416
expect_eq "chunk_length_not_range_nothing_written" "$(rs_curl -s -o /dev/null -D - "${A[@]}" "$RS_URL$L" | header_value Range)" "0-0"
# Without Content-Length (chunked transfer) a short chunk is found at its end: kept, and Range says so.
L=$(new_upload team/app)
hdrs=$(rs_curl -s -o /dev/null -D - -X PATCH "${A[@]}" "${OCT[@]}" -H "Transfer-Encoding: chunked" -H "Content-Range: 0-99999" \
	--data-binary "@$CONF/half" "$RS_URL$L" | tr -d '\r')
expect_eq "chunk_short_of_range_416" "$(echo "$hdrs" | status)" 416
expect_eq "chunk_short_of_range_range" "$(echo "$hdrs" | header_value Range)" "0-49999"
hdrs=$(rs_curl -s -o /dev/null -D - -X PATCH "${A[@]}" "${OCT[@]}" -H "Transfer-Encoding: chunked" -H "Content-Range: 50000-50009" \
	--data-binary "@$CONF/half" "$RS_URL$L" | tr -d '\r')
expect_eq "chunk_longer_than_range_416" "$(echo "$hdrs" | status)" 416
body=$(rs_curl "${A[@]}" "$RS_URL/v2/team/other/blobs/uploads/${L##*/}")
expect_eq "upload_of_other_repo_unknown" "$(echo "$body" | jq -r '.errors[0].code')" BLOB_UPLOAD_UNKNOWN
# Without from= there is no mount (holding a digest somewhere gives no right to it): a new upload.
hdrs=$(rs_curl -s -o /dev/null -D - -X POST "${A[@]}" "$RS_URL/v2/team/third/blobs/uploads/?mount=$MONO" | tr -d '\r')
expect_eq "mount_without_from_202" "$(echo "$hdrs" | status)" 202
echo "$hdrs" | header_value Location | grep -Eq '^/v2/team/third/blobs/uploads/[0-9a-f-]{36}$' &&
	pass mount_without_from_upload_location || fail mount_without_from_upload_location "$(echo "$hdrs" | header_value Location)"
expect_eq "mount_without_from_not_readable" "$(http_code "$RS_URL/v2/team/third/blobs/$MONO" "${A[@]}")" 404
# from= a repository that does not hold the blob: no mount either.
hdrs=$(rs_curl -s -o /dev/null -D - -X POST "${A[@]}" "$RS_URL/v2/team/third/blobs/uploads/?mount=$MONO&from=team/third" | tr -d '\r')
expect_eq "mount_from_repo_without_blob_202" "$(echo "$hdrs" | status)" 202
body=$(rs_curl -X POST "${A[@]}" "$RS_URL/v2/Team/App/blobs/uploads/")
expect_eq "push_invalid_name_400" "$(echo "$body" | jq -r '.errors[0].code')" NAME_INVALID
# deletes (the real ones: test_conformance.sh): what team/app does not hold is 404
expect_eq "blob_delete_unknown_404" "$(http_code "$RS_URL/v2/team/app/blobs/sha256:$(printf 'never pushed' | sha256sum | cut -d' ' -f1)" -X DELETE "${A[@]}")" 404

# ------------------------------------------------------------ manifests
CFG_BLOB=$MONO
mf() { # mf LAYER_DIGEST LAYER_SIZE
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":16},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' "$CFG_BLOB" "$1" "$2"
}
mf "$bad" 1 > "$CONF/m-missing.json"
body=$(rs_curl -X PUT "${AUTH[@]}" -H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary "@$CONF/m-missing.json" "$RS_URL/v2/team/app/manifests/broken")
expect_eq "manifest_missing_blob_unknown" "$(echo "$body" | jq -r '.errors[0].code')" MANIFEST_BLOB_UNKNOWN
body=$(rs_curl -X PUT "${AUTH[@]}" -H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary '{"schemaVersion":2,' "$RS_URL/v2/team/app/manifests/broken")
expect_eq "manifest_bad_json_invalid" "$(echo "$body" | jq -r '.errors[0].code')" MANIFEST_INVALID
mf "$BLOB_DIGEST" 300000 > "$CONF/m.json"
MD=sha256:$(sha256sum "$CONF/m.json" | cut -d' ' -f1)
hdrs=$(rs_curl -s -o /dev/null -D - -X PUT "${AUTH[@]}" -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
	--data-binary "@$CONF/m.json" "$RS_URL/v2/team/app/manifests/v1" | tr -d '\r')
expect_eq "manifest_put_201" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 201
expect_eq "manifest_put_location" "$(echo "$hdrs" | header_value Location)" "/v2/team/app/manifests/$MD"
expect_eq "manifest_put_digest" "$(echo "$hdrs" | header_value Docker-Content-Digest)" "$MD"
# A client that HEADs a blob through regslim sees the upstream's copy and skips the upload:
# the manifest PUT must then find the blob upstream (lab/tiny's blobs live only in the upstream).
UPM=$(curl -s --max-time 10 -H "Accept: application/vnd.oci.image.manifest.v1+json" "http://$REG_PLAIN/v2/lab/tiny/manifests/oci")
UPCFG=$(echo "$UPM" | jq -r .config.digest)
TOK2=$(rs_curl -u alice:alicepw "$RS_URL/auth/token?service=regslim&scope=repository:lab/tiny:pull,push" | jq -r .token)
expect_eq "upstream_only_blob_head_found" "$(http_code "$RS_URL/v2/lab/tiny/blobs/$UPCFG" -I -H "Authorization: Bearer $TOK2")" 200
hdrs=$(printf '%s' "$UPM" | rs_curl -s -o "$CONF/up.out" -D - -X PUT -H "Authorization: Bearer $TOK2" \
	-H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary @- "$RS_URL/v2/lab/tiny/manifests/again" | tr -d '\r')
expect_eq "manifest_put_fetches_upstream_only_blobs_201" "$(echo "$hdrs" | head -n 1 | awk '{print $2}')" 201
expect_eq "upstream_only_pushed_tag_served" "$(manifest_digest "$H" lab/tiny again -H "Authorization: Bearer $TOK2")" \
	"sha256:$(printf '%s' "$UPM" | sha256sum | cut -d' ' -f1)"
expect_eq "pushed_tag_served" "$(http_header "$RS_URL/v2/team/app/manifests/v1" Docker-Content-Digest "${RS_ACCEPT_ALL[@]}")" "$MD"
body=$(rs_curl -X PUT "${AUTH[@]}" -H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary "@$CONF/m.json" "$RS_URL/v2/team/app/manifests/$bad")
expect_eq "manifest_put_wrong_digest_ref" "$(echo "$body" | jq -r '.errors[0].code')" DIGEST_INVALID
expect_eq "tags_list_pushed" "$(rs_curl "$RS_URL/v2/team/app/tags/list" | jq -c .tags)" '["v1"]'
expect_eq "manifest_delete_unknown_tag_404" "$(http_code "$RS_URL/v2/team/app/manifests/never-pushed" -X DELETE "${AUTH[@]}")" 404

# ------------------------------------------------------------ spec conformance: manifests
OCIM=application/vnd.oci.image.manifest.v1+json
put_manifest() { # put_manifest FILE REF [CONTENT-TYPE] -> response headers and body
	rs_curl -s -D - -X PUT "${A[@]}" -H "Content-Type: ${3:-$OCIM}" --data-binary "@$1" "$RS_URL/v2/team/app/manifests/$2" | tr -d '\r'
}
expect_eq "manifest_delete_unknown_digest_404" "$(http_code "$RS_URL/v2/team/app/manifests/sha256:$(printf 'never pushed' | sha256sum | cut -d' ' -f1)" -X DELETE "${A[@]}")" 404
jq . "$CONF/m.json" > "$CONF/m-pretty.json" # other bytes, same content: stored as sent
MP=sha256:$(sha256sum "$CONF/m-pretty.json" | cut -d' ' -f1)
hdrs=$(put_manifest "$CONF/m-pretty.json" "$MP")
expect_eq "manifest_put_by_digest_201" "$(echo "$hdrs" | status)" 201
expect_eq "manifest_put_by_digest_header" "$(echo "$hdrs" | header_value Docker-Content-Digest)" "$MP"
expect_eq "manifest_stored_byte_exact" \
	"$(rs_curl "${A[@]}" -H "Accept: $OCIM" "$RS_URL/v2/team/app/manifests/$MP" | sha256sum | cut -d' ' -f1)" "${MP#sha256:}"
expect_eq "manifest_get_content_type_as_pushed" "$(http_header "$RS_URL/v2/team/app/manifests/v1" Content-Type "${A[@]}" -H "Accept: $OCIM")" "$OCIM"
hdrs=$(put_manifest "$CONF/m.json" params "$OCIM; charset=utf-8")
expect_eq "manifest_content_type_params_ignored" "$(echo "$hdrs" | status)" 201
hdrs=$(put_manifest "$CONF/m.json" wrongtype application/vnd.oci.image.index.v1+json)
expect_eq "manifest_content_type_mismatch_invalid" "$(echo "$hdrs" | sed -n '/^{/p' | jq -r '.errors[0].code')" MANIFEST_INVALID
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":16},"layers":[]}' \
	"$OCIM" "$CFG_BLOB" > "$CONF/m-empty.json"
expect_eq "manifest_empty_layers_201" "$(put_manifest "$CONF/m-empty.json" empty | status)" 201
# subject: accepted although the subject does not exist, answered with OCI-Subject and listed by
# the referrers API (test_referrers.sh has the rest); a client's referrers tag (an index under
# sha256-<hex>) is still a plain tag here.
printf '{"schemaVersion":2,"mediaType":"%s","artifactType":"application/vnd.example.sig","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":16},"layers":[],"subject":{"mediaType":"%s","digest":"%s","size":1}}' \
	"$OCIM" "$CFG_BLOB" "$OCIM" "$bad" > "$CONF/m-subject.json"
SUBJ=sha256:$(sha256sum "$CONF/m-subject.json" | cut -d' ' -f1)
hdrs=$(put_manifest "$CONF/m-subject.json" "$SUBJ")
expect_eq "manifest_subject_missing_accepted_201" "$(echo "$hdrs" | status)" 201
expect_eq "manifest_subject_oci_subject_header" "$(echo "$hdrs" | header_value OCI-Subject)" "$bad"
expect_eq "referrers_api_lists_it" \
	"$(rs_curl "${A[@]}" "$RS_URL/v2/team/app/referrers/$bad" | jq -c '[.manifests[] | [.digest, .artifactType]]')" \
	"[[\"$SUBJ\",\"application/vnd.example.sig\"]]"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"%s","digest":"%s","size":%s,"artifactType":"application/vnd.example.sig"}]}' \
	"$OCIM" "$SUBJ" "$(stat -c %s "$CONF/m-subject.json")" > "$CONF/referrers.json"
expect_eq "referrers_tag_schema_201" "$(put_manifest "$CONF/referrers.json" "sha256-${bad#sha256:}" application/vnd.oci.image.index.v1+json | status)" 201
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"%s","digest":"%s","size":1}]}' \
	"$OCIM" "$bad" > "$CONF/index-missing.json"
hdrs=$(put_manifest "$CONF/index-missing.json" broken application/vnd.oci.image.index.v1+json)
expect_eq "index_missing_manifest_blob_unknown" "$(echo "$hdrs" | sed -n '/^{/p' | jq -r '.errors[0].code')" MANIFEST_BLOB_UNKNOWN
T128=_$(printf 'a%.0s' {1..125}).x
expect_eq "tag_128_chars_201" "$(put_manifest "$CONF/m.json" "$T128" | status)" 201
hdrs=$(put_manifest "$CONF/m.json" "${T128}y")
expect_eq "tag_129_chars_400" "$(echo "$hdrs" | status)" 400
expect_eq "tag_invalid_code" "$(echo "$hdrs" | sed -n '/^{/p' | jq -r '.errors[0].code')" MANIFEST_INVALID
expect_eq "tag_384_chars_400" "$(put_manifest "$CONF/m.json" "$T128$T128$T128" | status)" 400
expect_eq "tag_bad_first_char_400" "$(put_manifest "$CONF/m.json" ".v1" | status)" 400
# The size limit: 4 MiB (the spec's "at least 4 megabytes") is accepted, a byte more is 413.
mf_sized() { # mf_sized BYTES FILE
	local pre='{"schemaVersion":2,"mediaType":"'$OCIM'","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'$CFG_BLOB'","size":16},"layers":[],"annotations":{"pad":"'
	{
		printf '%s' "$pre"
		head -c $(($1 - ${#pre} - 3)) /dev/zero | tr '\0' a
		printf '"}}'
	} > "$2"
}
mf_sized 4194304 "$CONF/m-4mib.json"
expect_eq "manifest_4mib_file_size" "$(stat -c %s "$CONF/m-4mib.json")" 4194304
expect_eq "manifest_4mib_accepted_201" "$(put_manifest "$CONF/m-4mib.json" big | status)" 201
mf_sized 4194305 "$CONF/m-over.json"
hdrs=$(put_manifest "$CONF/m-over.json" over)
expect_eq "manifest_over_limit_413" "$(echo "$hdrs" | status)" 413
expect_eq "manifest_over_limit_code" "$(echo "$hdrs" | sed -n '/^{/p' | jq -r '.errors[0].code')" SIZE_INVALID
expect_eq "pull_nonexistent_repo_404" "$(http_code "$RS_URL/v2/team/nothing-here/manifests/v1" "${A[@]}" "${RS_ACCEPT_ALL[@]}")" 404

# ------------------------------------------------------------ real clients
SK=(timeout 120 skopeo)
check "skopeo_push_oci" "${SK[@]}" copy --dest-tls-verify=false --dest-creds alice:alicepw \
	"oci:$TINY_OCI:latest" "docker://$H/team/tiny:v1"
expect_eq "skopeo_pull_back_same_digest" \
	"$("${SK[@]}" inspect --raw --tls-verify=false "docker://$H/team/tiny:v1" | sha256sum | cut -d' ' -f1)" "${TINY_MANIFEST#sha256:}"
rm -rf "$CONF/pulled"
check "skopeo_copy_back_blobs_verified" "${SK[@]}" copy --src-tls-verify=false "docker://$H/team/tiny:v1" "dir:$CONF/pulled"
check "skopeo_push_index_all" "${SK[@]}" copy --all --dest-tls-verify=false --dest-creds alice:alicepw \
	"oci:$REGSLIM_LAB/fixtures/oci/multi:latest" "docker://$H/team/multi:v1"
want=$(jq -r '.manifests[0].digest' "$REGSLIM_LAB/fixtures/oci/multi/index.json")
expect_eq "index_pull_back_same_digest" \
	"sha256:$("${SK[@]}" inspect --raw --tls-verify=false "docker://$H/team/multi:v1" | sha256sum | cut -d' ' -f1)" "$want"
out=$("${SK[@]}" copy --dest-tls-verify=false --dest-creds alice:wrong "oci:$TINY_OCI:latest" "docker://$H/team/tiny:bad" 2>&1)
echo "$out" | grep -qi 'unauthorized\|invalid username' && pass skopeo_wrong_credentials_refused || fail skopeo_wrong_credentials_refused "$out"
out=$("${SK[@]}" copy --dest-tls-verify=false --dest-creds bob:bobpw "oci:$TINY_OCI:latest" "docker://$H/team/tiny:bob" 2>&1)
echo "$out" | grep -qi 'denied\|may not push' && pass skopeo_no_push_permission_refused || fail skopeo_no_push_permission_refused "$out"

if client_usable podman; then
	if podman_pull -q --tls-verify=false "$REG_PLAIN/lab/tiny:latest" > "$LOGS/podman-pull.log" 2>&1 &&
		lpodman push --tls-verify=false --creds alice:alicepw --digestfile "$CONF/podman.digest" \
			"$REG_PLAIN/lab/tiny:latest" "docker://$H/team/podtiny:v1" > "$LOGS/podman-push.log" 2>&1; then
		pass podman_push
		expect_eq "podman_pull_back_same_digest" \
			"sha256:$("${SK[@]}" inspect --raw --tls-verify=false "docker://$H/team/podtiny:v1" | sha256sum | cut -d' ' -f1)" \
			"$(cat "$CONF/podman.digest")"
	else
		fail podman_push "$(tail -n 3 "$LOGS/podman-push.log" "$LOGS/podman-pull.log" | tr '\n' ' ')"
	fi
else
	skip podman_push "$RS_CLIENT_WHY"
fi

if client_usable docker; then
	if ldocker login -u alice -p alicepw "$H" > "$LOGS/docker-login.log" 2>&1; then
		pass docker_login
		if docker_pull tiny > "$LOGS/docker-pull.log" 2>&1 && ldocker tag tiny "$H/team/dtiny:v1" &&
			timeout 300 env DOCKER_CONFIG="$DOCKER_DIR/client-config" /usr/bin/docker -H "unix://$DOCKER_SOCK" \
				push "$H/team/dtiny:v1" > "$LOGS/docker-push.log" 2>&1; then
			pass docker_push
			d=$(grep -o 'digest: sha256:[0-9a-f]*' "$LOGS/docker-push.log" | cut -d' ' -f2)
			expect_eq "docker_pull_back_same_digest" \
				"sha256:$("${SK[@]}" inspect --raw --tls-verify=false "docker://$H/team/dtiny:v1" | sha256sum | cut -d' ' -f1)" "$d"
		else
			fail docker_push "$(tail -n 3 "$LOGS/docker-push.log" | tr '\n' ' ')"
		fi
	else
		fail docker_login "$(tail -n 3 "$LOGS/docker-login.log" | tr '\n' ' ')"
	fi
	out=$(ldocker login -u alice -p wrong "$H" 2>&1)
	echo "$out" | grep -qi 'unauthorized\|incorrect\|invalid' && pass docker_login_wrong_password || fail docker_login_wrong_password "$out"
else
	skip docker_push "$RS_CLIENT_WHY"
fi

# ------------------------------------------------------------ no auth section
regslim_spawn noauth $((LAB_PORT_BASE + 51)) "http://$REG_PLAIN" "$REGSLIM_LAB/rs-noauth" 2> /dev/null ||
	fail noauth_start "see $LOGS/regslim-noauth.log"
NA=http://127.0.0.1:$((LAB_PORT_BASE + 51))
expect_eq "noauth_base_open" "$(http_code "$NA/v2/")" 200
body=$(rs_curl -X POST "$NA/v2/team/app/blobs/uploads/")
expect_eq "noauth_push_refused" "$(echo "$body" | jq -r '.errors[0].code')" DENIED
echo "$body" | grep -q 'docs/push.md' && pass noauth_push_refusal_explains || fail noauth_push_refusal_explains "$body"
expect_eq "noauth_pull_works" "$(http_code "$NA/v2/library/tiny/manifests/latest" "${RS_ACCEPT_ALL[@]}")" 200

finish
