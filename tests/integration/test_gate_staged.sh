#!/usr/bin/env bash
# test_gate_staged.sh: with push.stream_uploads on (the default), in check-only mode a layer is
# streamed on into an upload session at the upstream while the client still uploads it, and that
# session is completed only when the layer's own scan is clean (issue 16; proxy/gate/gate_stage.h).
# regslim with a check-only policy (secrets deny) in front of a real docker-registry (its storage
# on disk is looked at: repositories/<name>/_uploads/<id>/data holds the bytes of a session in
# progress; a deleted session leaves only docker-registry's 108-byte hash state of offset 0):
#  - a clean layer uploaded in two PATCHes: after the first, the upstream already holds an upload
#    session with bytes in it; after the final PUT the blob is upstream (one PATCH, one PUT with
#    its digest) before any manifest PUT, no session is left, and the manifest PUT (201) does not
#    upload it again;
#  - a layer holding a private key: its session is deleted (regslim says why), the upstream never
#    has the blob and holds no session; the manifest PUT is refused (403);
#  - an upload with a wrong digest (400) and an upload cancelled with DELETE (204): their sessions
#    are deleted, nothing is stored upstream;
#  - the upstream restarted while a stage streams: the stage fails (counted, logged), the layer
#    goes upstream the other way and the push lands (201);
#  - regslim_gate_staged_uploads_total counts each outcome.
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start plain none
UP=$REG_PLAIN
UPDATA=$REGSLIM_LAB/registry/data-${UP##*:}/docker/registry/v2/repositories

G=$REGSLIM_LAB/gate
mkdir -p "$G"
htpasswd -Bbc "$G/htpasswd" alice alicepw 2> /dev/null
cat > "$G/regslim.json" << EOF
{"upstreams": [{"name": "up", "url": "http://$UP", "default": true}],
 "log": {"level": "debug"},
 "auth": {"htpasswd": "$G/htpasswd",
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]},
 "push": {"policies": [
   {"repositories": ["staged/*"], "mode": "check-only",
    "rules": {"secrets": {"action": "deny"}, "non_root": {"action": "warn"}}}]}}
EOF
RS_UPSTREAM="" start_regslim --config "$G/regslim.json"

IMG=$G/img
"$PY" "$(dirname "${BASH_SOURCE[0]}")/gate_image.py" "$IMG" > "$LOGS/mkimage.log" 2>&1 ||
	fail mkimage "$(tail -n 2 "$LOGS/mkimage.log")"
CLEAN=$(jq -r '.layers[0].digest' "$IMG/bad.json")
KEYED=$(jq -r '.layers[1].digest' "$IMG/bad.json")
blob() { echo "$IMG/blobs/sha256/${1#sha256:}"; }
L=$(blob "$CLEAN")
LSIZE=$(stat -c %s "$L")

token() { rs_curl -u alice:alicepw "$RS_URL/auth/token?service=regslim&scope=repository:$1:pull,push" | jq -r .token; }
auth() { AUTH=(-H "Authorization: Bearer $(token "$1")"); }
# mono REPO DIGEST: monolithic upload through regslim; prints the status
mono() {
	rs_curl -o /dev/null -w '%{http_code}' -X POST "${AUTH[@]}" -H "Content-Type: application/octet-stream" \
		--data-binary "@$(blob "$2")" "$RS_URL/v2/$1/blobs/uploads/?digest=$2"
}
put_manifest() {
	rs_curl -o "$LOGS/put-${1//\//_}.out" -w '%{http_code}' -X PUT "${AUTH[@]}" \
		-H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary "@$3" "$RS_URL/v2/$1/manifests/$2"
}
up_blob() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 -I "http://$UP/v2/$1/blobs/$2"; }
# sessions REPO: upload sessions of REPO the upstream holds bytes for (data files)
sessions() { find "$UPDATA/$1/_uploads" -name data -type f 2> /dev/null | wc -l; }
# session_bytes REPO: bytes in its sessions' data files
session_bytes() { find "$UPDATA/$1/_uploads" -name data -type f -printf '%s\n' 2> /dev/null | awk '{ n += $1 } END { print n + 0 }'; }
staged() { metric regslim_gate_staged_uploads_total "result=\"$1\""; }
wait_for() { # at most 30 s
	local i
	for ((i = 0; i < 150; i++)); do "$@" && return 0; sleep 0.2; done
	return 1
}
has_bytes() { [ "$(session_bytes "$1")" -gt 0 ]; }
no_sessions() { [ "$(sessions "$1")" = 0 ]; }
deleted_at_least() { [ "$(staged deleted)" -ge "$1" ]; }

# ------------------------------------------------------------ a clean layer, streamed as it arrives
auth staged/ok
upstream_mark
loc=$(upload_start staged/ok)
head -c $((LSIZE / 2)) "$L" > "$G/p1"
tail -c +$((LSIZE / 2 + 1)) "$L" > "$G/p2"
loc=$(upload_patch "$loc" "$G/p1")
check "first_half_already_in_an_upstream_session" wait_for has_bytes staged/ok
expect_eq "no_blob_upstream_before_the_digest" "$(up_blob staged/ok "$CLEAN")" 404
loc=$(upload_patch "$loc" "$G/p2")
expect_eq "clean_final_put_201" "$(upload_finish "$loc" "$CLEAN")" 201
clean_up() { [ "$(up_blob staged/ok "$CLEAN")" = 200 ]; }
check "clean_layer_upstream_before_the_manifest" wait_for clean_up
check "clean_session_gone" wait_for no_sessions staged/ok
expect_eq "one_patch_one_put" "$(upstream_count PATCH "^/v2/staged/ok/blobs/uploads/") $(upstream_count PUT "^/v2/staged/ok/blobs/uploads/.*digest=${CLEAN/:/(:|%3A)}")" "1 1"
grep -qF "gate: layer $CLEAN of staged/ok streamed upstream as it arrived ($LSIZE bytes" "$RS_LOG" &&
	pass "streamed_logged" || fail "streamed_logged" "no such line in $RS_LOG"
expect_eq "completed_counted" "$(staged completed)" 1

# ------------------------------------------------------------ a layer with a key: deleted upstream
auth staged/bad
expect_eq "bad_config_201" "$(mono staged/bad "$(jq -r .config.digest "$IMG/bad.json")")" 201
expect_eq "bad_clean_layer_201" "$(mono staged/bad "$CLEAN")" 201
expect_eq "bad_keyed_layer_201" "$(mono staged/bad "$KEYED")" 201
keyed_deleted() { grep -qF "gate: staged upload of $KEYED to staged/bad deleted upstream: the policy denies what it holds" "$RS_LOG"; }
check "keyed_session_deleted" wait_for keyed_deleted
check "no_session_left_for_bad" wait_for no_sessions staged/bad
expect_eq "keyed_layer_not_upstream" "$(up_blob staged/bad "$KEYED")" 404
expect_eq "bad_manifest_refused_403" "$(put_manifest staged/bad v1 "$IMG/bad.json")" 403
expect_eq "refused_keyed_layer_never_upstream" "$(up_blob staged/bad "$KEYED")" 404

# ------------------------------------------------------------ a wrong digest, a cancelled upload
auth staged/ok
d0=$(staged deleted)
loc=$(upload_start staged/ok)
loc=$(upload_patch "$loc" "$G/p1")
wrong=sha256:0000000000000000000000000000000000000000000000000000000000000000
expect_eq "wrong_digest_400" "$(upload_finish "$loc" "$wrong")" 400
check "wrong_digest_session_deleted" wait_for deleted_at_least $((d0 + 1))
loc=$(upload_start staged/ok)
loc=$(upload_patch "$loc" "$G/p1")
check "cancelled_upload_streaming" wait_for has_bytes staged/ok
expect_eq "cancel_204" "$(rs_curl -o /dev/null -w '%{http_code}' -X DELETE "${AUTH[@]}" "$RS_URL$loc")" 204
check "cancelled_session_deleted" wait_for deleted_at_least $((d0 + 2))
check "no_session_left_for_ok" wait_for no_sessions staged/ok
expect_eq "nothing_stored_from_them" "$(upstream_count PUT "^/v2/staged/ok/blobs/uploads/.*digest=")" 1
deletes=$(awk '/"DELETE \/v2\/staged\// { n++; if ($9 == 204) ok++ } END { printf "%d %d", n, ok }' "$REG_LOG")
expect_eq "every_delete_answered_204" "$deletes" "4 4"

# ------------------------------------------------------------ the upstream goes away mid-stream
# A stage whose PATCH breaks fails; the layer then goes the other way (the early send after its
# scan, or the manifest PUT) and the push still lands.
auth staged/fault
f0=$(staged failed)
loc=$(upload_start staged/fault)
loc=$(upload_patch "$loc" "$G/p1")
check "fault_stage_streaming" wait_for has_bytes staged/fault
upstream_stop plain
upstream_restart plain # a new process: the stage's connection is gone
loc=$(upload_patch "$loc" "$G/p2")
failed_counted() { [ "$(staged failed)" -gt "$f0" ]; }
check "stage_failed_when_the_upstream_went" wait_for failed_counted
expect_eq "fault_final_put_201" "$(upload_finish "$loc" "$CLEAN")" 201
expect_eq "fault_config_201" "$(mono staged/fault "$(jq -r .config.digest "$IMG/ok.json")")" 201
expect_eq "fault_manifest_201" "$(put_manifest staged/fault v1 "$IMG/ok.json")" 201
expect_eq "fault_layer_upstream_all_the_same" "$(up_blob staged/fault "$CLEAN")" 200
grep -qF "not streamed upstream (sent later)" "$RS_LOG" && pass "fault_logged" || fail "fault_logged" "no such line in $RS_LOG"

# ------------------------------------------------------------ the accepted push
auth staged/ok
expect_eq "ok_config_201" "$(mono staged/ok "$(jq -r .config.digest "$IMG/ok.json")")" 201
expect_eq "ok_manifest_201" "$(put_manifest staged/ok v1 "$IMG/ok.json")" 201
expect_eq "layer_uploaded_once_in_all" "$(upstream_count PUT "^/v2/staged/ok/blobs/uploads/.*digest=${CLEAN/:/(:|%3A)}")" 1
expect_eq "ok_manifest_upstream" "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -I \
	-H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$UP/v2/staged/ok/manifests/v1")" 200

finish
