#!/usr/bin/env bash
# test_store_s3.sh: the s3 store driver (proxy/store/store_s3.c, issue 13) against a real Ceph
# RGW that the lab starts on loopback (tests/lab/s3.sh). First the storage interface's contract
# (tests/tools/storecheck: every store.h operation, verified writers that leave nothing on a
# mismatch or an abort, ranged reads, spooled descriptors, uploads and pushed images, documents,
# layouts, eviction, an unreachable endpoint), then `regslim serve` with "store": {"driver":
# "s3"} in front of the lab's docker-registry: skopeo pulls through the mirror (cold, then warm
# with the upstream stopped: the bytes come from the bucket or from verified local copies of
# its blobs, which are never served once the bucket object is gone), a
# skopeo push with credentials pulled back by digest, a blob upload with a wrong digest that
# never appears in the bucket, RGW stopped (503 naming the endpoint and bucket) and started
# again (served again by the same process, no restart). One line per check, then
# "N passed, N failed".
#
# Env (as ctest sets it): REGSLIM_BIN, STORECHECK_BIN and S3TOOL_BIN (default: beside
# REGSLIM_BIN's build tree), LAB_PORT_BASE (registry BASE+0, RGW BASE+20..39, regslim BASE+50).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-600}
# shellcheck source=lib.sh
. "$HERE/lib.sh"

STORECHECK=${STORECHECK_BIN:-$(dirname "$(dirname "$REGSLIM_BIN")")/tests/storecheck}
lab_setup_s3 s3store
if [ ! -x "$STORECHECK" ]; then
	fail setup "$STORECHECK is not an executable (build the storecheck target)"
	finish
fi
lab_on_exit "timeout 60 bash '$RS_LAB_DIR/s3.sh' stop"

# ---------------------------------------------------------------- the lab's RGW
t0=$(date +%s%N)
if ! timeout 300 bash "$RS_LAB_DIR/s3.sh" start > "$LOGS/s3-start.log" 2>&1; then
	fail s3_lab_start "s3.sh start failed:"
	log_tail "$LOGS/s3-start.log" 15
	finish
fi
pass s3_lab_start
echo "# RGW start-up: $((($(date +%s%N) - t0) / 1000000)) ms"
eval "$(bash "$RS_LAB_DIR/s3.sh" env)"
export S3_ENDPOINT S3_REGION S3_BUCKET S3_ACCESS_KEY S3_SECRET_KEY

# store_config FILE DATA_DIR PREFIX [EXTRA JSON MEMBERS]: a configuration on the lab's bucket
store_config() {
	cat > "$1" << EOF
{"data_dir": "$2", $4
 "store": {"driver": "s3", "s3": {"endpoint": "$S3_ENDPOINT", "region": "$S3_REGION", "bucket": "$S3_BUCKET",
                                  "access_key_env": "S3_ACCESS_KEY", "secret_key_env": "S3_SECRET_KEY",
                                  "prefix": "$3"}}}
EOF
}

# ---------------------------------------------------------------- the contract
# twice: readers of the bucket alone (ranged GETs; store.s3.local_cache_bytes 0), then with the
# local copies of blobs (the default)
for run in contract contract_copies; do
	mkdir -p "$W/$run"
	if [ $run = contract ]; then
		store_config "$W/$run.json" "$W/$run" "$run/" ""
		jq '.store.s3.local_cache_bytes = 0' "$W/$run.json" > "$W/$run.json.new" && mv "$W/$run.json.new" "$W/$run.json"
	else # a short prefix: the unreachable-store message must still fit the endpoint in
		store_config "$W/$run.json" "$W/$run" "copies/" ""
	fi
	t0=$(date +%s%N)
	STORECHECK_DEAD_ENDPOINT=http://127.0.0.1:$((LAB_PORT_BASE + 98)) timeout 300 "$STORECHECK" "$W/$run.json" \
		> "$W/$run.out" 2>&1
	echo "# storecheck ($run): $((($(date +%s%N) - t0) / 1000000)) ms"
	while read -r verdict name rest; do
		case $verdict in
			PASS) pass "${run}_$name" ;;
			FAIL) fail "${run}_${name%:}" "$rest" ;;
		esac
	done < "$W/$run.out"
	grep -q '^# storecheck: [0-9]* passed, 0 failed' "$W/$run.out" && pass ${run}_complete ||
		fail ${run}_complete "$(tail -n 3 "$W/$run.out" | tr '\n' ' ')"
done
# a writer killed mid-write (a multipart part already up): nothing under its key
"$STORECHECK" "$W/contract.json" hang > "$W/hang.out" 2> "$W/hang.err" &
hpid=$!
for ((i = 0; i < 300; i++)); do
	[ -s "$W/hang.out" ] && break
	sleep 0.1
done
read -r hdigest hpath < "$W/hang.out"
kill -9 "$hpid" 2> /dev/null
wait "$hpid" 2> /dev/null
hkey=contract/cache/blobs/sha256/${hdigest#sha256:}
expect killed_writer_was_mid_write "[ -n '${hdigest:-}' ] && [ -n \"\$(timeout 60 '$S3TOOL' uploads '$hkey' 2> /dev/null)\" ]" \
	"no unfinished multipart upload of '$hkey': $(head -c 300 "$W/hang.err" "$W/hang.out")"
expect_eq killed_writer_left_no_object "$(bucket_keys "$hkey")" ""
expect_eq killed_writer_head_404 "$(timeout 60 "$S3TOOL" head "$hkey" > /dev/null 2>&1; echo $?)" 3
lst=$(bucket_keys contract/cache/blobs/)
expect contract_bucket_holds_only_verified_blobs \
	"[ -n \"\$lst\" ] && ! echo \"\$lst\" | grep -vqE '^contract/cache/blobs/sha256/[0-9a-f]{64}\$'" "$lst"

# ---------------------------------------------------------------- regslim serve on s3
upstream_start
CONF=$W/serve
mkdir -p "$CONF"
htpasswd -Bbc "$CONF/htpasswd" alice alicepw 2> /dev/null
RS_DATA=$CONF/data
store_config "$CONF/regslim.json" "$RS_DATA" "e2e/" \
	"\"auth\": {\"htpasswd\": \"$CONF/htpasswd\", \"anonymous_pull\": true,
              \"acl\": [{\"repository\": \"*\", \"users\": [\"alice\"], \"actions\": [\"pull\", \"push\"]}]},"
start_regslim --config "$CONF/regslim.json"
expect serve_logs_the_s3_store "regslim_log_has 'store s3: bucket $S3_BUCKET at $S3_ENDPOINT'" "$(tail -n 5 "$RS_LOG" | tr '\n' ' ')"

SRC=docker://$MIRROR/library/tiny:latest
t0=$(date +%s%N)
check skopeo_pull_cold skopeo_pull "$SRC" "dir:$W/cold"
echo "# cold pull: $((($(date +%s%N) - t0) / 1000000)) ms"
DIGEST=$(timeout 60 skopeo inspect --raw --tls-verify=false "$SRC" | sha256sum | cut -d' ' -f1)
blobs=$(jq -r '.config.digest, .layers[].digest' "$W/cold/manifest.json" | sed 's/^sha256://')
ok=1
for h in $blobs; do
	bucket_keys "e2e/cache/blobs/sha256/$h" | grep -q . || ok=0
done
expect_eq cold_pull_blobs_in_the_bucket "$ok" 1
# the bucket holds the objects; local disk only scratch (tmp/) and verified copies of blobs
# (blob-copies/<hex>, store.s3.local_cache_bytes), each exactly its bucket object's bytes
local_files=$(find "$RS_DATA" -type f ! -path "$RS_DATA/tmp/*" ! -path "$RS_DATA/blob-copies/*" 2> /dev/null | head -n 5)
expect_eq no_object_on_local_disk_but_copies "$local_files" ""
ok=1
for h in $blobs; do
	f=$RS_DATA/blob-copies/$h
	[ -f "$f" ] && [ "$(sha256sum < "$f" | cut -d' ' -f1)" = "$h" ] || ok=0
	[ "$(timeout 60 "$S3TOOL" get "e2e/cache/blobs/sha256/$h" 2> /dev/null | sha256sum | cut -d' ' -f1)" = "$h" ] || ok=0
done
expect_eq local_copies_are_the_bucket_objects "$ok" 1

upstream_stop plain
t0=$(date +%s%N)
check skopeo_pull_warm_upstream_down skopeo_pull "docker://$MIRROR/library/tiny@sha256:$DIGEST" "dir:$W/warm"
echo "# warm pull (upstream stopped): $((($(date +%s%N) - t0) / 1000000)) ms"
expect_eq warm_pull_same_layers "$(cd "$W/warm" && sha256sum $blobs 2> /dev/null | md5sum)" \
	"$(cd "$W/cold" && sha256sum $blobs 2> /dev/null | md5sum)"
# the bucket is the truth: a blob gone from it (deleted or evicted by any replica) is never served
# from the local copy; with the upstream down it is not served at all, then fetched again
gone=$(echo "$blobs" | tail -n 1)
check bucket_object_deleted timeout 60 "$S3TOOL" delete "e2e/cache/blobs/sha256/$gone"
code=$(http_code "$RS_URL/v2/library/tiny/blobs/sha256:$gone")
expect local_copy_not_served_without_the_bucket_object "[ '$code' != 200 ]" "HTTP $code from the local copy"
expect local_copy_dropped "[ ! -e '$RS_DATA/blob-copies/$gone' ]" "$(ls "$RS_DATA/blob-copies" 2> /dev/null | tr '\n' ' ')"
upstream_restart plain
got=$(rs_curl "$RS_URL/v2/library/tiny/blobs/sha256:$gone" | sha256sum | cut -d' ' -f1)
expect_eq deleted_blob_fetched_again "$got" "$gone"

# ---------------------------------------------------------------- an optimized pull on s3
# the optimizer reads the original through a layout exported from the bucket and writes its
# objects and documents back (prefix opt/)
OPT=$W/opt
mkdir -p "$OPT"
store_config "$OPT/regslim.json" "$OPT/data" "opt/" ""
OPTPORT=$((LAB_PORT_BASE + 52))
if RS_OPTIMIZE=1 regslim_spawn opt "$OPTPORT" "http://$REG_PLAIN" "$OPT/data" --config "$OPT/regslim.json" \
	2> "$OPT/spawn.err"; then
	up_tiny=$(manifest_digest "$REG_PLAIN" library/tiny latest)
	manifest_get "127.0.0.1:$OPTPORT" library/tiny latest -A skopeo/1.9.3 > "$OPT/opt.json"
	expect_ne optimized_manifest_differs_from_upstream "sha256:$(sha256sum < "$OPT/opt.json" | cut -d' ' -f1)" \
		"$up_tiny"
	expect_eq optimized_manifest_has_zstd_layers "$(jq -r '[.layers[].mediaType] | unique | join(",")' "$OPT/opt.json")" \
		application/vnd.oci.image.layer.v1.tar+zstd
	check skopeo_pull_optimized skopeo_pull "docker://127.0.0.1:$OPTPORT/library/tiny:latest" "dir:$OPT/pulled"
	expect optimized_result_in_the_bucket "bucket_keys opt/docs/optimized/ | grep -q '\\.json\$'" \
		"$(bucket_keys opt/docs/ | head -n 5 | tr '\n' ' ')"
	lab_stop regslim-opt 15
else
	fail optimized_regslim_start "$(head -n 3 "$OPT/spawn.err" | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- push on s3
TINY_OCI=$REGSLIM_LAB/fixtures/oci/tiny
TINY_MANIFEST=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "latest") | .digest' "$TINY_OCI/index.json")
check skopeo_push timeout 120 skopeo copy --dest-tls-verify=false --dest-creds alice:alicepw \
	"oci:$TINY_OCI:latest" "docker://$MIRROR/team/tiny:v1"
expect_eq pushed_tag_in_the_bucket "$(bucket_keys e2e/push/tags/team/tiny/_tags/)" "e2e/push/tags/team/tiny/_tags/v1"
rm -rf "$W/pushed"
check skopeo_pull_back_by_digest timeout 120 skopeo copy --src-tls-verify=false \
	"docker://$MIRROR/team/tiny@$TINY_MANIFEST" "dir:$W/pushed"
expect_eq pulled_back_manifest_digest "sha256:$(sha256sum < "$W/pushed/manifest.json" | cut -d' ' -f1)" "$TINY_MANIFEST"

# a monolithic upload whose digest does not match: refused, nothing in the bucket
head -c 200000 /dev/urandom > "$W/blob"
REAL=$(sha256sum < "$W/blob" | cut -d' ' -f1)
WRONG=$(printf 'other' | sha256sum | cut -d' ' -f1)
code=$(http_code "$RS_URL/v2/team/tiny/blobs/uploads/?digest=sha256:$WRONG" -u alice:alicepw -X POST \
	-H 'Content-Type: application/octet-stream' --data-binary "@$W/blob")
expect_eq digest_mismatch_refused "$code" 400
lst=$(bucket_keys e2e/push/blobs/)
expect digest_mismatch_not_in_the_bucket "! echo \"\$lst\" | grep -qE '$WRONG|$REAL'" "$lst"
expect_eq digest_mismatch_no_unfinished_upload "$(timeout 60 "$S3TOOL" uploads "e2e/push/blobs/sha256/$WRONG" 2>&1)" ""

# ---------------------------------------------------------------- the object store goes away
check rgw_stop timeout 60 bash "$RS_LAB_DIR/s3.sh" rgw-stop
CFG_DIGEST=$(jq -r .config.digest "$W/cold/manifest.json")
t0=$(date +%s%N)
rs_curl -s -o "$W/down.body" -w '%{http_code}' "$RS_URL/v2/library/tiny/blobs/$CFG_DIGEST" > "$W/down.code"
echo "# blob GET with RGW down: $((($(date +%s%N) - t0) / 1000000)) ms"
expect_eq rgw_down_blob_503 "$(cat "$W/down.code")" 503
expect rgw_down_message_names_endpoint_and_bucket \
	"grep -q '127.0.0.1:$((LAB_PORT_BASE + 20))' '$W/down.body' && grep -q '$S3_BUCKET' '$W/down.body'" \
	"$(head -c 400 "$W/down.body")"
code=$(http_code "$RS_URL/v2/library/tiny/manifests/latest" "${RS_ACCEPT_ALL[@]}")
expect_eq rgw_down_mirror_manifest_503 "$code" 503
code=$(http_code "$RS_URL/v2/team/tiny/manifests/v1" -u alice:alicepw "${RS_ACCEPT_ALL[@]}")
expect_eq rgw_down_pushed_manifest_503 "$code" 503
check rgw_start timeout 150 bash "$RS_LAB_DIR/s3.sh" rgw-start
expect_eq recovered_blob_200 "$(http_code "$RS_URL/v2/library/tiny/blobs/$CFG_DIGEST")" 200
rm -rf "$W/again"
check skopeo_pull_after_recovery skopeo_pull "docker://$MIRROR/library/tiny@sha256:$DIGEST" "dir:$W/again"
check skopeo_pull_pushed_after_recovery timeout 120 skopeo copy --src-tls-verify=false \
	"docker://$MIRROR/team/tiny:v1" "dir:$W/again-pushed"
expect same_process_throughout "lab_alive regslim-main" "regslim exited"

# ---------------------------------------------------------------- started while the store is unreachable
DEAD=$W/dead
mkdir -p "$DEAD"
S3_ENDPOINT=http://127.0.0.1:$((LAB_PORT_BASE + 98)) store_config "$DEAD/regslim.json" "$DEAD/data" "e2e/" ""
if regslim_spawn dead $((LAB_PORT_BASE + 51)) "http://$REG_PLAIN" "$DEAD/data" --config "$DEAD/regslim.json" \
	2> "$DEAD/spawn.err"; then
	pass starts_with_the_store_unreachable
	body=$(rs_curl "http://127.0.0.1:$((LAB_PORT_BASE + 51))/healthz")
	expect healthz_degraded_names_the_endpoint \
		"echo '$body' | jq -e '.status == \"degraded\"' && echo '$body' | grep -q '127.0.0.1:$((LAB_PORT_BASE + 98))'" "$body"
	expect_eq unreachable_store_blob_503 \
		"$(http_code "http://127.0.0.1:$((LAB_PORT_BASE + 51))/v2/library/tiny/blobs/$CFG_DIGEST")" 503
	lab_stop regslim-dead 15
else
	fail starts_with_the_store_unreachable "$(head -n 3 "$DEAD/spawn.err" | tr '\n' ' ')"
fi
finish
