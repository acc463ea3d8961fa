#!/usr/bin/env bash
# test_bad_upstream.sh - wrong or truncated upstream bytes never enter regslim's store, the
# client's pull fails (its connection is aborted), and a later good upstream heals the cache.
#
# 1. corrupt: one layer blob of tiny inside the plain registry's storage gets a flipped byte (same
#    size), so the registry serves wrong bytes under the right digest and length. Pulls through
#    regslim (skopeo, podman, a plain curl GET) fail; the blob is not in regslim's store and
#    regslim's tmp/ is empty afterwards. The good bytes are put back: the pulls succeed and the
#    blob is in the store, verified.
# 2. truncated: faultproxy.py between a second regslim and the registry sends the right
#    Content-Length but only half of that blob's body, then closes. Same checks; then the fault is
#    switched off (same regslim instance) and the pulls succeed and the store heals.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

lab_setup
upstream_start
start_regslim
U=$REG_PLAIN

TINY=$(manifest_digest "$U" library/tiny latest)
LAYER=$(manifest_get "$U" library/tiny latest | jq -r '.layers[0].digest')
REGBLOB=$(registry_blob_path "$LAYER")
if [ -z "$TINY" ] || [ ! -s "$REGBLOB" ]; then
	fail setup "cannot find tiny's first layer ($LAYER) in the registry storage ($REGBLOB)"
	finish
fi
cp "$REGBLOB" "$REGSLIM_LAB/good-layer"
# which clients work here is decided now, while the upstream is still good
client_usable skopeo
client_usable podman

# wait_tmp_empty DATA: bounded wait (10 s) for DATA/tmp to hold no file; prints what is left
wait_tmp_empty() {
	local i
	for ((i = 0; i < 50; i++)); do
		[ -z "$(store_tmp_files "$1")" ] && return 0
		sleep 0.2
	done
	store_tmp_files "$1"
	return 1
}

# bad_round WHAT DATA: pulls through MIRROR (regslim with data dir DATA) must fail, nothing cached
bad_round() {
	local what=$1 data=$2 d=$REGSLIM_LAB/pulls/bad rc=0 left
	if client_usable skopeo; then
		rm -rf "$d"
		if skopeo_pull "docker://$MIRROR/library/tiny:latest" "dir:$d" > "$LOGS/skopeo-bad.log" 2>&1; then
			fail "$what: skopeo pull fails" "the pull succeeded"
		else
			pass "$what: skopeo pull fails ($(grep -o 'level=fatal msg=.*' "$LOGS/skopeo-bad.log" | cut -c1-160))"
		fi
		rm -rf "$d"
	else
		skip "$what: skopeo" "$RS_CLIENT_WHY"
	fi
	if client_usable podman; then
		podman_clean
		if podman_pull -q docker.io/library/tiny:latest > "$LOGS/podman-bad.log" 2>&1; then
			fail "$what: podman pull fails" "the pull succeeded"
		else
			pass "$what: podman pull fails"
		fi
	else
		skip "$what: podman" "$RS_CLIENT_WHY"
	fi
	# the blob itself: regslim must abort the connection rather than end it as if complete
	curl -sS --max-time 30 -o "$LOGS/curl-bad.out" "http://$MIRROR/v2/library/tiny/blobs/$LAYER" 2> "$LOGS/curl-bad.err" || rc=$?
	if [ $rc -ne 0 ]; then
		pass "$what: GET of the blob through regslim ends with an error (curl exit $rc: $(head -n 1 "$LOGS/curl-bad.err" | cut -c1-80))"
	else
		fail "$what: GET of the blob through regslim ends with an error" \
			"curl completed normally with $(wc -c < "$LOGS/curl-bad.out") bytes hashing to $(sha256_of "$LOGS/curl-bad.out")"
	fi
	left=$(store_find_blob "$LAYER" "$data")
	if [ -z "$left" ]; then
		pass "$what: the blob is not in regslim's store"
	else
		fail "$what: the blob is not in regslim's store" "found: $left"
	fi
	if left=$(wait_tmp_empty "$data"); then
		pass "$what: no temp file left in regslim's tmp/"
	else
		fail "$what: no temp file left in regslim's tmp/" "$(echo "$left" | head -n 3 | tr '\n' ' ')"
	fi
}

# good_round WHAT DATA: pulls through MIRROR succeed and the blob is stored, verified
good_round() {
	local what=$1 data=$2 d=$REGSLIM_LAB/pulls/good
	if client_usable skopeo; then
		rm -rf "$d"
		if skopeo_pull "docker://$MIRROR/library/tiny:latest" "dir:$d" > "$LOGS/skopeo-good.log" 2>&1; then
			expect_eq "$what: skopeo pull succeeds, layer bytes right" "$(sha256_of "$d/${LAYER#sha256:}")" "$LAYER"
		else
			fail "$what: skopeo pull succeeds" "$(tail -n 2 "$LOGS/skopeo-good.log" | tr '\n' ' ')"
		fi
		rm -rf "$d"
	fi
	if client_usable podman; then
		podman_clean
		if podman_pull -q docker.io/library/tiny:latest > "$LOGS/podman-good.log" 2>&1; then
			pass "$what: podman pull succeeds"
		else
			fail "$what: podman pull succeeds" "$(tail -n 2 "$LOGS/podman-good.log" | tr '\n' ' ')"
		fi
	fi
	if store_has_blob "$LAYER" "$data"; then
		pass "$what: the blob is now in regslim's store with the right digest"
	else
		fail "$what: the blob is now in regslim's store with the right digest" \
			"$(store_find_blob "$LAYER" "$data" | head -n 2 | tr '\n' ' ')"
	fi
	expect_eq "$what: GET of the blob through regslim is complete and right" \
		"$(rs_curl "http://$MIRROR/v2/library/tiny/blobs/$LAYER" | sha256sum | cut -d' ' -f1)" "${LAYER#sha256:}"
}

# ---------------------------------------------------------------- 1. corrupt bytes in the registry
python3 - "$REGBLOB" << 'EOF'
import os, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    n = os.path.getsize(p)
    for off in (n // 3, n // 2, n - 2):
        f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xFF]))
EOF
if [ "$(stat -c %s "$REGBLOB")" = "$(stat -c %s "$REGSLIM_LAB/good-layer")" ] && ! cmp -s "$REGBLOB" "$REGSLIM_LAB/good-layer"; then
	pass "corrupt: registry now serves $LAYER with flipped bytes (same size)"
else
	fail "corrupt: setup" "could not corrupt $REGBLOB"
fi
bad_round corrupt "$RS_DATA"
cp "$REGSLIM_LAB/good-layer" "$REGBLOB"
good_round "corrupt, then healed" "$RS_DATA"

# ---------------------------------------------------------------- 2. truncated upstream answer
FP_PORT=$((LAB_PORT_BASE + 60))
RS2_PORT=$((LAB_PORT_BASE + 51))
RS2_DATA=$REGSLIM_LAB/rs2
touch "$REGSLIM_LAB/fault-on"
if ! lab_spawn aux-faultproxy "$LOGS/faultproxy.err" python3 "$RS_LAB_DIR/faultproxy.py" --listen "127.0.0.1:$FP_PORT" \
	--upstream "$U" --digest "$LAYER" --mode truncate --while-exists "$REGSLIM_LAB/fault-on" \
	--log "$LOGS/faultproxy.log" || ! wait_port "$FP_PORT" 10; then
	fail "truncated: faultproxy start" "$(tail -n 2 "$LOGS/faultproxy.err")"
	finish
fi
if ! regslim_spawn second "$RS2_PORT" "http://127.0.0.1:$FP_PORT" "$RS2_DATA" 2> "$LOGS/rs2-start.err"; then
	fail "truncated: second regslim start" "$(head -n 1 "$LOGS/rs2-start.err")"
	finish
fi
MIRROR=127.0.0.1:$RS2_PORT
bad_round truncated "$RS2_DATA"
expect_ge "truncated: faultproxy really cut the blob's body" "$(grep -c 'FAULT truncate' "$LOGS/faultproxy.log")" 1
rm -f "$REGSLIM_LAB/fault-on"
good_round "truncated, then healed" "$RS2_DATA"

expect_eq "regslim (main) still healthy" "$(http_code "$RS_URL/healthz")" 200
expect_eq "regslim (second) still healthy" "$(http_code "http://127.0.0.1:$RS2_PORT/healthz")" 200

finish
