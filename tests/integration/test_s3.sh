#!/usr/bin/env bash
# test_s3.sh: the store's S3 client (proxy/store/s3.c, s3_writer.c, s3_sign.c) against a real
# Ceph RGW that the lab starts on loopback (tests/lab/s3.sh), driven by the test-only
# tests/tools/s3tool. Every operation (PUT from a file and from memory, GET whole and ranged,
# HEAD, DELETE, ListObjectsV2 with continuation), the verified writer (a small object through the
# spool, a >5 MiB one through multipart, a wrong digest, a wrong size, an abandoned writer and a
# killed one: none leaves an object), errors that name the S3 code (NoSuchKey, NoSuchBucket,
# SignatureDoesNotMatch, InvalidRange), retries after 503s and bounded ones against a dead endpoint
# or a server that keeps answering 503 (tests/lab/faultproxy.py) or never answers, a cut GET
# body, virtual-host URLs, 8 threads on one client, and a GET whose memory does not grow with
# the object. One line per check, then
# "N passed, N failed".
#
# Env (set by ctest): REGSLIM_BIN, S3TOOL_BIN (default: tests/s3tool in REGSLIM_BIN's build
# tree), LAB_PORT_BASE (RGW on BASE+20, its monitor BASE+21, the OSD BASE+22..39).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-600}
# shellcheck source=lib.sh
. "$HERE/lib.sh"

lab_setup_s3 s3t
lab_on_exit "timeout 60 bash '$RS_LAB_DIR/s3.sh' stop"

# s3t ARGS: s3tool, bounded; stdout in $W/out, stderr in $W/err; prints nothing, returns its status
s3t() { timeout 120 "$S3TOOL" "$@" > "$W/out" 2> "$W/err"; }
# st ARGS: s3tool's exit status
st() {
	local rc=0
	s3t "$@" < /dev/null || rc=$?
	echo $rc
}
err1() { tr '\n' ' ' < "$W/err" | cut -c1-300; }
sha() { echo "sha256:$(sha256sum < "$1" | cut -d' ' -f1)"; }

# ---------------------------------------------------------------- the lab's RGW
t0=$(date +%s%N)
if ! timeout 300 bash "$RS_LAB_DIR/s3.sh" start > "$LOGS/s3-start.log" 2>&1; then
	fail s3_lab_start "s3.sh start failed:"
	log_tail "$LOGS/s3-start.log" 15
	finish
fi
pass s3_lab_start
echo "# RGW start-up: $(( ($(date +%s%N) - t0) / 1000000 )) ms ($(grep -o 'ready.*' "$LOGS/s3-start.log" | head -n 1))"
eval "$(bash "$RS_LAB_DIR/s3.sh" env)"
export S3_ENDPOINT S3_REGION S3_BUCKET S3_ACCESS_KEY S3_SECRET_KEY
pids=$(cat "$REGSLIM_LAB"/run/s3-{mon,osd,rgw}.pid | tr '\n' '|')
lst=$(ss -ltnpH 2> /dev/null | grep -E "pid=(${pids%|})," || true)
expect s3_lab_loopback_only "[ -n \"\$lst\" ] && ! echo \"\$lst\" | awk '{print \$4}' | grep -qv '^127\\.0\\.0\\.1:'" \
	"listening: $(echo "$lst" | awk '{print $4}' | tr '\n' ' ')"
expect s3_lab_status "timeout 30 bash '$RS_LAB_DIR/s3.sh' status" "$(timeout 30 bash "$RS_LAB_DIR/s3.sh" status 2>&1 | tr '\n' ' ')"
out=$(timeout 60 bash "$RS_LAB_DIR/s3.sh" start 2>&1)
expect s3_lab_start_again_is_a_no_op "[ \"\$(cat '$REGSLIM_LAB'/run/s3-{mon,osd,rgw}.pid | tr '\n' '|')\" = '$pids' ] && echo '$out' | grep -q 'already running'" "$out"

# ---------------------------------------------------------------- objects
head -c 3000000 /dev/urandom > "$W/obj"
KEY='dir/a key+with=odd&chars~.bin'
rc=$(st put "$KEY" "$W/obj")
expect put_streamed_from_file "[ $rc = 0 ]" "exit $rc: $(err1)"
s3t get "$KEY" < /dev/null && cp "$W/out" "$W/back"
expect get_returns_the_bytes "cmp -s '$W/back' '$W/obj'" "GET gave $(stat -c %s "$W/back" 2> /dev/null) bytes: $(err1)"
s3t head "$KEY" < /dev/null
expect head_size_and_etag "[ \"\$(cat '$W/out')\" = '3000000 \"$(md5sum < "$W/obj" | cut -d' ' -f1)\"' ]" \
	"HEAD printed '$(cat "$W/out")': $(err1)"
s3t get "$KEY" 1000 1999 < /dev/null
expect ranged_get "cmp -s '$W/out' <(tail -c +1001 '$W/obj' | head -c 1000)" "$(stat -c %s "$W/out") bytes: $(err1)"
s3t get "$KEY" 2999000 < /dev/null
expect ranged_get_to_the_end "cmp -s '$W/out' <(tail -c 1000 '$W/obj')" "$(stat -c %s "$W/out") bytes: $(err1)"
rc=$(st get "$KEY" 5000000 5000010)
expect range_unsatisfiable_names_InvalidRange "[ $rc = 5 ] && grep -q 'HTTP 416 InvalidRange' '$W/err'" "exit $rc: $(err1)"
head -c 70000 /dev/urandom > "$W/small"
rc=$(st putmem mem/small "$W/small")
s3t get mem/small < /dev/null
expect put_from_memory_payload_signed "[ $rc = 0 ] && cmp -s '$W/out' '$W/small'" "exit $rc: $(err1)"
rc=$(st delete mem/small)
rc2=$(st head mem/small)
expect delete_then_head_is_not_found "[ $rc = 0 ] && [ $rc2 = 3 ] && grep -q 'HTTP 404 NoSuchKey' '$W/err'" "delete $rc, head $rc2: $(err1)"

# ---------------------------------------------------------------- listing
for i in $(seq -w 1 25); do echo "$i" > "$W/l$i"; done
ok=0
for i in $(seq -w 1 25); do [ "$(st putmem "list/k$i" "$W/l$i")" = 0 ] && ok=$((ok + 1)); done
s3t list list/ 10 < /dev/null
expect list_pages_with_continuation "[ \"\$(awk '{print \$1}' '$W/out' | tr '\n' ' ')\" = '$(for i in $(seq -w 1 25); do printf 'list/k%s ' "$i"; done)' ] && grep -q '# pages 3 keys 25' '$W/err'" \
	"$ok puts; listed $(wc -l < "$W/out") keys: $(err1)"
expect list_sizes "[ \"\$(awk '{print \$2}' '$W/out' | sort -u)\" = 3 ]" "sizes $(awk '{print $2}' "$W/out" | sort -u | tr '\n' ' ')"
s3t list dir/ < /dev/null
expect list_prefix_only "[ \"\$(cat '$W/out')\" = '$KEY 3000000' ]" "listed '$(head -c 200 "$W/out")': $(err1)"

# ---------------------------------------------------------------- errors
rc=$(st get no/such/key)
expect missing_key_names_NoSuchKey "[ $rc = 3 ] && grep -q 'GET $S3_BUCKET/no/such/key: HTTP 404 NoSuchKey' '$W/err'" "exit $rc: $(err1)"
rc=$(S3_BUCKET=no-such-bucket st get x)
expect missing_bucket_names_NoSuchBucket "[ $rc = 1 ] && grep -q 'GET no-such-bucket/x: HTTP 404 NoSuchBucket' '$W/err'" "exit $rc: $(err1)"
rc=$(S3_SECRET_KEY=not-the-secret st get "$KEY")
expect wrong_secret_names_SignatureDoesNotMatch "[ $rc = 1 ] && grep -q 'HTTP 403 SignatureDoesNotMatch' '$W/err' && ! grep -q 'not-the-secret' '$W/err'" "exit $rc: $(err1)"
printf '%s\n' "$S3_SECRET_KEY" > "$W/secret"
rc=$(S3_SECRET_KEY='' S3_SECRET_KEY_FILE=$W/secret st head "$KEY")
expect secret_from_file "[ $rc = 0 ]" "exit $rc: $(err1)"
t1=$(date +%s%N)
rc=$(S3_ENDPOINT=http://127.0.0.1:$((LAB_PORT_BASE + 99)) st --attempts 3 head "$KEY")
ms=$((($(date +%s%N) - t1) / 1000000))
expect dead_endpoint_bounded_retries "[ $rc = 1 ] && grep -q 'endpoint http://127.0.0.1:$((LAB_PORT_BASE + 99)), 3 attempts' '$W/err' && [ $ms -ge 500 ] && [ $ms -lt 10000 ]" \
	"exit $rc after $ms ms: $(err1)"

# ---------------------------------------------------------------- the verified writer
P5=$((5 * 1024 * 1024))
rc=0
s3t write w/small "$(sha "$W/small")" 70000 < "$W/small" || rc=$?
s3t head w/small < /dev/null
expect writer_small_object_one_put "[ $rc = 0 ] && [ \"\$(cat '$W/out')\" = '70000 \"$(md5sum < "$W/small" | cut -d' ' -f1)\"' ]" \
	"write exit $rc, HEAD '$(cat "$W/out")': $(err1)"
head -c 13000000 /dev/urandom > "$W/big"
rc=0
s3t --part-size $P5 write w/big "$(sha "$W/big")" 13000000 < "$W/big" || rc=$?
s3t head w/big < /dev/null
etag=$(cut -d' ' -f2 < "$W/out")
s3t get w/big < /dev/null
expect writer_multipart_over_5MiB "[ $rc = 0 ] && [[ '$etag' == *-3\\\" ]] && cmp -s '$W/out' '$W/big'" \
	"write exit $rc, ETag '$etag', GET $(stat -c %s "$W/out") bytes: $(err1)"
rc=0
s3t --part-size $P5 write w/bad "sha256:$(printf '0%.0s' $(seq 64))" < "$W/big" || rc=$?
cp "$W/err" "$W/err.write"
rc2=$(st head w/bad)
s3t list w/ < /dev/null
lst=$(cat "$W/out")
s3t uploads w/bad < /dev/null
expect writer_digest_mismatch_leaves_nothing "[ $rc = 4 ] && grep -q 'expected sha256:0000' '$W/err.write' && [ $rc2 = 3 ] && ! echo '$lst' | grep -q w/bad && [ ! -s '$W/out' ]" \
	"write exit $rc ($(tr '\n' ' ' < "$W/err.write")), head $rc2, list '$lst', unfinished uploads '$(cat "$W/out")'"
rc=0
s3t write w/short "$(sha "$W/small")" 80000 < "$W/small" || rc=$?
cp "$W/err" "$W/err.write"
rc2=$(st head w/short)
expect writer_size_mismatch_leaves_nothing "[ $rc = 1 ] && grep -q 'expected 80000 bytes, got 70000' '$W/err.write' && [ $rc2 = 3 ]" \
	"write exit $rc ($(tr '\n' ' ' < "$W/err.write")), head $rc2"
rc=0
s3t --part-size $P5 abandon w/abandoned "$(sha "$W/big")" < "$W/big" || rc=$?
rc2=$(st head w/abandoned)
s3t uploads w/abandoned < /dev/null
expect writer_abandoned_aborts_its_upload "[ $rc = 0 ] && [ $rc2 = 3 ] && [ ! -s '$W/out' ]" \
	"abandon exit $rc, head $rc2, unfinished uploads '$(cat "$W/out")'"

# killed mid-way: 8 MiB (one 5 MiB part uploaded, the rest spooled), then SIGKILL while stdin stays open
mkfifo "$W/fifo"
# not under timeout: $! must be s3tool itself; it is killed below whatever happens
"$S3TOOL" --part-size $P5 write w/killed "$(sha "$W/big")" < "$W/fifo" > /dev/null 2> "$W/err.killed" &
writer=$!
exec 7> "$W/fifo"
head -c 8000000 "$W/big" >&7
seen=
for ((i = 0; i < 100; i++)); do
	s3t uploads w/killed < /dev/null
	[ -s "$W/out" ] && { seen=$(cat "$W/out"); break; }
	sleep 0.1
done
kill -KILL "$writer" 2> /dev/null
wait "$writer" 2> /dev/null
exec 7>&-
rc2=$(st head w/killed)
s3t list w/ < /dev/null
lst=$(cat "$W/out")
expect writer_killed_leaves_no_object "[ -n '$seen' ] && [ $rc2 = 3 ] && ! echo '$lst' | grep -q w/killed" \
	"upload seen '$seen', head $rc2, list '$lst'"
id=$(echo "$seen" | head -n 1)
echo "# killed writer: unfinished upload $id"
expect killed_upload_is_only_an_unfinished_upload "[ \"\$(st uploads w/killed; cat '$W/out')\" = '0
$id' ]" "uploads: $(cat "$W/out")"

# ---------------------------------------------------------------- retries (faultproxy.py in front of RGW)
# fp NAME PORT ARGS: faultproxy.py on 127.0.0.1:PORT before RGW, its log in $LOGS/NAME.log
fp() {
	local name=$1 port=$2
	shift 2
	lab_spawn "aux-$name" "$LOGS/$name.err" "$PY" "$RS_LAB_DIR/faultproxy.py" --listen "127.0.0.1:$port" \
		--upstream "127.0.0.1:$((LAB_PORT_BASE + 20))" --log "$LOGS/$name.log" "$@" && wait_port "$port" 10
}
FP1=$((LAB_PORT_BASE + 60)) FP2=$((LAB_PORT_BASE + 61)) FP3=$((LAB_PORT_BASE + 62))
fp fp-503x2 $FP1 --mode unavailable --times 2 --path-suffix /w/small
fp fp-503 $FP2 --mode unavailable --path-suffix /w/small
fp fp-cut $FP3 --mode truncate --path-suffix /w/big
rc=$(S3_ENDPOINT=http://127.0.0.1:$FP1 st get w/small)
expect retries_after_503 "[ $rc = 0 ] && cmp -s '$W/out' '$W/small' && [ \"\$(grep -c 'FAULT unavailable' '$LOGS/fp-503x2.log')\" = 2 ] && [ \"\$(grep -c ' 200 70000' '$LOGS/fp-503x2.log')\" = 1 ]" \
	"exit $rc: $(err1); proxy log: $(tr '\n' ' ' < "$LOGS/fp-503x2.log" | cut -c1-300)"
rc=$(S3_ENDPOINT=http://127.0.0.1:$FP2 st --attempts 3 get w/small)
expect gives_up_after_max_attempts "[ $rc = 1 ] && grep -q 'GET $S3_BUCKET/w/small: HTTP 503' '$W/err' && [ \"\$(grep -c 'FAULT unavailable' '$LOGS/fp-503.log')\" = 3 ]" \
	"exit $rc: $(err1); $(grep -c 'FAULT' "$LOGS/fp-503.log") requests"
rc=$(S3_ENDPOINT=http://127.0.0.1:$FP3 st get w/big)
expect truncated_get_fails_without_retry "[ $rc = 1 ] && [ \"\$(wc -l < '$LOGS/fp-cut.log')\" = 1 ] && grep -q 'FAULT truncate' '$LOGS/fp-cut.log' && [ \"\$(stat -c %s '$W/out')\" -lt 13000000 ]" \
	"exit $rc: $(err1); proxy log: $(tr '\n' ' ' < "$LOGS/fp-cut.log" | cut -c1-300)"
lab_stop aux-fp-503x2 > /dev/null 2>&1
lab_stop aux-fp-503 > /dev/null 2>&1
lab_stop aux-fp-cut > /dev/null 2>&1

# a server that accepts and never answers: each attempt stalls for --timeout, then the client gives up
FP4=$((LAB_PORT_BASE + 63))
lab_spawn aux-mute "$LOGS/mute.err" "$PY" -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); c = []
while True: c.append(s.accept()[0])' "$FP4" && wait_port "$FP4" 10
t1=$(date +%s%N)
rc=$(S3_ENDPOINT=http://127.0.0.1:$FP4 st --timeout 1 --attempts 2 get w/small)
ms=$((($(date +%s%N) - t1) / 1000000))
expect stalled_server_times_out_bounded "[ $rc = 1 ] && grep -q '2 attempts): Timeout was reached' '$W/err' && [ $ms -ge 2000 ] && [ $ms -lt 15000 ]" \
	"exit $rc after $ms ms: $(err1)"
lab_stop aux-mute > /dev/null 2>&1

# ---------------------------------------------------------------- URLs and memory
rc=$(S3_ENDPOINT=http://localhost:$((LAB_PORT_BASE + 20)) st --vhost get w/small)
expect virtual_host_url "[ $rc = 0 ] && cmp -s '$W/out' '$W/small'" "exit $rc: $(err1)"
s3t pget w/big 8 < /dev/null
expect threads_share_one_client "[ \"\$(sort -u '$W/out')\" = '$(sha "$W/big")' ] && [ \"\$(wc -l < '$W/out')\" = 8 ]" \
	"8 concurrent GETs gave: $(sort "$W/out" | uniq -c | tr '\n' ' ') $(err1)"
rss=$(/usr/bin/time -f %M timeout 120 "$S3TOOL" get w/big 2>&1 > /dev/null | tail -n 1)
rss_small=$(/usr/bin/time -f %M timeout 120 "$S3TOOL" get w/small 2>&1 > /dev/null | tail -n 1)
echo "# max RSS of a GET: $rss KiB for 13 MB, $rss_small KiB for 70 KB"
expect get_memory_does_not_grow_with_the_object "[ \$((rss - rss_small)) -lt 4096 ]" \
	"max RSS $rss KiB for 13 MB, $rss_small KiB for 70 KB"

# ---------------------------------------------------------------- stop
out=$(timeout 60 bash "$RS_LAB_DIR/s3.sh" stop 2>&1)
busy=
for p in 20 21 22; do (: <> "/dev/tcp/127.0.0.1/$((LAB_PORT_BASE + p))") 2> /dev/null && busy="$busy $((LAB_PORT_BASE + p))"; done
expect s3_lab_stop_leaves_nothing "[ -z \"\$(ls '$REGSLIM_LAB'/run/s3-*.pid 2> /dev/null)\" ] && [ -z '$busy' ] && ! ps -eo args | grep -v grep | grep -qF -- '$REGSLIM_LAB/s3/'" \
	"$out; ports still listening:$busy; processes: $(ps -eo pid,args | grep -v grep | grep -F -- "$REGSLIM_LAB/s3/" | cut -c1-100 | tr '\n' ' ')"
rc=0
timeout 30 bash "$RS_LAB_DIR/s3.sh" status > "$W/status" 2>&1 || rc=$?
expect s3_lab_status_when_stopped "[ $rc = 1 ] && [ \"\$(grep -c ': stopped' '$W/status')\" = 3 ]" "exit $rc: $(tr '\n' ' ' < "$W/status")"

finish
