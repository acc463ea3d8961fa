#!/usr/bin/env bash
# test_evict_optimized.sh - eviction never breaks an optimized pull (issue 12 item 1). The blobs
# of an optimized image exist only in regslim's store; an eviction pass that ran between a
# client's manifest GET and its blob GETs used to remove them, and the client got 404 (the
# upstream never had them). The race is forced, not hoped for: the cache limit is 1 byte (every
# unpinned object goes at each pass) and the pass is run at the worst moment with SIGUSR1.
#   1. pins: a tag pull answers the optimized manifest; an eviction pass runs; every blob of that
#      manifest is still served (with the right bytes) while the upstream's unpinned blobs went;
#      skopeo then pulls the same image by digest;
#   2. regeneration: with pins off (cache.optimized_pin_s 0), the same sequence evicts the
#      optimized image's blobs and manifest, and its result with them (an optimized image is
#      evicted whole); asking for them by digest makes them again (same bytes), logged and
#      marked "regenerated"; an optimized index's child manifest too;
#   3. isolation: a repository that was never given the optimized image gets 404 for its blobs
#      (no regeneration on its behalf).
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

export RS_OPTIMIZE=1
lab_setup
upstream_start
U=$REG_PLAIN
UA=skopeo/1.9.3
W=$REGSLIM_LAB/evict
mkdir -p "$W"
conf() { printf '{"cache": {"max_bytes": 1, "optimized_pin_s": %s}, "log": {"level": "debug"}}\n' "$1" > "$W/rs.json"; }

# evict_now: SIGUSR1 and wait for the pass's log line (bounded)
evict_now() {
	local before i
	before=$(grep -c 'maintenance pass now' "$RS_LOG" || true)
	kill -USR1 "$(lab_pid regslim-main)"
	for ((i = 0; i < 100; i++)); do
		[ "$(grep -c 'maintenance pass now' "$RS_LOG" || true)" -gt "$before" ] && { sleep 0.3; return 0; }
		sleep 0.1
	done
	return 1
}
# get_blob REPO DIGEST OUT: the HTTP status of a blob GET (body in OUT)
get_blob() { curl -s --max-time 60 -A "$UA" -o "$3" -w '%{http_code}' "$RS_URL/v2/$1/blobs/$2" || true; }
# blobs_all_ok REPO MANIFEST_FILE: every blob of the manifest is served with bytes that hash to it
blobs_all_ok() {
	local d code bad=0
	while read -r d; do
		code=$(get_blob "$1" "$d" "$W/blob")
		if [ "$code" != 200 ] || [ "sha256:$(sha256sum < "$W/blob" | cut -d' ' -f1)" != "$d" ]; then
			echo "blob $d: HTTP $code"
			bad=1
		fi
	done < <(jq -r '.config.digest, .layers[].digest' "$2")
	return $bad
}

# ---------------------------------------------------------------- 1. pins
conf 900
start_regslim --config "$W/rs.json"
manifest_get "$MIRROR" library/tiny latest -A "$UA" > "$W/opt.json" || fail "optimized tag pull" "regslim answered an error"
opt=$(sha256_of "$W/opt.json")
up=$(manifest_digest "$U" library/tiny latest)
expect_ne "the tag pull answers an optimized manifest" "$opt" "$up"
up_layer=$(manifest_get "$U" library/tiny latest | jq -r '.layers[0].digest')
check "an eviction pass runs on SIGUSR1" evict_now
expect "the pass removed the upstream's unpinned layer" "! store_has_blob $up_layer" "$up_layer is still in the store"
check "pinned: every blob of the optimized manifest is served after the pass" blobs_all_ok library/tiny "$W/opt.json"
expect_eq "pinned: the optimized manifest by digest" \
	"$(manifest_get "$MIRROR" library/tiny "$opt" -A "$UA" | sha256sum | cut -d' ' -f1)" "${opt#sha256:}"
if client_usable skopeo; then
	check "skopeo pulls the optimized image by digest after the pass" \
		timeout 120 skopeo copy -q --src-tls-verify=false "docker://$MIRROR/library/tiny@$opt" "dir:$W/skopeo-1"
fi
stop_regslim

# ---------------------------------------------------------------- 2. regeneration
conf 0
start_regslim --config "$W/rs.json"
manifest_get "$MIRROR" library/tiny latest -A "$UA" > "$W/opt2.json" || fail "tag pull with pins off" "regslim answered an error"
expect_eq "the same optimized manifest (cached result)" "$(sha256_of "$W/opt2.json")" "$opt"
opt_layer=$(jq -r '.layers[0].digest' "$W/opt2.json")
check "eviction pass with pins off" evict_now
expect "the pass removed the optimized layer" "! store_has_blob $opt_layer" "$opt_layer is still in the store"
expect "the evicted image took its result along (logged)" "regslim_log_has 'eviction took sha256:[0-9a-f]{64} of the optimized image ${opt}'" \
	"no 'eviction took ... of the optimized image' line"
expect_eq "no optimization result is left in the store" "$(find "$RS_DATA/optimized" -maxdepth 1 -name '*.json' | wc -l)" 0
check "regenerated: every blob of the optimized manifest is served again" blobs_all_ok library/tiny "$W/opt2.json"
expect "the log says what was made again" "regslim_log_has 'made sha256:[0-9a-f]{64} again'" "no 'made ... again' line"
expect "the access log marks it regenerated" "regslim_log_has '\"cache\":\"regenerated\"'" "no regenerated access-log line"
check "eviction pass again" evict_now
expect_eq "regenerated: the optimized manifest by digest (same bytes)" \
	"$(manifest_get "$MIRROR" library/tiny "$opt" -A "$UA" | sha256sum | cut -d' ' -f1)" "${opt#sha256:}"
manifest_get "$MIRROR" library/multi latest -A "$UA" > "$W/multi.json" || fail "optimized index pull" "regslim answered an error"
arm=$(index_platform_digest "$W/multi.json" linux/arm64)
check "eviction pass after the index pull" evict_now
manifest_get "$MIRROR" library/multi "$arm" -A "$UA" > "$W/arm.json" || true
expect_eq "regenerated: the optimized index's arm64 manifest by digest" "$(sha256_of "$W/arm.json")" "$arm"
check "regenerated: the arm64 image's blobs" blobs_all_ok library/multi "$W/arm.json"

# ---------------------------------------------------------------- 3. isolation
check "eviction pass before the isolation check" evict_now
code=$(get_blob library/other "$opt_layer" "$W/other")
expect_eq "another repository gets 404 for the optimized layer" "$code" 404
expect_eq "... with BLOB_UNKNOWN" "$(jq -r '.errors[0].code' "$W/other" 2> /dev/null)" BLOB_UNKNOWN
expect "... and nothing was made again for it" "! store_has_blob $opt_layer" "$opt_layer was regenerated for library/other"
stop_regslim
finish
