#!/usr/bin/env bash
# test_fsck_scrub.sh - bit rot (issue 12 item 4). A cached blob corrupted on disk used to be
# served as-is with 200 and its full length.
#   1. background scrub: with cache.scrub_interval_s 2, a blob whose bytes were flipped on disk
#      is found, logged, counted (regslim_scrub_*), removed, and fetched again on the next GET
#      (right bytes); a pushed image's objects are scrubbed too;
#   2. `regslim fsck DATA_DIR` (regslim stopped): a clean directory exits 0 with a summary; then
#      a corrupt cached blob, a stray file, a temp file, a broken tag map, a broken result and a
#      pushed image that lost a layer are each reported (exit 1); --repair removes all but the
#      pushed image's loss (still exit 1, reported as left); a second fsck reports only that;
#   3. regslim starts on the repaired directory and serves the removed blob again from the
#      upstream.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

lab_setup
upstream_start
U=$REG_PLAIN
W=$REGSLIM_LAB/fsck
mkdir -p "$W"
htpasswd -Bbc "$W/htpasswd" alice alicepw 2> /dev/null
cat > "$W/rs.json" << EOF
{"cache": {"scrub_bytes_per_s": "64MiB", "scrub_interval_s": 2},
 "auth": {"htpasswd": "$W/htpasswd", "anonymous_pull": true,
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]}}
EOF
start_regslim --config "$W/rs.json"

manifest_get "$MIRROR" library/tiny latest > "$W/tiny.json" || fail "tiny pull" "regslim answered an error"
mapfile -t blobs < <(manifest_blobs "$W/tiny.json")
for d in "${blobs[@]}"; do blob_digest_ok "$MIRROR" library/tiny "$d" > /dev/null || fail "warm $d" "bad bytes"; done
layer=${blobs[1]}
path=$(store_blob_path "$layer")
expect "the layer is cached" "[ -f '$path' ]" "$path missing"
if client_usable skopeo; then
	check "skopeo pushes an image into regslim" timeout 120 skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
		--dest-creds alice:alicepw "docker://$U/library/tiny:latest" "docker://$MIRROR/mine/tiny:v1"
fi

# flip_byte FILE: change the first byte (same length)
flip_byte() { printf '\xff' | dd of="$1" bs=1 count=1 conv=notrunc status=none; }

# ---------------------------------------------------------------- 1. background scrub
flip_byte "$path"
expect "the flipped layer no longer hashes to its name" "! store_has_blob $layer" "still hashes right"
for ((i = 0; i < 100; i++)); do regslim_log_has "scrub: .* $layer .*does not hash" && break; sleep 0.1; done
expect "the scrub finds and logs the corrupt layer" "regslim_log_has 'scrub: blob $layer .*removed'" \
	"no scrub line for $layer in $RS_LOG"
expect "the corrupt file is removed" "[ ! -e '$path' ]" "$path is still there"
expect_ge "regslim_scrub_corrupt_total counts it" "$(metric regslim_scrub_corrupt_total)" 1
expect_ge "regslim_scrub_passes_total counts full passes" "$(metric regslim_scrub_passes_total)" 1
expect_ge "regslim_scrub_objects_total counts objects of both stores" "$(metric regslim_scrub_objects_total)" 6
check "the next GET fetches the layer again with the right bytes" blob_digest_ok "$MIRROR" library/tiny "$layer"
expect "... and caches it again" "store_has_blob $layer" "not cached again"
stop_regslim

# ---------------------------------------------------------------- 2. fsck
fsck() { "$REGSLIM_BIN" fsck "$@" > "$W/fsck.out" 2> "$W/fsck.err"; echo $?; }
rm -f "$RS_DATA"/tmp/* 2> /dev/null || true
rc=$(fsck "$RS_DATA")
expect_eq "fsck of a clean directory exits 0" "$rc" 0
expect "... and prints a summary with the objects it rehashed" \
	"grep -Eq '^fsck .*: [1-9][0-9]* objects .* 0 corrupt, 0 stray, 0 broken, 0 dangling, 0 temp; 0 repaired, 0 left' '$W/fsck.out'" \
	"$(tail -n 2 "$W/fsck.out")"

flip_byte "$path"
echo junk > "$RS_DATA/blobs/sha256/not-a-digest"
echo partial > "$RS_DATA/tmp/blob-123"
tagfile=$(find "$RS_DATA/tags" -name 'latest.json' | head -n 1)
echo '{"digest":"sha256:nope"}' > "$tagfile"
mkdir -p "$RS_DATA/optimized"
echo '{"source":"x"}' > "$RS_DATA/optimized/junk-result.json"
pushed_layer=
if [ -d "$RS_DATA/push/blobs" ]; then
	pushed_layer=$(find "$RS_DATA/push/blobs" -type f | head -n 1)
	rm -f "$pushed_layer"
fi
rc=$(fsck "$RS_DATA")
expect_eq "fsck with findings exits 1" "$rc" 1
expect "fsck reports the corrupt layer" "grep -q '^corrupt blobs/sha256/.*${layer#sha256:}: does not hash' '$W/fsck.out'" "$(cat "$W/fsck.out")"
expect "fsck reports the stray file" "grep -q '^stray blobs/sha256/not-a-digest' '$W/fsck.out'" "$(cat "$W/fsck.out")"
expect "fsck reports the temp file" "grep -q '^temp tmp/blob-123' '$W/fsck.out'" "$(cat "$W/fsck.out")"
expect "fsck reports the broken tag map" "grep -q '^broken tags/.*latest.json: not a tag map entry' '$W/fsck.out'" "$(cat "$W/fsck.out")"
expect "fsck reports the broken result" "grep -q '^broken optimized/junk-result.json' '$W/fsck.out'" "$(cat "$W/fsck.out")"
if [ -n "$pushed_layer" ]; then
	expect "fsck reports the pushed manifest that lost a blob" \
		"grep -q '^dangling push/manifests/.*: references .* which is not in the push store' '$W/fsck.out'" "$(cat "$W/fsck.out")"
fi
expect "nothing was removed without --repair" "[ -e '$path' ] && [ -e '$RS_DATA/tmp/blob-123' ]" "files were removed"

rc=$(fsck --repair "$RS_DATA")
want=0
[ -z "$pushed_layer" ] || want=1
expect_eq "fsck --repair exits $want (a pushed image's loss cannot be repaired)" "$rc" "$want"
expect "--repair removed the corrupt layer" "[ ! -e '$path' ] && grep -q '^corrupt .*removed' '$W/fsck.out'" "$(cat "$W/fsck.out")"
expect "--repair removed the stray, temp, tag and result files" \
	"[ ! -e '$RS_DATA/blobs/sha256/not-a-digest' ] && [ ! -e '$RS_DATA/tmp/blob-123' ] && [ ! -e '$tagfile' ] && [ ! -e '$RS_DATA/optimized/junk-result.json' ]" \
	"$(cat "$W/fsck.out")"
rc=$(fsck "$RS_DATA")
expect_eq "a second fsck exits $want" "$rc" "$want"
expect_eq "... reporting only what --repair had to leave" "$(grep -vc '^fsck ' "$W/fsck.out")" "$want"
rc=$(fsck /nonexistent-dir)
expect_eq "fsck of a missing directory exits 2" "$rc" 2
expect "... with a message naming it" "grep -q 'nonexistent-dir' '$W/fsck.err'" "$(cat "$W/fsck.err")"

# ---------------------------------------------------------------- 3. after repair
start_regslim --config "$W/rs.json"
check "after repair regslim serves the removed layer again" blob_digest_ok "$MIRROR" library/tiny "$layer"
expect_eq "the repaired tag pulls again" "$(manifest_get "$MIRROR" library/tiny latest | sha256sum | cut -d' ' -f1)" \
	"$(sha256sum < "$W/tiny.json" | cut -d' ' -f1)"
stop_regslim
finish
