#!/usr/bin/env bash
# cluster.sh: regslim as replicas on the s3 store and Redis behind haproxy, against the single
# process on the fs store, on the same input in one run (issue 13's benchmark):
#   cold pull  skopeo copies library/big:latest (the big fixture, ~226 MB of gzip layers) through
#              a fresh regslim: the single process (fs store, no cluster), one replica (s3 store +
#              Redis, no load balancer) and three replicas behind haproxy (s3 + Redis); the
#              upstream fetch and the optimization are part of each pull;
#   warm       wrk against the single process directly and against haproxy -> three replicas:
#              the manifest of library/tiny:latest (64 connections) and a random blob (BLOB_MIB,
#              8 connections), both already cached; then the blob with 200 connections, and the
#              replicas' resident memory before and after.
# Prints a table, the ratios and issue 13's targets (cold pull through the cluster at most 1.3x
# the single process; warm blob GET at least 0.5x the single process), and appends them with the
# date, the machine and the load average to docs/performance.md, section "Scale-out
# (bench/cluster.sh)" (BENCH_NO_DOC=1: don't). It never fails on timing: it exits non-zero only
# when something does not work (a server does not start, a pull fails, bytes differ).
#
# Everything runs on loopback and is stopped by PID: Debian's docker-registry (BASE+0), Ceph RGW
# on memstore (tests/lab/s3.sh, BASE+20..39), redis-server (BASE+40), haproxy (BASE+41), the
# single process (BASE+50), the replicas (BASE+51..53).
#
# Env: REGSLIM_BIN (default build/proxy/regslim), LAB_PORT_BASE (20500), DURATION (seconds per wrk
#      run, 10), BLOB_MIB (128), PULL_TIMEOUT (600 s), FIXTURES_FROM (a lab directory whose
#      fixtures/oci/big layout is used instead of building it), BENCH_NO_DOC=1, KEEP_LAB=1.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T=$top/tests/lab
REGSLIM_BIN=${REGSLIM_BIN:-$top/build/proxy/regslim}
export LAB_PORT_BASE=${LAB_PORT_BASE:-20500}
export PULL_TIMEOUT=${PULL_TIMEOUT:-600}
DURATION=${DURATION:-10}
BLOB_MIB=${BLOB_MIB:-128}
DOC=$top/docs/performance.md
SECTION="## Scale-out (bench/cluster.sh)"
# shellcheck source=lib.sh
. "$top/bench/lib.sh"
ACCEPT='Accept: application/vnd.docker.distribution.manifest.v2+json'
IMG=library/big:latest

die() { echo "cluster.sh: $*" >&2; exit 1; }
[ -x "$REGSLIM_BIN" ] || die "REGSLIM_BIN=$REGSLIM_BIN is not executable (build it first: cmake --build build --target regslim)"
for c in wrk jq curl haproxy redis-server radosgw skopeo; do
	command -v "$c" > /dev/null || [ -x "/usr/sbin/$c" ] || [ -x "/usr/bin/$c" ] ||
		die "$c is missing (scripts/deps.sh installs the Debian packages the lab needs)"
done

REGSLIM_LAB=$(mktemp -d /tmp/rs-cb-XXXXXX)
export REGSLIM_LAB
touch "$REGSLIM_LAB/.regslim-lab"
LOGS=$REGSLIM_LAB/logs
mkdir -p "$LOGS" "$REGSLIM_LAB/pulls"
PIDS=()
stop_pid() {
	local p=$1 i
	kill -0 "$p" 2> /dev/null || return 0
	kill -TERM "$p" 2> /dev/null || true
	for ((i = 0; i < 150; i++)); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
	kill -KILL "$p" 2> /dev/null || true
	wait "$p" 2> /dev/null || true
}
stop_all_regslim() {
	local p
	for p in "${PIDS[@]}"; do stop_pid "$p"; done
	PIDS=()
}
cleanup() {
	stop_all_regslim
	timeout 30 bash "$T/haproxy.sh" stop > /dev/null 2>&1 || true
	timeout 30 bash "$T/redis.sh" stop > /dev/null 2>&1 || true
	timeout 120 bash "$T/s3.sh" stop > /dev/null 2>&1 || true
	timeout 60 bash "$T/registry.sh" stop all > /dev/null 2>&1 || true
	if [ "${KEEP_LAB:-0}" = 1 ]; then
		echo "kept $REGSLIM_LAB"
	else
		timeout 120 bash "$T/clients.sh" teardown > /dev/null 2>&1 || true
		rm -rf "$REGSLIM_LAB"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

REG=127.0.0.1:$LAB_PORT_BASE
SINGLE=127.0.0.1:$((LAB_PORT_BASE + 50))
now_ms() { echo $(($(date +%s%N) / 1000000)); }

echo "== set-up (lab $REGSLIM_LAB)"
timeout 120 bash "$T/registry.sh" start plain > "$LOGS/registry-start.log" 2>&1 || { cat "$LOGS/registry-start.log"; die "registry did not start"; }
if [ -n "${FIXTURES_FROM:-}" ]; then
	[ -f "$FIXTURES_FROM/fixtures/oci/big/index.json" ] || die "no $FIXTURES_FROM/fixtures/oci/big layout (FIXTURES_FROM)"
	mkdir -p "$REGSLIM_LAB/fixtures/oci"
	cp -al "$FIXTURES_FROM/fixtures/oci/big" "$REGSLIM_LAB/fixtures/oci/" 2> /dev/null ||
		cp -a "$FIXTURES_FROM/fixtures/oci/big" "$REGSLIM_LAB/fixtures/oci/"
fi
timeout 1800 bash "$T/fixtures.sh" big > "$LOGS/fixtures-build.log" 2>&1 || { tail "$LOGS/fixtures-build.log"; die "building the big fixture failed"; }
timeout 900 bash "$T/fixtures.sh" push big > "$LOGS/fixtures-push.log" 2>&1 || { tail "$LOGS/fixtures-push.log"; die "pushing the big fixture failed"; }
timeout 300 bash "$T/fixtures.sh" tiny-only > "$LOGS/fixtures-tiny.log" 2>&1 || { tail "$LOGS/fixtures-tiny.log"; die "the tiny fixture failed"; }

# the warm blob: random bytes, one monolithic upload to the registry
blob=$REGSLIM_LAB/blob.bin
head -c $((BLOB_MIB << 20)) /dev/urandom > "$blob"
BD=$(bench_upload_blob "$REG" lab/bigblob "$blob") || die "the blob upload failed"
rm -f "$blob"

timeout 300 bash "$T/s3.sh" start > "$LOGS/s3-start.log" 2>&1 || { tail "$LOGS/s3-start.log"; die "Ceph RGW did not start"; }
eval "$(bash "$T/s3.sh" env)"
export S3_ACCESS_KEY S3_SECRET_KEY
timeout 30 bash "$T/redis.sh" start > "$LOGS/redis-start.log" 2>&1 || { cat "$LOGS/redis-start.log"; die "redis did not start"; }
eval "$(bash "$T/redis.sh" env)"
head -c 32 /dev/urandom | base64 > "$REGSLIM_LAB/peer.key"

# replica_config FILE PORT PREFIX DB: a replica on the lab's bucket under PREFIX, Redis database DB
replica_config() {
	cat > "$1" << EOF
{"listen": "127.0.0.1:$2", "data_dir": "$REGSLIM_LAB/data-$2",
 "log": {"level": "info", "requests": true},
 "upstreams": [{"name": "docker.io", "url": "http://$REG", "default": true}],
 "store": {"driver": "s3", "s3": {"endpoint": "$S3_ENDPOINT", "region": "$S3_REGION", "bucket": "$S3_BUCKET",
                                  "access_key_env": "S3_ACCESS_KEY", "secret_key_env": "S3_SECRET_KEY",
                                  "prefix": "$3"}},
 "cluster": {"redis": "redis://127.0.0.1:$REDIS_PORT/$4", "peer_secret_file": "$REGSLIM_LAB/peer.key",
             "advertise_url": "http://127.0.0.1:$2"}}
EOF
}
wait_healthz() { # HOST:PORT PID NAME
	local i
	for ((i = 0; i < 150; i++)); do
		[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$1/healthz" || true)" = 200 ] && return 0
		kill -0 "$2" 2> /dev/null || break
		sleep 0.2
	done
	tail "$LOGS/$3.log"
	die "$3 did not start on $1"
}
start_single() {
	"$REGSLIM_BIN" serve --listen "$SINGLE" --upstream "http://$REG" --data-dir "$REGSLIM_LAB/single" \
		>> "$LOGS/single.log" 2>&1 < /dev/null &
	PIDS+=($!)
	wait_healthz "$SINGLE" $! single
}
# start_replicas PREFIX DB PORT...: replicas sharing PREFIX and Redis database DB
start_replicas() {
	local prefix=$1 db=$2 p
	shift 2
	for p in "$@"; do
		replica_config "$REGSLIM_LAB/r$p.json" "$p" "$prefix" "$db"
		"$REGSLIM_BIN" serve --config "$REGSLIM_LAB/r$p.json" >> "$LOGS/replica-$p.log" 2>&1 < /dev/null &
		PIDS+=($!)
		wait_healthz "127.0.0.1:$p" $! "replica-$p"
	done
}

# cpu_s PID...: user + system CPU seconds the processes used so far (the object store's share of
# a pull: on this one machine it runs on the same cores as regslim)
cpu_s() {
	local p t=0
	for p in "$@"; do
		[ -r "/proc/$p/stat" ] || continue
		t=$((t + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
	done
	awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t / hz}'
}
STORE_PIDS=$(cat "$REGSLIM_LAB/run/s3-rgw.pid" "$REGSLIM_LAB/run/s3-osd.pid" "$REGSLIM_LAB/run/s3-mon.pid" 2> /dev/null | tr '\n' ' ')
# cold_pull NAME HOST: a skopeo copy of $IMG through HOST as the docker.io mirror; sets P_MS
FAILED=
cold_pull() {
	local name=$1 host=$2 t0 rc=0
	rm -rf "$REGSLIM_LAB/pulls/$name"
	sync
	t0=$(now_ms)
	MIRROR=$host timeout "$((PULL_TIMEOUT + 60))" bash "$T/clients.sh" skopeo_pull "docker://$host/$IMG" \
		"dir:$REGSLIM_LAB/pulls/$name" > "$LOGS/pull-$name.log" 2>&1 || rc=$?
	P_MS=$(($(now_ms) - t0))
	if [ $rc -ne 0 ]; then
		echo "   $name: FAILED (exit $rc), log $LOGS/pull-$name.log:" >&2
		tail -n 5 "$LOGS/pull-$name.log" | sed 's/^/      /' >&2
		P_MS='' FAILED="$FAILED $name"
	fi
}
# same_image NAME: the pulled manifest is the single process's (the same optimized bytes)
same_image() { cmp -s "$REGSLIM_LAB/pulls/single/manifest.json" "$REGSLIM_LAB/pulls/$1/manifest.json"; }

R1=$((LAB_PORT_BASE + 51)) R2=$((LAB_PORT_BASE + 52)) R3=$((LAB_PORT_BASE + 53))
echo "== cold pulls of $IMG (skopeo)"
start_single
single_cpu0=$(cpu_s "${PIDS[0]}")
cold_pull single "$SINGLE"
cold_single=$P_MS
single_cpu=$(awk -v a="$(cpu_s "${PIDS[0]}")" -v b="$single_cpu0" 'BEGIN{printf "%.1f", a - b}')
echo "   single process (fs):           ${cold_single:-failed} ms"
start_replicas one/ 1 "$R1"
cold_pull one "127.0.0.1:$R1"
cold_one=$P_MS
echo "   one replica (s3 + Redis):      ${cold_one:-failed} ms"
stop_pid "${PIDS[-1]}"
unset 'PIDS[-1]'
start_replicas three/ 2 "$R1" "$R2" "$R3"
timeout 30 bash "$T/haproxy.sh" start "$R1" "$R2" "$R3" > "$LOGS/haproxy-start.log" 2>&1 || { cat "$LOGS/haproxy-start.log"; die "haproxy did not start"; }
CL_PIDS=("${PIDS[@]: -3}")
eval "$(bash "$T/haproxy.sh" env)"
HA=127.0.0.1:$HAPROXY_PORT
# shellcheck disable=SC2086 # a list of PIDs
store_cpu0=$(cpu_s $STORE_PIDS) rs_cpu0=$(cpu_s "${CL_PIDS[@]}")
cold_pull three "$HA"
cold_three=$P_MS
# shellcheck disable=SC2086
store_cpu=$(awk -v a="$(cpu_s $STORE_PIDS)" -v b="$store_cpu0" 'BEGIN{printf "%.1f", a - b}')
rs_cpu=$(awk -v a="$(cpu_s "${CL_PIDS[@]}")" -v b="$rs_cpu0" 'BEGIN{printf "%.1f", a - b}')
echo "   three replicas via haproxy:    ${cold_three:-failed} ms"
[ -z "$FAILED" ] || die "pulls failed:$FAILED"
for n in one three; do same_image "$n" || die "the $n pull's manifest differs from the single process's"; done
# upstream blob GETs per configuration (the registry's access log): the single-flight at work
upstream_gets=$(grep -c 'GET /v2/library/big/blobs/' "$LOGS/registry-$LAB_PORT_BASE.log" 2> /dev/null || echo "?")

echo "== warm GETs (wrk, ${DURATION}s each)"
MURL=/v2/library/tiny/manifests/latest
BURL=/v2/lab/bigblob/blobs/$BD
for h in "$SINGLE" "$HA" "$HA" "$HA"; do # haproxy: once per replica, so each has it linked
	got=$(curl -s --max-time 600 "http://$h$BURL" | sha256sum | cut -d' ' -f1)
	[ "sha256:$got" = "$BD" ] || die "the blob through $h hashes to sha256:$got"
	curl -s -f --max-time 30 -H "$ACCEPT" -o /dev/null "http://$h$MURL" || die "the manifest through $h failed"
done
wrk_run() { # NAME CONNS URL
	echo "   wrk -t2 -c$2 -d${DURATION}s $3" >&2
	wrk -t2 -c"$2" -d"${DURATION}s" --timeout 120s -H "$ACCEPT" "$3" > "$LOGS/wrk-$1.txt" 2>&1 || true
}
reqs() { bench_wrk_reqs "$LOGS/wrk-$1.txt"; }
bytes_per_s() { bench_wrk_bytes_per_s "$LOGS/wrk-$1.txt"; }
errs() { bench_wrk_errs "$LOGS/wrk-$1.txt"; }
mib() { awk -v b="$1" 'BEGIN{printf "%.0f", b / 1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (a != "" && b > 0) printf "%.2f", a / b; else print "n/a"}'; }
sec() { [ -n "$1" ] && awk -v m="$1" 'BEGIN{printf "%.1f", m / 1000}' || echo failed; }
# rss_max: the largest VmRSS (KiB) of the three replicas
rss_max() {
	local p m=0 v
	for p in "${CL_PIDS[@]}"; do
		v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2> /dev/null || echo 0)
		[ "${v:-0}" -gt "$m" ] && m=$v
	done
	echo "$m"
}
rss_before=$(rss_max)
wrk_run man-single 64 "http://$SINGLE$MURL"
wrk_run man-cluster 64 "http://$HA$MURL"
wrk_run blob-single 8 "http://$SINGLE$BURL"
wrk_run blob-cluster 8 "http://$HA$BURL"
rss_after=$(rss_max)
wrk_run blob-cluster-200 200 "http://$HA$BURL"
rss_200=$(rss_max)
for n in man-single man-cluster blob-single blob-cluster blob-cluster-200; do
	[ "$(errs $n)" = 0 ] || echo "   note: $n had $(errs $n) errors or non-2xx answers (log $LOGS/wrk-$n.txt)" >&2
done

r_cold=$(ratio "$cold_three" "$cold_single")
r_cold1=$(ratio "$cold_one" "$cold_single")
r_man=$(ratio "$(reqs man-cluster)" "$(reqs man-single)")
r_blob=$(ratio "$(bytes_per_s blob-cluster)" "$(bytes_per_s blob-single)")
verdict() { awk -v v="$1" -v l="$2" -v d="$3" 'BEGIN{if (v == "n/a") print "n/a"; else if ((d == "le" && v + 0 <= l + 0) || (d == "ge" && v + 0 >= l + 0)) print "met"; else print "**not met**"}'; }
load=$(cut -d' ' -f1-3 /proc/loadavg)
table=$(
	cat << EOF
| measure | single process (fs) | cluster (s3 + Redis) | ratio cluster / single | target |
| --- | ---: | ---: | ---: | --- |
| cold pull of big, skopeo | $(sec "$cold_single") s | 3 replicas via haproxy: $(sec "$cold_three") s; 1 replica: $(sec "$cold_one") s | $r_cold (1 replica: $r_cold1) | <= 1.3: $(verdict "$r_cold" 1.3 le) |
| warm manifest GET, 64 conns | $(reqs man-single) req/s | $(reqs man-cluster) req/s | $r_man | - |
| warm ${BLOB_MIB} MiB blob GET, 8 conns | $(mib "$(bytes_per_s blob-single)") MiB/s | $(mib "$(bytes_per_s blob-cluster)") MiB/s | $r_blob | >= 0.5: $(verdict "$r_blob" 0.5 ge) |

Replicas' resident memory (the largest of the three): $((rss_before / 1024)) MiB before the warm runs, $((rss_after / 1024)) MiB after them, $((rss_200 / 1024)) MiB after $DURATION s of 200 connections on the blob.
CPU during the cold pulls: the single process $single_cpu s; through three replicas, the replicas $rs_cpu s and Ceph (radosgw, OSD, monitor) $store_cpu s, on the same $(nproc) cores.
Upstream blob GETs for the three cold pulls together: $upstream_gets (the big image has 5 blobs: config and 4 layers).
Load average at the end: $load ($(nproc) cores).
EOF
)
echo
echo "$table"
if [ "${BENCH_NO_DOC:-0}" != 1 ]; then
	v_rs=$("$REGSLIM_BIN" --version 2> /dev/null | head -n 1 || true)
	run=$REGSLIM_LAB/doc-run.md
	{
		echo "#### $(date -u '+%Y-%m-%d %H:%M UTC') (bench/cluster.sh)"
		echo
		echo "Machine: $(nproc) cores, $(uname -r). regslim: ${v_rs:-?}. Ceph RGW on memstore, all on loopback."
		echo
		echo "$table"
		echo
	} > "$run"
	bench_doc_append "$DOC" "$SECTION" "$run"
	echo "added to $DOC (section \"$SECTION\")"
fi
