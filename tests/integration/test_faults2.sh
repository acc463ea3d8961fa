#!/usr/bin/env bash
# test_faults2.sh - the smaller gaps of issue 12's fault-injection run, each reproduced on purpose:
#
# 1. access log (item 9): a cold blob streamed from the upstream is logged with the bytes really
#    sent ("bytes" = the blob's size), not 0.
# 2. ranges of a cold blob (item 3): faultproxy.py flips a byte in the middle of a 4 MiB blob;
#    `Range: bytes=0-99` of it through regslim must not end as a clean, complete 206 (the range's
#    last byte waits until the whole blob verified, which it never does). Healed, the same range
#    is a complete 206 with the right bytes, and the blob is then in the store.
# 3. stalled upstream (item 7): faultproxy.py sends half of a blob and then nothing; with
#    timeout_s 3 regslim must give up the upstream transfer within timeout_s + 2 s of stall
#    (faultproxy measures when regslim closed the connection), and the client is cut.
# 4. read-only data directory (item 8): regslim on a populated data dir mounted read-only starts
#    degraded: a loud error line, /healthz 200 with status "degraded", regslim_data_dir_writable 0;
#    hits are served, misses fail with a 5xx.
# 5. shutdown during an optimization (item 6): with shutdown_grace_s 1 regslim exits within the
#    grace + 2 s, writes no result, and the next start redoes the optimization (details below).
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

lab_setup
upstream_start
start_regslim
U=$REG_PLAIN

# make_blob SEED BYTES FILE: reproducible random bytes
make_blob() {
	"$PY" -c 'import random, sys
random.seed(int(sys.argv[1]))
sys.stdout.buffer.write(random.randbytes(int(sys.argv[2])))' "$1" "$2" > "$3"
}

# push_blob FILE [REPO]: monolithic upload of FILE into the plain registry's REPO (library/tiny);
# prints the digest
push_blob() {
	local f=$1 repo=${2:-library/tiny} d loc
	d=$(sha256_of "$f")
	loc=$(curl -sS --max-time 30 -o /dev/null -D - -X POST "http://$U/v2/$repo/blobs/uploads/" \
		| tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
	[ -n "$loc" ] || return 1
	case $loc in http*) ;; *) loc=http://$U$loc ;; esac
	case $loc in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
	[ "$(curl -sS --max-time 60 -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
		--data-binary "@$f" "$loc")" = 201 ] || return 1
	echo "$d"
}

# access_line LOG PATH: the last access-log line of PATH (compact JSON), waiting up to 5 s for it
access_line() {
	local i line
	for ((i = 0; i < 50; i++)); do
		line=$(grep -F '"msg":"request"' "$1" | jq -c --arg p "$2" 'select(.path == $p)' 2> /dev/null | tail -n 1)
		[ -n "$line" ] && { echo "$line"; return 0; }
		sleep 0.1
	done
	return 1
}

SIZE=$((4 * 1024 * 1024))
make_blob 12 $SIZE "$REGSLIM_LAB/blob-a"
make_blob 13 $SIZE "$REGSLIM_LAB/blob-b"
make_blob 14 $SIZE "$REGSLIM_LAB/blob-c"
A=$(push_blob "$REGSLIM_LAB/blob-a")
B=$(push_blob "$REGSLIM_LAB/blob-b")
C=$(push_blob "$REGSLIM_LAB/blob-c")
if [ -z "$A" ] || [ -z "$B" ] || [ -z "$C" ]; then
	fail setup "could not push the test blobs into $U (got '$A' '$B' '$C')"
	finish
fi
pass "setup: three 4 MiB blobs pushed into the upstream's library/tiny"

# ---------------------------------------------------------------- 1. access log of a cold blob
rc=0
rs_curl -o "$REGSLIM_LAB/got-a" "$RS_URL/v2/library/tiny/blobs/$A" || rc=$?
expect_eq "log: cold GET of a 4 MiB blob is complete and right" "$rc $(sha256_of "$REGSLIM_LAB/got-a")" "0 $A"
line=$(access_line "$RS_LOG" "/v2/library/tiny/blobs/$A")
expect_eq "log: the miss's access-log line says cache miss and bytes = the blob's size" \
	"$(echo "$line" | jq -r '[.cache, .status, .bytes] | join(" ")')" "miss 200 $SIZE"
rs_curl -o /dev/null -r 0-99 "$RS_URL/v2/library/tiny/blobs/$A"
expect_eq "log: a ranged hit logs the range's bytes" \
	"$(access_line "$RS_LOG" "/v2/library/tiny/blobs/$A" | jq -r '[.cache, .status, .bytes] | join(" ")')" "hit 206 100"

# ---------------------------------------------------------------- 2. range of a cold, corrupt blob
FP_PORT=$((LAB_PORT_BASE + 60))
RS2_PORT=$((LAB_PORT_BASE + 51))
RS2_DATA=$REGSLIM_LAB/rs2
touch "$REGSLIM_LAB/corrupt-on"
if ! lab_spawn aux-fp-corrupt "$LOGS/fp-corrupt.err" "$PY" "$RS_LAB_DIR/faultproxy.py" --listen "127.0.0.1:$FP_PORT" \
	--upstream "$U" --digest "$B" --mode corrupt --while-exists "$REGSLIM_LAB/corrupt-on" \
	--log "$LOGS/fp-corrupt.log" || ! wait_port "$FP_PORT" 10; then
	fail "range: faultproxy start" "$(tail -n 2 "$LOGS/fp-corrupt.err")"
	finish
fi
if ! regslim_spawn second "$RS2_PORT" "http://127.0.0.1:$FP_PORT" "$RS2_DATA" 2> "$LOGS/rs2-start.err"; then
	fail "range: second regslim start" "$(head -n 1 "$LOGS/rs2-start.err")"
	finish
fi
RS2=http://127.0.0.1:$RS2_PORT
rc=0
code=$(curl -sS --max-time 30 -r 0-99 -o "$REGSLIM_LAB/range-bad" -w '%{http_code}' "$RS2/v2/library/tiny/blobs/$B" \
	2> "$LOGS/range-bad.err") || rc=$?
got=$(stat -c %s "$REGSLIM_LAB/range-bad" 2> /dev/null || echo 0)
if [ "$rc" -eq 0 ] && [ "$code" = 206 ] && [ "$got" = 100 ]; then
	fail "range: Range 0-99 of a cold blob whose upstream bytes are corrupt does not end as a complete 206" \
		"curl got a clean 206 with all 100 bytes"
else
	pass "range: Range 0-99 of a cold blob whose upstream bytes are corrupt does not end as a complete 206 (status $code, $got of 100 bytes, curl exit $rc)"
fi
expect_ge "range: faultproxy really flipped a byte of the blob" "$(grep -c "FAULT corrupt" "$LOGS/fp-corrupt.log")" 1
expect "range: the corrupt blob is not in the store" "[ -z \"\$(store_find_blob '$B' '$RS2_DATA')\" ]" \
	"found $(store_find_blob "$B" "$RS2_DATA")"
rm -f "$REGSLIM_LAB/corrupt-on"
rc=0
code=$(curl -sS --max-time 30 -r 0-99 -o "$REGSLIM_LAB/range-good" -w '%{http_code}' "$RS2/v2/library/tiny/blobs/$B" \
	2> "$LOGS/range-good.err") || rc=$?
expect_eq "range: healed, Range 0-99 of the cold blob is a complete 206 with the right bytes" \
	"$rc $code $(sha256_of "$REGSLIM_LAB/range-good")" "0 206 sha256:$(head -c 100 "$REGSLIM_LAB/blob-b" | sha256sum | cut -d' ' -f1)"
expect "range: healed, the blob is in the store afterwards, verified" "store_has_blob '$B' '$RS2_DATA'" \
	"not found under $RS2_DATA"

# ---------------------------------------------------------------- 3. stalled upstream
FP3_PORT=$((LAB_PORT_BASE + 61))
RS3_PORT=$((LAB_PORT_BASE + 52))
TIMEOUT_S=3
cat > "$REGSLIM_LAB/rs3.json" << EOF
{"upstreams": [{"name": "docker.io", "url": "http://127.0.0.1:$FP3_PORT", "default": true, "timeout_s": $TIMEOUT_S}]}
EOF
if ! lab_spawn aux-fp-stall "$LOGS/fp-stall.err" "$PY" "$RS_LAB_DIR/faultproxy.py" --listen "127.0.0.1:$FP3_PORT" \
	--upstream "$U" --digest "$C" --mode stall --stall-s 40 --log "$LOGS/fp-stall.log" || ! wait_port "$FP3_PORT" 10; then
	fail "stall: faultproxy start" "$(tail -n 2 "$LOGS/fp-stall.err")"
	finish
fi
if ! regslim_spawn third "$RS3_PORT" "" "$REGSLIM_LAB/rs3" --config "$REGSLIM_LAB/rs3.json" 2> "$LOGS/rs3-start.err"; then
	fail "stall: third regslim start" "$(head -n 1 "$LOGS/rs3-start.err")"
	finish
fi
rc=0
t0=$(date +%s%N)
curl -sS --max-time 60 -o "$REGSLIM_LAB/stalled" "http://127.0.0.1:$RS3_PORT/v2/library/tiny/blobs/$C" \
	2> "$LOGS/stall-curl.err" || rc=$?
client_ms=$((($(date +%s%N) - t0) / 1000000))
expect "stall: the client's GET of the stalled blob ends with an error (curl exit $rc after $client_ms ms)" \
	"[ $rc -ne 0 ]" "curl completed normally"
for ((i = 0; i < 100; i++)); do
	grep -q "FAULT stall" "$LOGS/fp-stall.log" 2> /dev/null && break
	sleep 0.5
done
fp_line=$(grep "FAULT stall" "$LOGS/fp-stall.log" | tail -n 1)
closed=$(echo "$fp_line" | grep -oE 'client closed after [0-9.]+' | awk '{print $4}')
echo "# faultproxy: $fp_line"
if [ -n "$closed" ] && awk -v c="$closed" -v t=$TIMEOUT_S 'BEGIN { exit !(c <= t + 2) }'; then
	pass "stall: regslim gave up the upstream transfer after $closed s of stall (timeout_s $TIMEOUT_S)"
else
	fail "stall: regslim gives up the upstream transfer within timeout_s + 2 s of stall" \
		"faultproxy: ${fp_line:-no FAULT line}"
fi
expect "stall: regslim says why (no progress for timeout_s)" \
	"grep -q 'no progress from .* for $TIMEOUT_S s (timeout_s)' '$LOGS/regslim-third.log'" \
	"$(grep -i "download of $C" "$LOGS/regslim-third.log" | tail -n 1 | cut -c1-200)"
expect "stall: the stalled blob is not in the store" "[ -z \"\$(store_find_blob '$C' '$REGSLIM_LAB/rs3')\" ]" \
	"found $(store_find_blob "$C" "$REGSLIM_LAB/rs3")"

expect_eq "regslim (main) still healthy" "$(http_code "$RS_URL/healthz")" 200

# ---------------------------------------------------------------- 4. read-only data directory
# The main instance's data dir holds blob A (part 1). regslim runs again on it in a private mount
# namespace where the directory is a read-only bind mount (root ignores permission bits, so a
# chmod would prove nothing); the mount ends with the process.
stop_regslim
RO_WRAP=$REGSLIM_LAB/ro-regslim.sh
printf '%s\n' '#!/bin/sh' \
	'# regslim with its data dir ($RO_DIR) read-only, in a private mount namespace' \
	'exec unshare -m --propagation private sh -c '"'"'mount --bind "$RO_DIR" "$RO_DIR" && mount -o remount,ro,bind "$RO_DIR" && exec "$@"'"'"' sh "$RO_REAL" "$@"' \
	> "$RO_WRAP"
chmod +x "$RO_WRAP"
if ! timeout 10 unshare -m --propagation private sh -c 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && ! touch "$0/tmp/probe"' \
	"$RS_DATA" 2> "$LOGS/ro-probe.err"; then
	skip "read-only: data directory" "cannot make a read-only bind mount here: $(head -n 1 "$LOGS/ro-probe.err")"
else
	RO_PORT=$((LAB_PORT_BASE + 53))
	if ! RO_DIR=$RS_DATA RO_REAL=$REGSLIM_BIN REGSLIM_BIN=$RO_WRAP regslim_spawn ro "$RO_PORT" "http://$U" "$RS_DATA" \
		2> "$LOGS/ro-start.err"; then
		fail "read-only: regslim starts on a read-only, populated data directory" "$(head -n 3 "$LOGS/ro-start.err" | tr '\n' ' ')"
	else
		RO=http://127.0.0.1:$RO_PORT
		pass "read-only: regslim starts on a read-only, populated data directory"
		expect "read-only: the start logs a loud DEGRADED error naming the cause" \
			"grep -q '\"level\":\"error\".*DEGRADED: the data directory is not writable (.*Read-only file system' '$LOGS/regslim-ro.log'" \
			"$(grep -i degraded "$LOGS/regslim-ro.log" | head -n 1 | cut -c1-200)"
		hz=$(curl -sS --max-time 10 -w '\n%{http_code}' "$RO/healthz")
		expect_eq "read-only: /healthz answers 200 with status degraded, data_dir read-only" \
			"$(echo "$hz" | tail -n 1) $(echo "$hz" | head -n 1 | jq -r '.status + " " + .data_dir')" "200 degraded read-only"
		expect_eq "read-only: regslim_data_dir_writable is 0" "$(metric regslim_data_dir_writable "" "$RO/metrics")" 0
		rc=0
		rs_curl -o "$REGSLIM_LAB/ro-a" "$RO/v2/library/tiny/blobs/$A" || rc=$?
		expect_eq "read-only: a cached blob is served, complete and right" "$rc $(sha256_of "$REGSLIM_LAB/ro-a")" "0 $A"
		code=$(http_code "$RO/v2/library/tiny/blobs/$C")
		expect "read-only: a cache miss fails with a 5xx (nothing can be cached), got $code" "[ '${code:0:1}' = 5 ]" \
			"status $code"
		expect_eq "read-only: still up and degraded after the miss" "$(rs_curl "$RO/healthz" | jq -r .status)" degraded
		lab_stop regslim-ro 15 || fail "read-only: graceful stop" "exit status $?"
	fi
fi
start_regslim
expect_eq "read-only: writable again, the same data directory is healthy (status ok)" \
	"$(rs_curl "$RS_URL/healthz" | jq -r .status)" ok
expect_eq "read-only: writable again, regslim_data_dir_writable is 1" "$(metric regslim_data_dir_writable)" 1

# ---------------------------------------------------------------- 5. shutdown during an optimization
# library/slow: one gzip layer holding a 1 GiB file of zeros (4.5 MiB of gzip), so that its
# optimization runs for seconds. regslim optimizes (shutdown_grace_s 1) through faultproxy.py,
# which can send that layer slowly (512 KiB/s). SIGTERM comes while the optimization runs:
#   b. while the layer is being fetched, with a client waiting for the optimized manifest
#      (sync_timeout_s 30): this one held the shutdown until the fetch ended (7 s)
#   a. in the optimizer (the layer fetched at full speed; sync_timeout_s 0: the pull got the
#      original)
# Each time regslim must exit 0 within the grace + 2 s, with no optimization result or report
# written; then (c) the next start redoes the optimization and the pull gets the optimized image.
SLOW=$REGSLIM_LAB/slow
mkdir -p "$SLOW"
(cd "$SLOW" && truncate -s 1G zeros && tar cf - zeros | gzip -1 > layer.tgz && rm -f zeros)
DIFF=$(gzip -dc "$SLOW/layer.tgz" | sha256sum | cut -d' ' -f1)
LAYER_D=$(push_blob "$SLOW/layer.tgz" library/slow)
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"config":{}}' "$DIFF" \
	> "$SLOW/config.json"
CONFIG_D=$(push_blob "$SLOW/config.json" library/slow)
printf '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%d,"digest":"%s"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":%d,"digest":"%s"}]}' \
	"$(stat -c %s "$SLOW/config.json")" "$CONFIG_D" "$(stat -c %s "$SLOW/layer.tgz")" "$LAYER_D" > "$SLOW/manifest.json"
SLOW_D=$(sha256_of "$SLOW/manifest.json")
code=$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' -X PUT \
	-H 'Content-Type: application/vnd.docker.distribution.manifest.v2+json' --data-binary "@$SLOW/manifest.json" \
	"http://$U/v2/library/slow/manifests/latest")
expect_eq "shutdown: library/slow (1 GiB of zeros in $(stat -c %s "$SLOW/layer.tgz") bytes of gzip) pushed" "$code" 201

FP5_PORT=$((LAB_PORT_BASE + 62))
OPT_PORT=$((LAB_PORT_BASE + 54))
OPT_DATA=$REGSLIM_LAB/rs-opt
if ! lab_spawn aux-fp-slow "$LOGS/fp-slow.err" "$PY" "$RS_LAB_DIR/faultproxy.py" --listen "127.0.0.1:$FP5_PORT" \
	--upstream "$U" --digest "$LAYER_D" --mode slow --rate 524288 --while-exists "$REGSLIM_LAB/slow-on" \
	--log "$LOGS/fp-slow.log" || ! wait_port "$FP5_PORT" 10; then
	fail "shutdown: faultproxy start" "$(tail -n 2 "$LOGS/fp-slow.err")"
	finish
fi
for s in 0 30; do
	cat > "$REGSLIM_LAB/opt-$s.json" << EOF
{"shutdown_grace_s": 1, "optimize": {"sync_timeout_s": $s},
 "upstreams": [{"name": "docker.io", "url": "http://127.0.0.1:$FP5_PORT", "default": true}]}
EOF
done

# opt_start SYNC_S: start regslim "opt" with optimize.sync_timeout_s SYNC_S; OPT_LOG_MARK: its log
# length before (so that later greps see only this run)
opt_start() {
	OPT_LOG=$LOGS/regslim-opt.log
	OPT_LOG_MARK=0
	[ ! -f "$OPT_LOG" ] || OPT_LOG_MARK=$(wc -l < "$OPT_LOG")
	RS_OPTIMIZE=1 regslim_spawn opt "$OPT_PORT" "" "$OPT_DATA" --config "$REGSLIM_LAB/opt-$1.json" 2> "$LOGS/opt-start.err"
}
# opt_log_has REGEX: this run's log has a line matching REGEX (waits up to 10 s)
opt_log_has() {
	local i
	for ((i = 0; i < 100; i++)); do
		tail -n +"$((OPT_LOG_MARK + 1))" "$OPT_LOG" | grep -Eq -- "$1" && return 0
		sleep 0.1
	done
	return 1
}
# opt_stop NAME: SIGTERM once the optimization runs; checks the exit time and that nothing was written
opt_stop() {
	local name=$1 t0 rc=0 ms results
	t0=$(date +%s%N)
	lab_stop regslim-opt 60 || rc=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	echo "# $name: SIGTERM to exit: $ms ms (shutdown_grace_s 1)"
	expect "shutdown: $name: regslim exits 0 within the grace + 2 s (exit $rc after $ms ms)" \
		"[ $rc -eq 0 ] && [ $ms -le 3000 ]" "exit status $rc after $ms ms"
	results=$(find "$OPT_DATA/optimized" -type f 2> /dev/null | head -n 3 | tr '\n' ' ')
	expect "shutdown: $name: no optimization result or report was written" "[ -z '$results' ]" "found $results"
}

# b. cancelled while the layer is fetched, a client waiting
touch "$REGSLIM_LAB/slow-on"
if opt_start 30; then
	manifest_get "127.0.0.1:$OPT_PORT" library/slow latest -A skopeo/1.9.3 > "$LOGS/opt-b.json" 2> "$LOGS/opt-b.err" &
	client=$!
	opt_log_has '"optimizing library/slow' || fail "shutdown: b: the optimization starts" "no log line"
	sleep 1.5 # the layer is coming at 512 KiB/s: about 9 s
	opt_stop "b (fetching the layer, a client waiting)"
	wait "$client"
	expect_eq "shutdown: b: the waiting client got the original" "$(sha256_of "$LOGS/opt-b.json")" "$SLOW_D"
	expect "shutdown: b: the optimization was cancelled" "opt_log_has 'optimizing library/slow .* failed .*shutting down'" \
		"$(tail -n +"$((OPT_LOG_MARK + 1))" "$OPT_LOG" | grep -v '"msg":"request"' | tail -n 3 | cut -c1-200 | tr '\n' ' ')"
else
	fail "shutdown: b: regslim start" "$(head -n 1 "$LOGS/opt-start.err")"
fi
rm -f "$REGSLIM_LAB/slow-on"

# a. cancelled in the optimizer
if opt_start 0; then
	manifest_get "127.0.0.1:$OPT_PORT" library/slow latest -A skopeo/1.9.3 > "$LOGS/opt-a.json" || true
	expect_eq "shutdown: a: the tag pull got the original (sync_timeout_s 0)" "$(sha256_of "$LOGS/opt-a.json")" "$SLOW_D"
	opt_log_has '"optimizing library/slow' || fail "shutdown: a: the optimization starts" "no log line"
	sleep 1.5 # the layer (full speed) is fetched, the optimizer runs
	opt_stop "a (in the optimizer)"
else
	fail "shutdown: a: regslim start" "$(head -n 1 "$LOGS/opt-start.err")"
fi

# c. the next start redoes it
if opt_start 30; then
	manifest_get "127.0.0.1:$OPT_PORT" library/slow latest -A skopeo/1.9.3 > "$LOGS/opt-c.json" || true
	expect "shutdown: c: the next start optimizes library/slow again" "opt_log_has '\"optimizing library/slow'" "no log line"
	expect_ne "shutdown: c: and the tag pull gets the optimized manifest" "$(sha256_of "$LOGS/opt-c.json")" "$SLOW_D"
	expect_eq "shutdown: c: one result written" "$(find "$OPT_DATA/optimized" -maxdepth 1 -name '*.json' | wc -l)" 1
	lab_stop regslim-opt 15 || fail "shutdown: c: graceful stop" "exit status $?"
else
	fail "shutdown: c: regslim start" "$(head -n 1 "$LOGS/opt-start.err")"
fi

finish
