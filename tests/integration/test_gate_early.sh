#!/usr/bin/env bash
# test_gate_early.sh: in check-only mode the gate sends each layer upstream as soon as its upload
# completed and its own scan found nothing the policy denies (issue 16), so the manifest PUT only
# sends what is left. This is the way layers go with push.stream_uploads off (set here; with it on
# they are streamed as they arrive: test_gate_staged.sh). regslim with a check-only policy (secrets deny) in front of a real
# docker-registry; two gzip layers, one clean, one holding a private key:
#  - both layers, uploaded with monolithic POSTs, are scanned as their bodies arrive;
#  - the clean layer, uploaded to early/bad, is in the upstream's early/bad before any manifest
#    PUT; the key layer is never sent before the verdict (regslim says so in its log, the upstream
#    answers 404); the manifest PUT of the image with both is refused (403), no manifest and no key
#    layer reach the upstream (the clean layer stays there unreferenced: docs/push.md);
#  - the clean image pushed to early/ok: its layer is uploaded to the upstream once, early, and the
#    manifest PUT (201) sends the config and the manifest only.
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start plain none
UP=$REG_PLAIN

G=$REGSLIM_LAB/gate
mkdir -p "$G"
htpasswd -Bbc "$G/htpasswd" alice alicepw 2> /dev/null
cat > "$G/regslim.json" << EOF
{"upstreams": [{"name": "up", "url": "http://$UP", "default": true}],
 "log": {"level": "debug"},
 "auth": {"htpasswd": "$G/htpasswd",
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]},
 "push": {"stream_uploads": false, "policies": [
   {"repositories": ["early/*"], "mode": "check-only",
    "rules": {"secrets": {"action": "deny"}, "non_root": {"action": "warn"}}}]}}
EOF
RS_UPSTREAM="" start_regslim --config "$G/regslim.json"

IMG=$G/img
"$PY" "$(dirname "${BASH_SOURCE[0]}")/gate_image.py" "$IMG" > "$LOGS/mkimage.log" 2>&1 ||
	fail mkimage "$(tail -n 2 "$LOGS/mkimage.log")"
CLEAN=$(jq -r '.layers[0].digest' "$IMG/bad.json")
KEYED=$(jq -r '.layers[1].digest' "$IMG/bad.json")
blob() { echo "$IMG/blobs/sha256/${1#sha256:}"; }

token() { rs_curl -u alice:alicepw "$RS_URL/auth/token?service=regslim&scope=repository:$1:pull,push" | jq -r .token; }
# mono REPO DIGEST: monolithic upload through regslim; prints the status
mono() {
	rs_curl -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $(token "$1")" \
		-H "Content-Type: application/octet-stream" --data-binary "@$(blob "$2")" "$RS_URL/v2/$1/blobs/uploads/?digest=$2"
}
# put_manifest REPO TAG FILE: prints the status
put_manifest() {
	rs_curl -o "$LOGS/put-${1//\//_}.out" -w '%{http_code}' -X PUT -H "Authorization: Bearer $(token "$1")" \
		-H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary "@$3" "$RS_URL/v2/$1/manifests/$2"
}
up_blob() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 -I "http://$UP/v2/$1/blobs/$2"; }
up_manifest() {
	curl -s -o /dev/null -w '%{http_code}' --max-time 10 -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		"http://$UP/v2/$1/manifests/$2"
}
# wait_for COMMAND...: until it succeeds (at most 30 s)
wait_for() {
	local i
	for ((i = 0; i < 150; i++)); do "$@" && return 0; sleep 0.2; done
	return 1
}
clean_upstream() { [ "$(up_blob "$1" "$CLEAN")" = 200 ]; }
held_logged() { grep -qF "gate: layer $KEYED of $1 not sent upstream before its manifest: the policy denies what it holds" "$RS_LOG"; }

# ------------------------------------------------------------ a refused push
expect_eq "bad_config_201" "$(mono early/bad "$(jq -r .config.digest "$IMG/bad.json")")" 201
expect_eq "bad_clean_layer_201" "$(mono early/bad "$CLEAN")" 201
expect_eq "bad_keyed_layer_201" "$(mono early/bad "$KEYED")" 201
expect_eq "monolithic_bodies_scanned_as_they_arrived" "$(metric regslim_gate_layer_scan_streamed_bytes_total)" \
	"$(($(stat -c %s "$(blob "$CLEAN")") + $(stat -c %s "$(blob "$KEYED")")))"
check "clean_layer_upstream_before_the_manifest" wait_for clean_upstream early/bad
check "keyed_layer_held_back" wait_for held_logged early/bad
expect_eq "keyed_layer_not_upstream" "$(up_blob early/bad "$KEYED")" 404
expect_eq "bad_manifest_refused_403" "$(put_manifest early/bad v1 "$IMG/bad.json")" 403
expect_eq "refused_keyed_layer_never_upstream" "$(up_blob early/bad "$KEYED")" 404
expect_eq "refused_no_manifest_upstream" "$(up_manifest early/bad v1)" 404

# ------------------------------------------------------------ an accepted push
upstream_mark
expect_eq "ok_config_201" "$(mono early/ok "$(jq -r .config.digest "$IMG/ok.json")")" 201
expect_eq "ok_layer_201" "$(mono early/ok "$CLEAN")" 201
check "ok_layer_upstream_before_the_manifest" wait_for clean_upstream early/ok
sleep 0.5
before=$(upstream_count PUT "^/v2/early/ok/blobs/uploads/.*digest=")
expect_eq "layer_uploaded_early_once" "$before" 1
expect_eq "ok_manifest_201" "$(put_manifest early/ok v1 "$IMG/ok.json")" 201
expect_eq "manifest_put_sent_only_the_config" "$(upstream_count PUT "^/v2/early/ok/blobs/uploads/.*digest=")" 2
expect_eq "layer_sent_once_in_all" "$(upstream_count PUT "^/v2/early/ok/blobs/uploads/.*digest=${CLEAN/:/(:|%3A)}")" 1
expect_eq "ok_manifest_upstream" "$(up_manifest early/ok v1)" 200
grep -Eq "push early/ok:v1 \\(sha256:[0-9a-f]+\\): gate check [0-9.]+ s, early forwards joined [0-9.]+ s, forward [0-9.]+ s" "$RS_LOG" &&
	pass "manifest_put_timing_logged" || fail "manifest_put_timing_logged" "no timing line in $RS_LOG"

finish
