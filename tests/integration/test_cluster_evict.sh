#!/usr/bin/env bash
# test_cluster_evict.sh: what replicas on one bucket share through Redis beyond locks and tags
# (issue 13, docs/scale-out.md "Eviction" and "One optimization per image"): real Ceph RGW
# (tests/lab/s3.sh), Debian's redis-server (tests/lab/redis.sh), the lab's docker-registry behind
# tests/lab/faultproxy.py (which slows one layer download on demand, so that an optimization is
# still running when it matters), and regslim replicas on the s3 driver with a "cluster" section.
#   1. one optimization per image: the same optimized tag pulled at once from three replicas:
#      the metrics of the three add up to one optimization, the two others waited for its
#      result (lock waits), every client gets the same optimized digest;
#   2. takeover: kill -9 of the replica that optimizes (its layer download slowed): the two
#      replicas waiting for it see its lock expire (lock_ttl_s 2), one takes over, the metrics
#      add up to one more optimization, both clients get the same digest;
#   3. cluster-wide LRU with cache.max_bytes small, passes run with SIGUSR1: only the elected
#      replica (the first one started) evicts, the other skips its pass and says so; a blob read
#      on replica B survives while an older one read on A goes (A's own view would have
#      evicted B's); with cache.max_bytes 1, an optimized image pulled (so pinned) on B and a
#      32 MiB blob B is sending to a slow client are kept by A's pass while everything else goes
#      (the client gets every byte); once the pin expired the optimized image is evicted whole
#      (objects and result), and a pull makes it again (same digest, every blob served);
#   4. Redis stopped: a pass evicts by the replica's own view and says so.
# One line per check, then "N passed, N failed".
#
# Env (as ctest sets it): REGSLIM_BIN, S3TOOL_BIN (default: beside REGSLIM_BIN's build tree),
# LAB_PORT_BASE (registry BASE+0, RGW BASE+20..39, Redis BASE+40, faultproxy BASE+45, replicas
# BASE+51..55).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-420}
# shellcheck source=lib.sh
. "$HERE/lib.sh"

export RS_OPTIMIZE=1
lab_setup_s3 cevict
lab_on_exit "timeout 60 bash '$RS_LAB_DIR/s3.sh' stop"
lab_on_exit "timeout 30 bash '$RS_LAB_DIR/redis.sh' stop"
UA=skopeo/1.9.3
DB=3

# ---------------------------------------------------------------- the lab: RGW, Redis, registry
if ! timeout 300 bash "$RS_LAB_DIR/s3.sh" start > "$LOGS/s3-start.log" 2>&1; then
	fail s3_lab_start "s3.sh start failed:"
	log_tail "$LOGS/s3-start.log"
	finish
fi
eval "$(bash "$RS_LAB_DIR/s3.sh" env)"
export S3_ENDPOINT S3_REGION S3_BUCKET S3_ACCESS_KEY S3_SECRET_KEY
if ! timeout 30 bash "$RS_LAB_DIR/redis.sh" start > "$LOGS/redis-start.log" 2>&1; then
	fail redis_lab_start "redis.sh start failed:"
	log_tail "$LOGS/redis-start.log"
	finish
fi
eval "$(bash "$RS_LAB_DIR/redis.sh" env)"
upstream_start plain tiny-only
U=$REG_PLAIN
pass lab_up

FP_PORT=$((LAB_PORT_BASE + 45))
SLOW=$W/slow-on
# fp_start DIGEST RATE: the faultproxy in front of the registry, slowing DIGEST's GETs to RATE
# bytes/s while $SLOW exists
fp_start() {
	lab_stop aux-fp 5 > /dev/null 2>&1
	lab_spawn aux-fp "$LOGS/faultproxy.err" python3 "$RS_LAB_DIR/faultproxy.py" --listen "127.0.0.1:$FP_PORT" \
		--upstream "$U" --digest "$1" --mode slow --rate "$2" --while-exists "$SLOW" --log "$LOGS/faultproxy.log" &&
		wait_port "$FP_PORT" 10
}
# conf FILE PREFIX MAX_BYTES [PIN_S]: a replica's configuration on the lab's bucket and Redis
conf() {
	cat > "$1" <<- EOF
		{"log": {"level": "debug"},
		 "upstreams": [{"name": "docker.io", "url": "http://127.0.0.1:$FP_PORT", "default": true}],
		 "cache": {"max_bytes": $3, "optimized_pin_s": ${4:-0}},
		 "optimize": {"sync_timeout_s": 120},
		 "store": {"driver": "s3", "s3": {"endpoint": "$S3_ENDPOINT", "region": "$S3_REGION", "bucket": "$S3_BUCKET",
		           "access_key_env": "S3_ACCESS_KEY", "secret_key_env": "S3_SECRET_KEY", "prefix": "$2"}},
		 "cluster": {"redis": "redis://127.0.0.1:$REDIS_PORT/$DB", "lock_ttl_s": 2, "timeout_ms": 300}}
	EOF
}
port_of() { echo $((LAB_PORT_BASE + 50 + $1)); }
# replica N CONF: start replica rN (port BASE+50+N) or finish
replica() {
	if ! regslim_spawn "r$1" "$(port_of "$1")" "" "$REGSLIM_LAB/rs$1" --config "$2" 2> "$LOGS/spawn-r$1.err"; then
		fail "replica_r$1_start" "$(head -n 3 "$LOGS/spawn-r$1.err" | tr '\n' ' ')"
		finish
	fi
}
rlog() { echo "$LOGS/regslim-r$1.log"; }
# msum NAME LABELS N...: a metric summed over replicas N...
msum() {
	local name=$1 labels=$2 t=0 v n
	shift 2
	for n in "$@"; do
		v=$(metric "$name" "$labels" "http://127.0.0.1:$(port_of "$n")/metrics") || v=0
		t=$((t + ${v:-0}))
	done
	echo "$t"
}
# wait_line FILE REGEX [S]: until FILE has a line matching REGEX (default 20 s)
wait_line() {
	local i
	for ((i = 0; i < ${3:-20} * 10; i++)); do
		grep -qE "$2" "$1" 2> /dev/null && return 0
		sleep 0.1
	done
	return 1
}
count() { grep -cE "$2" "$1" 2> /dev/null || true; }
# pass_on N REGEX: SIGUSR1 to replica N, then wait until its log has one more line matching REGEX
pass_on() {
	local before
	before=$(count "$(rlog "$1")" "$2")
	kill -USR1 "$(lab_pid "regslim-r$1")"
	for ((i = 0; i < 150; i++)); do
		[ "$(count "$(rlog "$1")" "$2")" -gt "$before" ] && return 0
		sleep 0.1
	done
	return 1
}
has_key() { timeout 30 "$S3TOOL" head "$1" < /dev/null > /dev/null 2>&1; }
blob_key() { echo "$1cache/blobs/sha256/${2#sha256:}"; }
# get_blob N REPO DIGEST OUT [CURL ARGS]: GET a blob from replica N; true when it hashes to DIGEST
get_blob() {
	local n=$1 repo=$2 d=$3 out=$4
	shift 4
	curl -sS -f --max-time 120 -A "$UA" "$@" -o "$out" "http://127.0.0.1:$(port_of "$n")/v2/$repo/blobs/$d" &&
		[ "$(sha256_of "$out")" = "$d" ]
}
blob_size() { http_head "http://$U/v2/$1/blobs/$2" | awk 'tolower($1) == "content-length:" {print $2}' | tr -d '\r'; }

# ---------------------------------------------------------------- 1. one optimization per image
L1=$(manifest_get "$U" library/tiny latest | jq -r '.layers[0].digest')
UP1=$(manifest_digest "$U" library/tiny latest)
S1=$(blob_size library/tiny "$L1")
touch "$SLOW"
# the owner's download of the first layer takes about 3 s: the other pulls come meanwhile
fp_start "$L1" $((S1 / 3 + 1)) || { fail faultproxy_start "$(tail -n 2 "$LOGS/faultproxy.err")"; finish; }
conf "$W/opt.json" "ce/" 0
for n in 1 2 3; do replica "$n" "$W/opt.json"; done
pass replicas_start
t0=$(date +%s%N)
pids=()
for n in 1 2 3; do
	manifest_get "127.0.0.1:$(port_of "$n")" library/tiny latest -A "$UA" --max-time 120 > "$W/p1-r$n.json" &
	pids+=($!)
done
wait "${pids[@]}"
ms=$((($(date +%s%N) - t0) / 1000000))
d1=$(sha256_of "$W/p1-r1.json")
expect_ne concurrent_pulls_get_an_optimized_manifest "$d1" "$UP1"
expect concurrent_pulls_get_the_same_digest \
	"[ '$(sha256_of "$W/p1-r2.json")' = '$d1' ] && [ '$(sha256_of "$W/p1-r3.json")' = '$d1' ]" \
	"r1 $d1, r2 $(sha256_of "$W/p1-r2.json"), r3 $(sha256_of "$W/p1-r3.json")"
expect_eq one_optimization_in_the_cluster "$(msum regslim_optimizations_total 'result="ok"' 1 2 3)" 1
expect_eq the_two_others_waited_for_its_result \
	"$(msum regslim_cluster_optimization_waits_total 'outcome="result"' 1 2 3)" 2
expect_eq one_replica_logs_the_optimization "$(cat "$(rlog 1)" "$(rlog 2)" "$(rlog 3)" | grep -c 'optimized library/tiny .*bytes saved')" 1
echo "# three concurrent cold optimized pulls: ${ms} ms"

# ---------------------------------------------------------------- 2. takeover after kill -9
Z1=$(manifest_get "$U" lab/tiny zstd | jq -r '.layers[0].digest')
UPZ=$(manifest_digest "$U" lab/tiny zstd)
touch "$SLOW"
fp_start "$Z1" 40 || { fail faultproxy_restart "$(tail -n 2 "$LOGS/faultproxy.err")"; finish; }
base_ok=$(msum regslim_optimizations_total 'result="ok"' 2 3)
manifest_get "127.0.0.1:$(port_of 1)" lab/tiny zstd -A "$UA" --max-time 120 > "$W/p2-r1.json" 2> /dev/null &
p0=$!
check owner_starts_optimizing wait_line "$(rlog 1)" 'optimizing lab/tiny sha256:'
sleep 0.5
pids=()
for n in 2 3; do
	manifest_get "127.0.0.1:$(port_of "$n")" lab/tiny zstd -A "$UA" --max-time 120 > "$W/p2-r$n.json" &
	pids+=($!)
done
check waiters_wait_for_the_owner \
	eval "wait_line '$(rlog 2)' 'lab/tiny .* runs on replica .*:$(lab_pid regslim-r1): waiting' && wait_line '$(rlog 3)' 'lab/tiny .* runs on replica .*:$(lab_pid regslim-r1): waiting'"
r1=$(lab_pid regslim-r1)
disown "$r1" 2> /dev/null # no "Killed" job notice in the output
kill -9 "$r1"
tk=$(date +%s%N)
rm -f "$SLOW"
wait "${pids[@]}"
wait "$p0" # the killed owner's client: an error
took=$((($(date +%s%N) - tk) / 1000000))
d2=$(sha256_of "$W/p2-r2.json")
expect_ne takeover_answers_an_optimized_manifest "$d2" "$UPZ"
expect_eq takeover_same_digest_for_both "$(sha256_of "$W/p2-r3.json")" "$d2"
expect_eq takeover_one_more_optimization "$(($(msum regslim_optimizations_total 'result="ok"' 2 3) - base_ok))" 1
expect_eq takeover_by_one_replica "$(msum regslim_cluster_optimization_waits_total 'outcome="takeover"' 2 3)" 1
expect_eq takeover_logged_once "$(cat "$(rlog 2)" "$(rlog 3)" | grep -c 'stopped without a result (its lock expired): this replica takes over')" 1
expect takeover_within_the_lock_expiry "[ $took -lt 10000 ]" "the waiting clients were answered ${took} ms after the kill"
echo "# the killed owner's clients answered ${took} ms after kill -9 (lock_ttl_s 2)"
lab_stop regslim-r2 15 > /dev/null 2>&1
lab_stop regslim-r3 15 > /dev/null 2>&1

# ---------------------------------------------------------------- 3. cluster-wide LRU
timeout 30 bash "$RS_LAB_DIR/redis.sh" cli -n "$DB" flushdb > /dev/null
X=$(manifest_get "$U" lab/tiny raw | jq -r '.layers[0].digest')
Y=$(manifest_get "$U" lab/tiny raw | jq -r '.layers[1].digest')
SX=$(blob_size lab/tiny "$X")
SY=$(blob_size lab/tiny "$Y")
MAX=$((SX + SY - 1)) # X and Y together are over it, either alone is not
conf "$W/ev.json" "ev/" "$MAX" 8
replica 4 "$W/ev.json" # A: started first, the evictor
replica 5 "$W/ev.json" # B
A=4 B=5
expect_eq first_replica_is_the_evictor "$(metric regslim_cluster_evictor '' "http://127.0.0.1:$(port_of $A)/metrics")" 1
expect_eq second_replica_is_not "$(metric regslim_cluster_evictor '' "http://127.0.0.1:$(port_of $B)/metrics")" 0
check a_reads_x get_blob $A lab/tiny "$X" "$W/x"
sleep 1.2
check b_reads_y_later get_blob $B lab/tiny "$Y" "$W/y"
sleep 1.6 # B publishes its uses (every second)
check b_skips_its_pass pass_on $B "skipping this pass: replica .* is the cluster's evictor"
check a_evicts pass_on $A 'cluster eviction \(this replica is the evictor\)'
expect lru_older_read_on_a_goes "! has_key $(blob_key ev/ "$X")" "$X (read on A first) is still in the bucket"
expect lru_recent_read_on_b_stays "has_key $(blob_key ev/ "$Y")" "$Y (read on B last) was evicted"
expect_eq only_one_replica_evicts "$(count "$(rlog $B)" 'cluster eviction')" 0
expect_eq eviction_metric_cluster_scope "$(metric regslim_cache_evictions_total 'scope="cluster"' "http://127.0.0.1:$(port_of $A)/metrics")" 1

# pinned on B: A again, now with cache.max_bytes 1 (every object not held must go); B pulls
# an optimized tag, which pins every object of the optimized image on B for
# cache.optimized_pin_s (8 s); A never served it, so only B's published holds keep it from
# A's pass, which takes every other object (the original's layers among them) around it
lab_stop "regslim-r$A" 15 > /dev/null 2>&1
conf "$W/ev1.json" "ev/" 1 8
replica $A "$W/ev1.json"
expect_eq restarted_replica_is_the_evictor_again "$(metric regslim_cluster_evictor '' "http://127.0.0.1:$(port_of $A)/metrics")" 1
# ... and a blob being read on B: 32 MiB, in the bucket (A fetched it), read slowly through B
head -c $((32 << 20)) /dev/urandom > "$W/big"
BIG=$(sha256_of "$W/big")
loc=$(curl -sS -i -X POST --max-time 30 "http://$U/v2/lab/bigblob/blobs/uploads/" | tr -d '\r' |
	awk 'tolower($1) == "location:" {print $2}')
case $loc in http*) ;; *) loc=http://$U$loc ;; esac
check big_blob_in_the_upstream curl -sS -f -X PUT --max-time 60 -H 'Content-Type: application/octet-stream' \
	--data-binary "@$W/big" "$loc&digest=$BIG"
check a_fetches_the_big_blob get_blob $A lab/bigblob "$BIG" "$W/big-a"
get_blob $B lab/bigblob "$BIG" "$W/big-b" --limit-rate 3M &
slow=$!
check b_pulls_optimized eval "manifest_get 127.0.0.1:$(port_of $B) library/tiny latest -A $UA --max-time 120 > '$W/o.json'"
tpin=$(date +%s%N)
O=$(sha256_of "$W/o.json")
expect_ne optimized_pull_on_the_small_cache "$O" "$UP1"
mapfile -t OBJS < <(jq -r '.config.digest, .layers[].digest' "$W/o.json")
# all_there / none_there: every / no object of the optimized image is in the bucket
all_there() { local d; for d in "${OBJS[@]}"; do has_key "$(blob_key ev/ "$d")" || return 1; done; has_key "ev/cache/manifests/sha256/${O#sha256:}"; }
none_there() { local d; for d in "${OBJS[@]}"; do ! has_key "$(blob_key ev/ "$d")" || return 1; done; ! has_key "ev/cache/manifests/sha256/${O#sha256:}"; }
results() { timeout 30 "$S3TOOL" list ev/docs/optimized/ < /dev/null 2> /dev/null | awk '{print $1}' | grep -c '^ev/docs/optimized/[^/]*\.json$' || true; }
expect_eq optimized_result_written "$(results)" 1
sleep 1.6 # B publishes its pins
check a_evicts_around_the_pinned_image pass_on $A 'cluster eviction \(this replica is the evictor\)'
check pinned_on_b_kept_whole_by_a all_there
expect_eq pinned_result_kept "$(results)" 1
expect upstream_layer_not_pinned_goes "! has_key $(blob_key ev/ "$L1")" "$L1 (the original's layer, not pinned) is still in the bucket"
expect blob_read_on_b_stays "has_key $(blob_key ev/ "$BIG")" "$BIG (being read on B) was evicted by A's pass"
check slow_reader_on_b_gets_every_byte wait "$slow"
expect_ge evictor_log_counts_the_held \
	"$(grep 'cluster eviction' "$(rlog $A)" | tail -n 1 | sed -n 's/.*; \([0-9]*\) kept as held.*/\1/p')" 1
# after the pin: the image goes whole, its result with it
left=$((8000 - ($(date +%s%N) - tpin) / 1000000 + 1600))
[ "$left" -le 0 ] || sleep "$((left / 1000)).$(printf '%03d' $((left % 1000)))"
check a_evicts_after_the_pin pass_on $A 'cluster eviction \(this replica is the evictor\)'
check optimized_image_evicted_whole none_there
expect_eq optimized_result_went_with_it "$(results)" 0
check pull_after_eviction_optimizes_again eval "manifest_get 127.0.0.1:$(port_of $A) library/tiny latest -A $UA --max-time 120 > '$W/o2.json'"
expect_eq same_optimized_digest_again "$(sha256_of "$W/o2.json")" "$O"
all_ok=1
for d in "${OBJS[@]}"; do get_blob $B library/tiny "$d" "$W/ob" || all_ok=0; done
expect_eq every_optimized_blob_served_again "$all_ok" 1

# ---------------------------------------------------------------- 4. Redis down
timeout 30 bash "$RS_LAB_DIR/redis.sh" stop > /dev/null 2>&1
sleep 1.5
check redis_down_pass_is_per_replica pass_on $B 'Redis is unreachable: this replica evicts by its own view'
expect_ge redis_down_pass_counted "$(metric regslim_cache_eviction_passes_total 'result="degraded"' "http://127.0.0.1:$(port_of $B)/metrics")" 1
finish
