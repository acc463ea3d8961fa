#!/usr/bin/env bash
# test_cluster_redis.sh: the replicas' coordination through Redis (proxy/cluster/cluster.c, issue
# 13) against Debian's redis-server that the lab starts on loopback (tests/lab/redis.sh), driven
# from several processes by the test-only tests/tools/clustertool: a lock is exclusive across
# processes (and exactly one of eight racing ones gets it), renewal keeps it past its expiry, a
# kill -9 of the owner hands it over within the expiry, compare-and-delete leaves another owner's
# lock alone, the shared map (with its expiry) and upload sessions are shared, a stopped or hung
# Redis makes every call fall back within the configured timeout (degraded, per-process locks),
# and a Redis started again is used again without a restart. Then two regslim replicas on one
# upstream (the lab's docker-registry) behind the lab's haproxy (tests/lab/haproxy.sh): /v2/
# round-robins over both, /healthz says "redis":"up", a tag revalidated by one replica is fresh
# for the other (the shared tag cache: one upstream HEAD for two pulls), and while Redis is down
# /healthz says "degraded" (still 200, still balanced to), each replica revalidates on its own,
# one warning per transition, back to "up" when Redis returns. One line per check, then "N passed, N failed".
#
# Env (set by ctest): REGSLIM_BIN, CLUSTERTOOL_BIN (default: tests/clustertool in REGSLIM_BIN's
# build tree), LAB_PORT_BASE (Redis on BASE+40, haproxy BASE+41, replicas BASE+51 and BASE+52).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-300}
# shellcheck source=lib.sh
. "$HERE/lib.sh"

CT_BIN=${CLUSTERTOOL_BIN:-$(dirname "$(dirname "$REGSLIM_BIN")")/tests/clustertool}
lab_setup
if [ ! -x "$CT_BIN" ]; then
	fail setup "CLUSTERTOOL_BIN=$CT_BIN is not an executable (build the clustertool target)"
	finish
fi
W=$REGSLIM_LAB/ct
mkdir -p "$W"
lab_on_exit "timeout 30 bash '$RS_LAB_DIR/haproxy.sh' stop"
lab_on_exit "timeout 30 bash '$RS_LAB_DIR/redis.sh' stop"

redis_lab() { timeout 30 bash "$RS_LAB_DIR/redis.sh" "$@"; }
ms() { echo $(($(date +%s%N) / 1000000)); }
# wait_line FILE REGEX [S]: until FILE has a line matching REGEX (default 10 s)
wait_line() {
	local i
	for ((i = 0; i < ${3:-10} * 20; i++)); do
		grep -qE "$2" "$1" 2> /dev/null && return 0
		sleep 0.05
	done
	return 1
}

# ---------------------------------------------------------------- the lab's Redis
if ! redis_lab start > "$LOGS/redis-start.log" 2>&1; then
	fail redis_lab_start "redis.sh start failed:"
	log_tail "$LOGS/redis-start.log"
	finish
fi
pass redis_lab_start
eval "$(bash "$RS_LAB_DIR/redis.sh" env)"
pid=$(cat "$REGSLIM_LAB/run/redis.pid")
lst=$(ss -ltnpH 2> /dev/null | grep "pid=$pid," | awk '{print $4}' | tr '\n' ' ')
expect redis_lab_loopback_only "[ -n '$lst' ] && ! echo '$lst' | tr ' ' '\n' | grep -v '^$' | grep -qv '^127\\.0\\.0\\.1:'" "listening: $lst"
expect redis_lab_status "redis_lab status" "$(redis_lab status 2>&1 | tr '\n' ' ')"

# database 1, a 1 s lock expiry (renewed every ~333 ms), 300 ms per command
C=$W/cluster.json
printf '{"cluster": {"redis": "redis://127.0.0.1:%s/1", "lock_ttl_s": 1, "timeout_ms": 300}}\n' "$REDIS_PORT" > "$C"
ct() { timeout 30 "$CT_BIN" "$C" "$@"; }
rget() { redis_lab cli -n 1 get "$1"; }

out=$(ct mode 2>&1)
expect_eq cluster_up_at_start "${out%% *}" up

# ---------------------------------------------------------------- locks
ct lock digest-a 2000 > "$W/a.out" 2> "$W/a.err" &
apid=$!
wait_line "$W/a.out" '^acquired up '
aowner=$(sed -n 's/^acquired up //p' "$W/a.out")
expect_eq lock_value_is_the_owner "$(rget regslim:lock:digest-a)" "$aowner"
out=$(ct lock digest-a 0 2>&1)
rc=$?
expect lock_exclusive_across_processes "[ $rc -eq 3 ] && [ '$out' = 'busy $aowner' ]" "exit $rc: $out (holder $aowner)"
sleep 1.4 # past the 1 s expiry: only the renewals keep it
out=$(ct lock digest-a 0 2>&1)
rc=$?
expect lock_renewal_keeps_it_past_its_expiry "[ $rc -eq 3 ]" "exit $rc: $out"
wait $apid
expect lock_owner_still_held_it "grep -qx held '$W/a.out' && grep -qx released '$W/a.out'" "$(tr '\n' ' ' < "$W/a.out")"
expect lock_released_is_gone "[ -z \"\$(rget regslim:lock:digest-a)\" ]" "still $(rget regslim:lock:digest-a)"
out=$(ct lock digest-a 0 2>&1)
expect lock_taken_after_release "echo '$out' | grep -q '^acquired up '" "$out"

# eight processes race for one lock: exactly one gets it
rpids=()
for i in 1 2 3 4 5 6 7 8; do
	ct lock race 1500 > "$W/race-$i.out" 2>&1 &
	rpids+=($!)
done
wait "${rpids[@]}" # not a bare wait: lib.sh's watchdog runs in the background too
n=$(cat "$W"/race-*.out | grep -c '^acquired up ')
b=$(cat "$W"/race-*.out | grep -c '^busy ')
expect lock_race_exactly_one_winner "[ $n -eq 1 ] && [ $b -eq 7 ]" "$n acquired, $b busy"

# the owner dies (kill -9): nobody releases, the lock expires within lock_ttl and is taken over
"$CT_BIN" "$C" lock digest-k 60000 > "$W/k.out" 2>&1 & # not under timeout(1): the PID must be the tool's
kpid=$!
wait_line "$W/k.out" '^acquired up '
{
	kill -KILL $kpid
	wait $kpid
} 2> /dev/null # no "Killed" notice from bash
out=$(ct wait digest-k 5000 0 2>&1)
waited=$(echo "$out" | sed -n 's/^acquired after \([0-9]*\) ms up .*/\1/p')
expect lock_taken_over_after_owner_killed "[ -n '$waited' ] && [ '$waited' -ge 100 ] && [ '$waited' -le 2000 ]" \
	"$(echo "$out" | tr '\n' ' ')"
echo "# takeover after kill -9: waited ${waited:-?} ms (lock_ttl_s 1)"

# compare-and-delete: the lock is taken over under its owner (as after an expiry); the former
# owner notices at its next renewal and its release leaves the new owner's lock alone
ct lock digest-c 3000 > "$W/c.out" 2>&1 &
cpid=$!
wait_line "$W/c.out" '^acquired up '
redis_lab cli -n 1 set regslim:lock:digest-c "other-replica 00000000000000ff" XX > /dev/null
wait $cpid
expect lock_lost_is_noticed "grep -qx lost '$W/c.out'" "$(tr '\n' ' ' < "$W/c.out")"
expect_eq lock_release_spares_another_owner "$(rget regslim:lock:digest-c)" "other-replica 00000000000000ff"

# ---------------------------------------------------------------- shared map, uploads
ct map-set tag:lab/tiny:latest sha256:1111 30 > /dev/null 2>&1
expect_eq map_shared_between_processes "$(ct map-get tag:lab/tiny:latest 2>&1)" sha256:1111
ttl=$(redis_lab cli -n 1 ttl regslim:map:tag:lab/tiny:latest)
expect map_has_its_expiry "[ '$ttl' -ge 1 ] && [ '$ttl' -le 30 ]" "TTL $ttl"
ct map-set short v 1 > /dev/null 2>&1
sleep 1.6
out=$(ct map-get short 2>&1)
rc=$?
expect map_entry_expires "[ $rc -eq 3 ] && [ '$out' = absent ]" "exit $rc: $out"
ct map-del tag:lab/tiny:latest > /dev/null 2>&1
out=$(ct map-get tag:lab/tiny:latest 2>&1)
expect_eq map_delete "$out" absent

ct upload-put up-1 team/app 0 > /dev/null 2>&1
ct upload-advance up-1 0 1000 > /dev/null 2>&1
rc1=$?
out=$(ct upload-advance up-1 0 1000 2>&1)
rc2=$?
ct upload-advance up-1 1000 2500 > /dev/null 2>&1
rc3=$?
got=$(ct upload-get up-1 2>&1)
expect upload_session_shared_and_ordered "[ $rc1 -eq 0 ] && [ $rc2 -eq 5 ] && [ $rc3 -eq 0 ] && echo '$got' | grep -q '^team/app 2500 '" \
	"advance $rc1/$rc2/$rc3, get: $got, second advance: $out"
ct upload-del up-1 > /dev/null 2>&1
ct upload-get up-1 > /dev/null 2>&1
expect_eq upload_session_deleted "$?" 3

# ---------------------------------------------------------------- degraded: stopped, hung, back
redis_lab stop > /dev/null 2>&1
t0=$(ms)
out=$(ct mode 2>&1 | tail -n 1)
t1=$(ms)
expect degraded_start_is_fast "[ '${out%% *}' = down ] && [ $((t1 - t0)) -lt 2000 ]" "$out in $((t1 - t0)) ms"
out=$(ct lock digest-d 0 2>&1)
expect degraded_lock_falls_back_to_the_process "echo '$out' | grep -q '^acquired local '" "$out"
t0=$(ms)
ct map-get anything > /dev/null 2> "$W/d.err"
rc=$?
t1=$(ms)
expect degraded_map_answers_unavailable_at_once "[ $rc -eq 4 ] && [ $((t1 - t0)) -lt 2000 ] && grep -q 'unavailable (degraded)' '$W/d.err'" \
	"exit $rc in $((t1 - t0)) ms: $(head -c 300 "$W/d.err")"

redis_lab start > /dev/null 2>&1
redis_lab pause 4 > /dev/null 2>&1 &
ppid_=$!
sleep 0.3
t0=$(ms)
ct map-get anything > /dev/null 2> "$W/h.err"
rc=$?
t1=$(ms)
# cluster_new's connect+PING (300 ms) then no connection: answered without waiting for Redis
expect degraded_hung_redis_is_bounded "[ $rc -eq 4 ] && [ $((t1 - t0)) -lt 1500 ] && grep -q 'no answer within 300 ms' '$W/h.err'" \
	"exit $rc in $((t1 - t0)) ms: $(head -c 300 "$W/h.err")"
wait $ppid_

redis_lab stop > /dev/null 2>&1
ct until-up 15000 digest-r > "$W/r.out" 2> "$W/r.err" &
rpid=$!
sleep 1.2
redis_lab start > /dev/null 2>&1
wait $rpid
rc=$?
expect degraded_recovers_without_restart "[ $rc -eq 0 ] && head -n 1 '$W/r.out' | grep -q '^down ' && grep -q '^up after ' '$W/r.out' && grep -q '^acquired up ' '$W/r.out'" \
	"exit $rc: $(tr '\n' ' ' < "$W/r.out" | cut -c1-400)"
expect degraded_transitions_logged_once "[ \$(grep -c DEGRADED '$W/r.err') -eq 1 ] && [ \$(grep -c 'answers again' '$W/r.err') -eq 1 ]" \
	"$(grep -E 'DEGRADED|answers again' "$W/r.err" | cut -c1-150 | tr '\n' ' ')"

# ---------------------------------------------------------------- replicas behind haproxy
R1=$((LAB_PORT_BASE + 51))
R2=$((LAB_PORT_BASE + 52))
upstream_start plain tiny-only
RC=$W/regslim.json
cat > "$RC" <<- EOF
	{"upstreams": [{"name": "docker.io", "url": "http://$REG_PLAIN", "default": true, "tag_ttl_s": 2, "timeout_s": 10}],
	 "cluster": {"redis": "redis://127.0.0.1:$REDIS_PORT/1", "timeout_ms": 300}}
EOF
for r in 1 2; do
	p=$((LAB_PORT_BASE + 50 + r))
	if ! regslim_spawn "r$r" "$p" "" "$REGSLIM_LAB/rs$r" --config "$RC" 2> "$LOGS/spawn-r$r.err"; then
		fail "replica_r${r}_start" "$(head -n 3 "$LOGS/spawn-r$r.err" | tr '\n' ' ')"
		finish
	fi
done
pass replicas_start
expect_eq healthz_says_redis_up "$(curl -s --max-time 5 "http://127.0.0.1:$R1/healthz")" '{"status":"ok","redis":"up"}'
expect_eq metrics_redis_up "$(curl -s --max-time 5 "http://127.0.0.1:$R1/metrics" | grep '^regslim_redis_up ')" 'regslim_redis_up 1'
if ! timeout 30 bash "$RS_LAB_DIR/haproxy.sh" start "$R1" "$R2" > "$LOGS/haproxy-start.log" 2>&1; then
	fail haproxy_start "$(tail -n 3 "$LOGS/haproxy-start.log" | tr '\n' ' ')"
	finish
fi
pass haproxy_start
eval "$(bash "$RS_LAB_DIR/haproxy.sh" env)"
sleep 1.2 # both replicas pass their first health check
v2count() { grep -c '"path":"/v2/"' "$LOGS/regslim-r$1.log"; }
b1=$(v2count 1)
b2=$(v2count 2)
codes=
for i in 1 2 3 4 5 6; do codes+=$(curl -s -o /dev/null -w '%{http_code} ' --max-time 5 "$HAPROXY_URL/v2/"); done
d1=$(($(v2count 1) - b1))
d2=$(($(v2count 2) - b2))
expect haproxy_round_robins_v2 "[ '$codes' = '200 200 200 200 200 200 ' ] && [ $d1 -eq 3 ] && [ $d2 -eq 3 ]" \
	"codes $codes; replica 1 served $d1, replica 2 served $d2"

# the shared tag cache: both replicas hold lab/tiny:latest; once its 2 s TTL ran out, the first
# pull revalidates it upstream (one HEAD) and the other replica takes that confirmation from Redis
tagpull() { manifest_get "127.0.0.1:$1" lab/tiny latest -o /dev/null; }
tagreqs() { echo "$(upstream_count HEAD '^/v2/lab/tiny/manifests/latest$') HEAD $(upstream_count GET '^/v2/lab/tiny/manifests/latest$') GET"; }
tagpull "$R1" && tagpull "$R2"
sleep 2.3
upstream_mark
tagpull "$R1" && tagpull "$R2"
rc=$?
expect_eq tag_cache_shared_one_revalidation_for_two_replicas "rc $rc, $(tagreqs)" "rc 0, 1 HEAD 0 GET"
expect tag_cache_shared_hit_logged "tail -n 3 '$LOGS/regslim-r2.log' | grep '\"path\":\"/v2/lab/tiny/manifests/latest\"' | grep -q '\"cache\":\"hit\"'" \
	"$(grep '/v2/lab/tiny/manifests/latest' "$LOGS/regslim-r2.log" | tail -n 1 | cut -c1-300)"

redis_lab stop > /dev/null 2>&1
body=
for ((i = 0; i < 100; i++)); do
	body=$(curl -s --max-time 5 "http://127.0.0.1:$R1/healthz")
	case $body in *unreachable*) break ;; esac
	sleep 0.1
done
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$R1/healthz")
expect healthz_degraded_with_200 "[ '$code' = 200 ] && echo '$body' | grep -q '\"status\":\"degraded\",\"redis\":\"unreachable\"'" "$code $body"
sleep 1.2 # haproxy checks again: a degraded replica stays in
codes=
for i in 1 2 3 4; do codes+=$(curl -s -o /dev/null -w '%{http_code} ' --max-time 5 "$HAPROXY_URL/v2/"); done
expect degraded_replicas_keep_serving "[ '$codes' = '200 200 200 200 ' ]" "codes $codes"
expect_eq degraded_warned_once "$(grep -c 'DEGRADED: Redis' "$LOGS/regslim-r1.log")" 1
expect_eq metrics_redis_down "$(curl -s --max-time 5 "http://127.0.0.1:$R1/metrics" | grep '^regslim_redis_up ')" 'regslim_redis_up 0'
# Redis down: each replica revalidates on its own, as a lone process does
sleep 2.3
upstream_mark
tagpull "$R1" && tagpull "$R2"
rc=$?
expect_eq tag_cache_degraded_each_replica_revalidates "rc $rc, $(tagreqs)" "rc 0, 2 HEAD 0 GET"

redis_lab start > /dev/null 2>&1
for ((i = 0; i < 150; i++)); do
	body=$(curl -s --max-time 5 "http://127.0.0.1:$R1/healthz")
	[ "$body" = '{"status":"ok","redis":"up"}' ] && break
	sleep 0.1
done
expect_eq healthz_recovers_without_restart "$body" '{"status":"ok","redis":"up"}'
expect_eq recovery_logged_once "$(grep -c 'Redis at .* answers again' "$LOGS/regslim-r1.log")" 1

finish
