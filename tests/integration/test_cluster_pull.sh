#!/usr/bin/env bash
# test_cluster_pull.sh: the pull path across replicas (issue 13, docs/scale-out.md "Single-flight
# across replicas" and "Peer streaming"). Three regslim replicas on the lab's Ceph RGW (s3 driver,
# one bucket prefix) and Redis, behind the lab's haproxy (lib_cluster.sh's cluster_start), one
# upstream docker-registry reached through tests/lab/faultproxy.py (which slows one blob down
# when a check needs a long download). Checks:
#   - the peer endpoint: 401 without or with a wrong X-Regslim-Peer-Auth, the right HMAC (made
#     here with openssl from the secret file) is served, a replica without a cluster section
#     has no such endpoint;
#   - 50 concurrent cold pulls of lab/multi through haproxy (skopeo, both platforms, and
#     podman) all succeed with the upstream's digests, the upstream's access log shows exactly
#     one GET per blob, the replicas' regslim_cluster_upstream_blob_fetches_total sum to the
#     number of blobs; 30 concurrent GETs of a blob the upstream sends slowly, through haproxy:
#     one upstream GET, the two replicas that did not download it waited for the lock and
#     streamed it from the one that did;
#   - a client on replica B receives the first bytes of a blob replica A is downloading (slowed
#     to 2 MiB/s) before A finished it; the bytes are right, the upstream sees one GET, B's log
#     and metrics say it streamed from A;
#   - kill -9 of the replica that owns an in-flight download: the client streaming from it
#     through another replica is cut off (never a complete wrong body), no object for the blob
#     in the bucket, clients retrying through haproxy succeed, the lock is taken over within its
#     expiry (lock_ttl_s 3);
#   - Redis stopped then started during pulls: every pull succeeds with the right bytes
#     (degraded: per process), one upstream GET per blob again once Redis is back.
# One line per check, then "N passed, N failed".
#
# Env (as ctest sets it): REGSLIM_BIN, S3TOOL_BIN (default: beside REGSLIM_BIN's build tree),
# LAB_PORT_BASE (registry BASE+0, RGW BASE+20..39, Redis BASE+40, haproxy BASE+41, replicas
# BASE+51..53, a replica without cluster BASE+54, faultproxy BASE+60).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-420}
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck source=lib_cluster.sh
. "$HERE/lib_cluster.sh"

lab_setup_s3 cpull
redis_cli() { timeout 10 bash "$RS_LAB_DIR/redis.sh" cli -n "$CLUSTER_REDIS_DB" "$@"; }

# ---------------------------------------------------------------- upstream, blobs, faultproxy
upstream_start plain tiny-only
# push_blob FILE: FILE as a blob of lab/peer (monolithic upload), prints its digest
push_blob() {
	local d loc sep
	d=sha256:$(sha "$1")
	loc=$(curl -sS -D - -o /dev/null --max-time 30 -X POST "http://$REG_PLAIN/v2/lab/peer/blobs/uploads/" |
		tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
	[[ $loc == http* ]] || loc=http://$REG_PLAIN$loc
	sep='?'
	[[ $loc == *\?* ]] && sep='&'
	curl -sS -f --max-time 60 -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$1" \
		"$loc${sep}digest=$d" > /dev/null || return 1
	echo "$d"
}
SIZE=$((8 << 20))
head -c "$SIZE" /dev/urandom > "$W/p.bin"
head -c "$SIZE" /dev/urandom > "$W/k.bin"
head -c "$SIZE" /dev/urandom > "$W/s.bin"
if ! P=$(push_blob "$W/p.bin") || ! K=$(push_blob "$W/k.bin") || ! S=$(push_blob "$W/s.bin"); then
	fail push_blobs "could not push the test blobs to $REG_PLAIN"
	finish
fi
RD=()
for i in 1 2 3 4 5 6; do
	head -c $((512 << 10)) /dev/urandom > "$W/r$i.bin"
	RD+=("$(push_blob "$W/r$i.bin")")
done
pass push_blobs

FP_PORT=$((LAB_PORT_BASE + 60))
# faultproxy_slow DIGEST: faultproxy.py in front of the registry, DIGEST at 2 MiB/s
faultproxy_slow() {
	lab_stop aux-faultproxy 5 > /dev/null 2>&1
	lab_spawn aux-faultproxy "$LOGS/faultproxy.err" python3 "$RS_LAB_DIR/faultproxy.py" --listen "127.0.0.1:$FP_PORT" \
		--upstream "$REG_PLAIN" --digest "$1" --mode slow --rate $((2 << 20)) --log "$LOGS/faultproxy.log" &&
		wait_port "$FP_PORT" 10
}
if ! faultproxy_slow "$S"; then
	fail faultproxy_start "$(tail -n 3 "$LOGS/faultproxy.err" | tr '\n' ' ')"
	finish
fi

# ---------------------------------------------------------------- the cluster
t0=$(ms)
if ! cluster_start 3 "http://127.0.0.1:$FP_PORT" 3 > "$W/cluster-start.out" 2>&1; then
	fail cluster_start "$(tail -n 3 "$W/cluster-start.out" | tr '\n' ' ')"
	finish
fi
pass cluster_start
echo "# RGW, Redis, 3 replicas and haproxy up in $(($(ms) - t0)) ms"
R1=$(cluster_port 1)
R2=$(cluster_port 2)
R3=$(cluster_port 3)
expect_eq healthz_redis_up "$(curl -s --max-time 5 "http://127.0.0.1:$R2/healthz")" '{"status":"ok","redis":"up"}'

# ---------------------------------------------------------------- the peer endpoint's door
PPATH=/_regslim/peer/blobs/$P
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
expect_eq peer_endpoint_refuses_no_auth "$(code "http://127.0.0.1:$R1$PPATH")" 401
expect_eq peer_endpoint_refuses_wrong_auth \
	"$(code -H "X-Regslim-Peer-Auth: $(date +%s) $(printf '%064d' 0)" "http://127.0.0.1:$R1$PPATH")" 401
expect_eq peer_endpoint_refuses_the_secret_as_bearer \
	"$(code -H "X-Regslim-Peer-Auth: $CLUSTER_SECRET" -H "Authorization: Bearer $CLUSTER_SECRET" "http://127.0.0.1:$R1$PPATH")" 401
expect_eq peer_endpoint_refusals_counted "$(cluster_metric 1 regslim_cluster_peer_refused_total)" 3
expect peer_refusal_logged_without_the_secret \
	"grep -q 'peer request refused' '$(cluster_log 1)' && ! grep -qF '$CLUSTER_SECRET' '$(cluster_log 1)'" \
	"$(grep 'peer request refused' "$(cluster_log 1)" | tail -n 1 | cut -c1-200)"
expect_eq peer_endpoint_authenticated_nothing_to_serve \
	"$(code -H "X-Regslim-Peer-Auth: $(cluster_peer_auth "$PPATH")" "http://127.0.0.1:$R1$PPATH")" 404
expect_eq peer_endpoint_never_started_a_download "$(upstream_count GET "/blobs/$P\$")" 0
if regslim_spawn plain "$((LAB_PORT_BASE + 54))" "http://$REG_PLAIN" "$REGSLIM_LAB/plain" 2> "$W/plain.err"; then
	expect_eq peer_endpoint_absent_without_cluster \
		"$(code -H "X-Regslim-Peer-Auth: $(cluster_peer_auth "$PPATH")" "http://127.0.0.1:$((LAB_PORT_BASE + 54))$PPATH")" 404
	lab_stop regslim-plain 10 > /dev/null 2>&1
else
	fail peer_endpoint_absent_without_cluster "$(head -n 2 "$W/plain.err" | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- 50 concurrent cold pulls
MIRROR=${CLUSTER_URL#http://}
export MIRROR
MULTI=$(manifest_digest "$REG_PLAIN" lab/multi latest)
AMD=$(image_blobs "$REG_PLAIN" lab/multi latest linux/amd64)
ARM=$(image_blobs "$REG_PLAIN" lab/multi latest linux/arm64)
# image_blobs: the index digest, the platform's manifest, its config and layers
BLOBS=$( (echo "$AMD" | tail -n +3; echo "$ARM" | tail -n +3) | sort -u)
NSK=44
NPM=6
client_usable skopeo || { fail skopeo_usable "$RS_CLIENT_WHY"; finish; }
client_usable podman || { skip "podman pulls" "$RS_CLIENT_WHY"; NSK=50; NPM=0; }
upstream_mark
t0=$(ms)
pids=()
names=()
for ((i = 1; i <= NSK; i++)); do
	arch=()
	[ $((i % 2)) = 0 ] && arch=(--override-arch arm64 --override-variant v8)
	skopeo_pull "docker://$MIRROR/lab/multi:latest" "dir:$W/s$i" "${arch[@]}" > "$LOGS/pull-s$i.log" 2>&1 &
	pids+=($!)
	names+=("s$i")
done
for ((i = 1; i <= NPM; i++)); do
	(PODMAN_DIR=$REGSLIM_LAB/podman-$i podman_pull -q docker.io/lab/multi:latest) > "$LOGS/pull-p$i.log" 2>&1 &
	pids+=($!)
	names+=("p$i")
done
ok=0
failed=
for ((i = 0; i < ${#pids[@]}; i++)); do
	if wait "${pids[i]}"; then ok=$((ok + 1)); else failed="$failed ${names[i]}"; fi
done
echo "# $((NSK + NPM)) concurrent pulls ($NSK skopeo, $NPM podman) through haproxy: $(($(ms) - t0)) ms"
expect_eq concurrent_cold_pulls_all_succeed "$ok" 50
[ -z "$failed" ] || echo "#   failed:$failed; e.g. $(tail -n 1 "$LOGS/pull-${failed# }.log" 2> /dev/null | cut -c1-300)"
bad=
AMD_M=$(echo "$AMD" | sed -n 2p)
ARM_M=$(echo "$ARM" | sed -n 2p)
for ((i = 1; i <= NSK; i++)); do
	want=$AMD_M
	[ $((i % 2)) = 0 ] && want=$ARM_M
	[ "sha256:$(sha "$W/s$i/manifest.json" 2> /dev/null)" = "$want" ] || bad="$bad s$i"
	for b in $(jq -r '.config.digest, .layers[].digest' "$W/s$i/manifest.json" 2> /dev/null); do
		[ "sha256:$(sha "$W/s$i/${b#sha256:}" 2> /dev/null)" = "$b" ] || bad="$bad s$i:${b:7:12}"
	done
done
for ((i = 1; i <= NPM; i++)); do
	[[ $(PODMAN_DIR=$REGSLIM_LAB/podman-$i lpodman image inspect docker.io/lab/multi:latest --format '{{json .RepoDigests}}' 2>&1) == *"@$MULTI"* ]] ||
		bad="$bad p$i"
done
expect_eq concurrent_pulls_got_the_upstream_bytes "$bad" ""
counts=
one=1
for b in $BLOBS; do
	c=$(upstream_count GET "/blobs/$b([?].*)?\$")
	counts="$counts ${b:7:12}=$c"
	[ "$c" = 1 ] || one=0
done
expect_eq upstream_one_get_per_blob_across_replicas "$one" 1
echo "# upstream GETs per blob:$counts"
sum=0
waits=0
for r in 1 2 3; do
	sum=$((sum + $(cluster_metric "$r" regslim_cluster_upstream_blob_fetches_total)))
	waits=$((waits + $(cluster_metric "$r" regslim_cluster_lock_waits_total)))
done
expect_eq cluster_upstream_fetches_sum_to_blobs "$sum" "$(echo "$BLOBS" | wc -l)"
echo "# lock waits over the 3 replicas: $waits"
for ((i = 1; i <= NPM; i++)); do rm -rf "$REGSLIM_LAB/podman-$i" 2> /dev/null; done

# ---------------------------------------------------------------- 30 concurrent GETs of a slow blob
# The fixture's blobs are downloaded in milliseconds, so the pulls above seldom overlap on one;
# this blob takes 4 s from the upstream, and 30 clients ask for it through haproxy at once (10
# per replica): one replica downloads it, the other two stream it from that one.
faultproxy_slow "$S" || fail faultproxy_restart "$(tail -n 3 "$LOGS/faultproxy.err" | tr '
' ' ')"
upstream_mark
m0=
for r in 1 2 3; do
	m0="$m0 $(cluster_metric "$r" regslim_cluster_lock_waits_total)/$(cluster_metric "$r" regslim_cluster_peer_streams_total 'result="ok"')"
done
pids=()
for ((i = 1; i <= 30; i++)); do
	curl -s -f --max-time 60 -o "$W/sg$i.bin" "$CLUSTER_URL/v2/lab/peer/blobs/$S" &
	pids+=($!)
done
bad=
for ((i = 1; i <= 30; i++)); do
	wait "${pids[i - 1]}" || bad="$bad exit$i"
	[ "sha256:$(sha "$W/sg$i.bin" 2> /dev/null)" = "$S" ] || bad="$bad g$i"
done
expect_eq slow_blob_30_concurrent_gets_right "$bad" ""
expect_eq slow_blob_one_upstream_get "$(upstream_count GET "/blobs/$S\$")" 1
m1=
waits=0
peers=0
for r in 1 2 3; do
	w=$(cluster_metric "$r" regslim_cluster_lock_waits_total)
	o=$(cluster_metric "$r" regslim_cluster_peer_streams_total 'result="ok"')
	m1="$m1 $w/$o"
	waits=$((waits + w))
	peers=$((peers + o))
done
for x in $m0; do
	waits=$((waits - ${x%/*}))
	peers=$((peers - ${x#*/}))
done
expect_eq slow_blob_two_replicas_waited_and_streamed_from_the_owner "$waits $peers" "2 2"
echo "# slow blob: lock waits / peer streams per replica before:$m0 after:$m1"
rm -f "$W"/sg*.bin

# ---------------------------------------------------------------- peer streaming: first bytes early
# A (replica 1) downloads P at 2 MiB/s (about 4 s); a client of B (replica 2) asks for it while
# A holds its lock.
faultproxy_slow "$P" || fail faultproxy_restart "$(tail -n 3 "$LOGS/faultproxy.err" | tr '\n' ' ')"
upstream_mark
pb0=$(cluster_metric 2 regslim_cluster_peer_bytes_total)
po0=$(cluster_metric 2 regslim_cluster_peer_streams_total 'result="ok"')
ps0=$(cluster_metric 1 regslim_cluster_peer_streams_total 'result="served"')
LOCKKEY=regslim:lock:blob:$P
a0=$(ms)
curl -s --max-time 60 -o "$W/pa.bin" -w '%{time_total}\n' "http://127.0.0.1:$R1/v2/lab/peer/blobs/$P" > "$W/pa.time" &
apid=$!
holder=
for ((i = 0; i < 100; i++)); do
	holder=$(redis_cli get "$LOCKKEY" 2> /dev/null)
	[ -n "$holder" ] && break
	sleep 0.05
done
expect_eq peer_lock_names_the_owner "${holder%% *}" "http://127.0.0.1:$R1"
sleep 0.3
b0=$(ms)
curl -s --max-time 60 -o "$W/pb.bin" "http://127.0.0.1:$R2/v2/lab/peer/blobs/$P" &
bpid=$!
tb=
asize=
for ((i = 0; i < 400; i++)); do
	if [ -s "$W/pb.bin" ]; then
		tb=$(ms)
		asize=$(stat -c %s "$W/pa.bin" 2> /dev/null || echo 0)
		break
	fi
	sleep 0.02
done
wait $apid
arc=$?
ta=$((a0 + $(awk '{printf "%d", $1 * 1000}' "$W/pa.time")))
wait $bpid
brc=$?
expect_eq peer_both_clients_get_the_blob "$arc $brc sha256:$(sha "$W/pa.bin") sha256:$(sha "$W/pb.bin")" "0 0 $P $P"
expect peer_first_bytes_before_the_owner_finished "[ -n '$tb' ] && [ '$tb' -lt '$ta' ] && [ '${asize:-$SIZE}' -lt $SIZE ]" \
	"B's first byte at +$((${tb:-0} - a0)) ms, A done at +$((ta - a0)) ms, A's client had ${asize:-?} of $SIZE bytes then"
echo "# peer streaming: B asked at +$((b0 - a0)) ms, first byte at +$((${tb:-0} - a0)) ms; A's client done at +$((ta - a0)) ms (A's client had ${asize:-?} bytes then)"
expect_eq peer_one_upstream_get "$(upstream_count GET "/blobs/$P\$")" 1
expect peer_owner_logged_the_stream "grep -q 'peer streaming $P while downloading it' '$(cluster_log 1)'" \
	"$(grep 'peer' "$(cluster_log 1)" | tail -n 2 | cut -c1-200)"
expect peer_asker_logged_the_stream "grep -q 'peer stream of $P from http://127.0.0.1:$R1 done' '$(cluster_log 2)'" \
	"$(grep 'peer' "$(cluster_log 2)" | tail -n 2 | cut -c1-200)"
expect_eq peer_bytes_metric "$(($(cluster_metric 2 regslim_cluster_peer_bytes_total) - pb0))" "$SIZE"
expect_eq peer_streams_metric "$(($(cluster_metric 2 regslim_cluster_peer_streams_total 'result="ok"') - po0)) $(($(cluster_metric 1 regslim_cluster_peer_streams_total 'result="served"') - ps0))" "1 1"
expect_eq peer_one_object_in_the_bucket "$(bucket_keys "${CLUSTER_PREFIX}cache/blobs/sha256/${P#sha256:}" | wc -l)" 1
expect_eq peer_authenticated_read_of_the_stored_blob \
	"$(curl -s --max-time 30 -H "X-Regslim-Peer-Auth: $(cluster_peer_auth "$PPATH")" "http://127.0.0.1:$R3$PPATH" | sha256sum | cut -d' ' -f1)" "${P#sha256:}"

# ---------------------------------------------------------------- the owner dies
faultproxy_slow "$K" || fail faultproxy_restart "$(tail -n 3 "$LOGS/faultproxy.err" | tr '\n' ' ')"
upstream_mark
KKEY=${CLUSTER_PREFIX}cache/blobs/sha256/${K#sha256:}
curl -s --max-time 60 -o "$W/ka.bin" "http://127.0.0.1:$R1/v2/lab/peer/blobs/$K" &
kapid=$!
for ((i = 0; i < 100; i++)); do
	holder=$(redis_cli get "regslim:lock:blob:$K" 2> /dev/null)
	[ -n "$holder" ] && break
	sleep 0.05
done
sleep 1
curl -s --max-time 60 -o "$W/kb.bin" "http://127.0.0.1:$R2/v2/lab/peer/blobs/$K" &
kbpid=$!
sleep 0.5
tk=$(ms)
cluster_kill 1
expect_eq owner_killed_mid_download "${holder%% *} $(bucket_keys "$KKEY" | wc -l)" "http://127.0.0.1:$R1 0"
wait $kapid
wait $kbpid
kbrc=$?
# B's client was streaming from A: cut off, or (had B already finished) the right bytes; never a clean wrong body
expect peer_client_of_the_dead_owner_never_gets_a_wrong_body \
	"[ $kbrc -ne 0 ] || [ 'sha256:$(sha "$W/kb.bin")' = '$K' ]" "curl exit $kbrc, $(stat -c %s "$W/kb.bin") bytes"
# clients retry through haproxy until they get it
retry_get() {
	local n
	for ((n = 1; n <= 40; n++)); do
		if curl -s -f --max-time 30 -o "$1" "$CLUSTER_URL/v2/lab/peer/blobs/$K" && [ "sha256:$(sha "$1")" = "$K" ]; then
			echo "$n"
			return 0
		fi
		sleep 0.5
	done
	return 1
}
retry_get "$W/kr1.bin" > "$W/kr1.n" &
r1pid=$!
retry_get "$W/kr2.bin" > "$W/kr2.n" &
r2pid=$!
tt=
for ((i = 0; i < 200; i++)); do
	holder=$(redis_cli get "regslim:lock:blob:$K" 2> /dev/null)
	if [ -n "$holder" ] && [ "${holder%% *}" != "http://127.0.0.1:$R1" ]; then
		tt=$(ms)
		break
	fi
	sleep 0.05
done
expect lock_taken_over_within_its_expiry "[ -n '$tt' ] && [ $((${tt:-0} - tk)) -le 4500 ]" \
	"taken over by '${holder%% *}' $((${tt:-0} - tk)) ms after the kill (lock_ttl_s 3)"
echo "# lock of $K taken over by ${holder%% *} $((${tt:-0} - tk)) ms after kill -9 of its owner (lock_ttl_s 3)"
nopart=$(bucket_keys "$KKEY" | wc -l)
wait $r1pid
rc1=$?
wait $r2pid
rc2=$?
expect_eq retries_through_haproxy_succeed "$rc1 $rc2" "0 0"
echo "# attempts of the two retrying clients: $(cat "$W/kr1.n" 2> /dev/null) and $(cat "$W/kr2.n" 2> /dev/null)"
expect_eq no_partial_object_during_takeover "$nopart" 0
expect_eq bucket_holds_the_whole_blob_after_takeover "$(timeout 60 "$S3TOOL" head "$KKEY" 2> /dev/null | cut -d' ' -f1)" "$SIZE"
expect takeover_logged "grep -q 'took over the download of $K' '$(cluster_log 2)' '$(cluster_log 3)'" \
	"$(grep -h "$K" "$(cluster_log 2)" "$(cluster_log 3)" | tail -n 3 | cut -c1-200)"
echo "# upstream GETs of $K: $(upstream_count GET "/blobs/$K\$") (the killed owner's and the takeover)"
if ! cluster_restart 1 2> "$W/restart.err"; then
	fail owner_restarts "$(head -n 2 "$W/restart.err" | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- Redis stopped and started during pulls
# three clients per blob through haproxy; blobs 1-2 with Redis up, 3-4 while it is stopped,
# 5-6 once every replica says it is back
rd_bad=
rd_pull() { # rd_pull I...: the three GETs of each blob at once
	local i j p=()
	for i in "$@"; do
		for j in 1 2 3; do
			curl -s -f --max-time 60 -o "$W/rd$i-$j.bin" "$CLUSTER_URL/v2/lab/peer/blobs/${RD[$i]}" &
			p+=($!)
		done
	done
	for j in "${p[@]}"; do wait "$j" || rd_bad="$rd_bad exit"; done
	for i in "$@"; do
		for j in 1 2 3; do
			[ "sha256:$(sha "$W/rd$i-$j.bin" 2> /dev/null)" = "${RD[$i]}" ] || rd_bad="$rd_bad rd$i-$j"
		done
	done
}
# all_health up|degraded: every replica's /healthz says so
all_health() {
	local r want='{"status":"ok","redis":"up"}'
	[ "$1" = up ] || want='{"status":"degraded","redis":"unreachable"'
	for r in 1 2 3; do
		[[ $(curl -s --max-time 5 "http://127.0.0.1:$(cluster_port "$r")/healthz") == "$want"* ]] || return 1
	done
}
healthy_all() { all_health up; }
upstream_mark
rd_pull 0 1
timeout 30 bash "$RS_LAB_DIR/redis.sh" stop > /dev/null 2>&1
# every replica notices (its once-a-second PING), so none meets a dead connection later
for ((i = 0; i < 50; i++)); do
	all_health degraded && break
	sleep 0.1
done
expect healthz_degraded_while_redis_is_down "all_health degraded" "$(curl -s --max-time 5 "http://127.0.0.1:$R2/healthz")"
rd_pull 2 3
timeout 30 bash "$RS_LAB_DIR/redis.sh" start > /dev/null 2>&1
for ((i = 0; i < 150; i++)); do
	healthy_all && break
	sleep 0.1
done
expect redis_back_every_replica_up healthy_all "$(curl -s --max-time 5 "http://127.0.0.1:$R1/healthz")"
rd_pull 4 5
expect_eq redis_down_and_back_every_pull_right "$rd_bad" ""
per=
for i in 0 1 2 3 4 5; do per="$per $(upstream_count GET "/blobs/${RD[$i]}\$")"; done
read -r g0 g1 g2 g3 g4 g5 <<< "$per"
expect_eq redis_up_one_get_per_blob "$g0 $g1 $g4 $g5" "1 1 1 1"
expect redis_down_at_most_one_get_per_replica "[ $g2 -ge 1 ] && [ $g2 -le 3 ] && [ $g3 -ge 1 ] && [ $g3 -le 3 ]" "GETs:$per"
echo "# upstream GETs per blob (up, up, down, down, back, back):$per"
expect redis_down_locks_taken_per_process "[ \$(( \$(cluster_metric 1 regslim_cluster_locks_total 'result=\"local\"') + \$(cluster_metric 2 regslim_cluster_locks_total 'result=\"local\"') + \$(cluster_metric 3 regslim_cluster_locks_total 'result=\"local\"') )) -ge 2 ]" \
	"local locks: $(cluster_metric 1 regslim_cluster_locks_total 'result="local"') $(cluster_metric 2 regslim_cluster_locks_total 'result="local"') $(cluster_metric 3 regslim_cluster_locks_total 'result="local"')"

finish
