#!/usr/bin/env bash
# serve.sh: regslim (warm cache) against Debian's docker-registry serving the same content, on
# loopback, in one run, driven by wrk:
#   1. manifest GET requests/s: GET /v2/library/tiny/manifests/latest (Accept: docker v2s2), 64
#      connections, against the registry directly and against regslim;
#   2. large-blob GET throughput: a 256 MiB random blob, 8 connections, against each;
#   3. regslim's blob run again at 200 connections, twice, while its resident memory (VmRSS, RssAnon
#      from /proc/PID/status) is sampled before, every second during, and after each run.
# Prints a table with the ratios regslim / docker-registry and appends it, with the date, the
# machine (nproc, CPU, kernel) and the versions, to docs/performance.md (BENCH_NO_DOC=1: don't).
# It never fails on timing: it fails only when something does not work (a server does not start,
# regslim serves wrong bytes).
#
# Env: REGSLIM_BIN (default build/proxy/regslim), LAB_PORT_BASE (19000; uses BASE+0, +50),
#      DURATION (seconds per wrk run, 10), BLOB_MIB (256), BENCH_NO_DOC=1, KEEP_LAB=1 (keep the
#      lab directory). The registry comes from the test lab, tests/lab/registry.sh.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T=$top/tests/lab
REGSLIM_BIN=${REGSLIM_BIN:-$top/build/proxy/regslim}
export LAB_PORT_BASE=${LAB_PORT_BASE:-19000}
DURATION=${DURATION:-10}
BLOB_MIB=${BLOB_MIB:-256}
DOC=$top/docs/performance.md
ACCEPT='Accept: application/vnd.docker.distribution.manifest.v2+json'

die() { echo "serve.sh: $*" >&2; exit 1; }
[ -x "$REGSLIM_BIN" ] || die "REGSLIM_BIN=$REGSLIM_BIN is not executable (build it first: cmake --build build --target regslim)"
command -v wrk > /dev/null || die "wrk is missing (Debian package wrk)"
[ -f "$T/registry.sh" ] || die "no registry.sh in $T (the test lab is part of the checkout)"

REGSLIM_LAB=$(mktemp -d /tmp/rs-bench-XXXXXX)
export REGSLIM_LAB
touch "$REGSLIM_LAB/.regslim-lab"
LOGS=$REGSLIM_LAB/logs
mkdir -p "$LOGS"
RS_PID=
cleanup() {
	local i
	if [ -n "$RS_PID" ] && kill -0 "$RS_PID" 2> /dev/null; then
		kill -TERM "$RS_PID" 2> /dev/null || true
		for ((i = 0; i < 150; i++)); do kill -0 "$RS_PID" 2> /dev/null || break; sleep 0.1; done
		kill -KILL "$RS_PID" 2> /dev/null || true
	fi
	if [ "${KEEP_LAB:-0}" = 1 ]; then
		timeout 60 bash "$T/registry.sh" stop all > /dev/null 2>&1 || true
		echo "kept $REGSLIM_LAB"
	else
		timeout 120 bash "$T/clients.sh" teardown > /dev/null 2>&1 || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

REG=127.0.0.1:$LAB_PORT_BASE
RS=127.0.0.1:$((LAB_PORT_BASE + 50))
echo "== set-up (lab $REGSLIM_LAB)"
timeout 120 bash "$T/registry.sh" start plain > "$LOGS/registry-start.log" 2>&1 || { cat "$LOGS/registry-start.log"; die "registry did not start"; }
timeout 300 bash "$T/fixtures.sh" tiny-only > "$LOGS/fixtures.log" 2>&1 || { tail "$LOGS/fixtures.log"; die "fixtures failed"; }

# the large blob: random bytes, monolithic upload (POST, then PUT ?digest= as octet-stream)
blob=$REGSLIM_LAB/blob.bin
head -c $((BLOB_MIB << 20)) /dev/urandom > "$blob"
BD=sha256:$(sha256sum < "$blob" | cut -d' ' -f1)
loc=$(curl -s --max-time 30 -X POST -D - -o /dev/null "http://$REG/v2/lab/bigblob/blobs/uploads/" | tr -d '\r' |
	awk -F': ' 'tolower($1)=="location"{print $2}')
[ -n "$loc" ] || die "blob upload did not start"
case $loc in http*) ;; *) loc=http://$REG$loc ;; esac
case $loc in *\?*) loc="$loc&digest=$BD" ;; *) loc="$loc?digest=$BD" ;; esac
st=$(curl -s --max-time 600 -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
	--data-binary "@$blob" "$loc")
[ "$st" = 201 ] || die "blob upload answered $st"
rm -f "$blob"

"$REGSLIM_BIN" serve --listen "$RS" --upstream "http://$REG" --data-dir "$REGSLIM_LAB/rs" > "$LOGS/regslim.log" 2>&1 < /dev/null &
RS_PID=$!
for ((i = 0; i < 100; i++)); do
	[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$RS/healthz" || true)" = 200 ] && break
	kill -0 "$RS_PID" 2> /dev/null || break
	sleep 0.2
done
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$RS/healthz" || true)" = 200 ] || { tail "$LOGS/regslim.log"; die "regslim did not start"; }

# warm regslim's cache and check it serves the same bytes as the registry
MURL=/v2/library/tiny/manifests/latest
BURL=/v2/lab/bigblob/blobs/$BD
want=$(curl -s --max-time 30 -H "$ACCEPT" "http://$REG$MURL" | sha256sum)
got=$(curl -s --max-time 30 -H "$ACCEPT" "http://$RS$MURL" | sha256sum)
[ "$want" = "$got" ] || die "regslim's manifest differs from the registry's"
got=$(curl -s --max-time 600 "http://$RS$BURL" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$BD" ] || die "regslim's blob (first pull) hashes to sha256:$got, not $BD"
got=$(curl -s --max-time 600 "http://$RS$BURL" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$BD" ] || die "regslim's blob (cached) hashes to sha256:$got, not $BD"
sleep 1

# wrk_run NAME CONNS URL [wrk args]: output in $LOGS/wrk-NAME.txt
wrk_run() {
	local name=$1 c=$2 url=$3
	shift 3
	echo "   wrk -t2 -c$c -d${DURATION}s $* $url" >&2
	wrk -t2 -c"$c" -d"${DURATION}s" --timeout 120s "$@" "$url" > "$LOGS/wrk-$name.txt" 2>&1 || true
}
# reqs NAME / bytes_per_s NAME / errs NAME: from wrk's summary
reqs() { awk '/^Requests\/sec:/{printf "%.0f", $2}' "$LOGS/wrk-$1.txt"; }
bytes_per_s() {
	awk '/^Transfer\/sec:/{v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v);
		m = (u=="KB") ? 1024 : (u=="MB") ? 1048576 : (u=="GB") ? 1073741824 : 1; printf "%.0f", v * m}' "$LOGS/wrk-$1.txt"
}
errs() {
	awk '/Non-2xx/{n+=$NF} /Socket errors/{gsub(/,/, ""); n+=$4+$6+$8+$10} END{print n+0}' "$LOGS/wrk-$1.txt"
}
mib() { awk -v b="$1" 'BEGIN{printf "%.0f", b / 1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$RS_PID/status" 2> /dev/null || echo 0; }
anon_kib() { awk '/^RssAnon:/{print $2}' "/proc/$RS_PID/status" 2> /dev/null || echo 0; }

echo "== manifest GET, 64 connections, ${DURATION}s each"
wrk_run man-reg 64 "http://$REG$MURL" -H "$ACCEPT"
wrk_run man-rs 64 "http://$RS$MURL" -H "$ACCEPT"
echo "== ${BLOB_MIB} MiB blob GET, 8 connections, ${DURATION}s each"
wrk_run blob-reg 8 "http://$REG$BURL"
wrk_run blob-rs 8 "http://$RS$BURL"

echo "== regslim, ${BLOB_MIB} MiB blob GET, 200 connections, 2 runs of ${DURATION}s; resident memory sampled every second"
rss0=$(rss_kib) anon0=$(anon_kib)
declare -A rmax amax rss_after anon_after samples
for run in 1 2; do
	wrk_run "blob-rs-200-$run" 200 "http://$RS$BURL" &
	wpid=$!
	rmax[$run]=0 amax[$run]=0 samples[$run]=
	while kill -0 "$wpid" 2> /dev/null; do
		r=$(rss_kib) a=$(anon_kib)
		samples[$run]="${samples[$run]} $((r / 1024))"
		if [ "$r" -gt "${rmax[$run]}" ]; then rmax[$run]=$r; fi
		if [ "$a" -gt "${amax[$run]}" ]; then amax[$run]=$a; fi
		sleep 1
	done
	wait "$wpid" || true
	sleep 2
	rss_after[$run]=$(rss_kib) anon_after[$run]=$(anon_kib)
	kill -0 "$RS_PID" 2> /dev/null || die "regslim died during the 200-connection run (log: $LOGS/regslim.log)"
done
# after both runs, a small request still works (no exhausted descriptors or threads)
got=$(curl -s --max-time 30 -H "$ACCEPT" "http://$RS$MURL" | sha256sum)
[ "$want" = "$got" ] || die "regslim's manifest differs from the registry's after the 200-connection runs"

mr=$(reqs man-reg) ms=$(reqs man-rs)
br=$(bytes_per_s blob-reg) bs=$(bytes_per_s blob-rs) b200=$(bytes_per_s blob-rs-200-1)
table=$(
	printf '| measurement | docker-registry | regslim | regslim / docker-registry | target |\n'
	printf '| --- | ---: | ---: | ---: | --- |\n'
	printf '| manifest GET, 64 conn, req/s | %s | %s | %s | >= 2 |\n' "$mr" "$ms" "$(ratio "$ms" "$mr")"
	printf '| %s MiB blob GET, 8 conn, MiB/s | %s | %s | %s | >= 1.2 |\n' "$BLOB_MIB" "$(mib "$br")" "$(mib "$bs")" "$(ratio "$bs" "$br")"
	printf '| %s MiB blob GET, 200 conn, MiB/s | | %s | | |\n' "$BLOB_MIB" "$(mib "$b200")"
	printf '| regslim VmRSS, MiB: before; run 1 max / after; run 2 max / after (200 conn) | | %s; %s / %s; %s / %s | | flat |\n' \
		"$((rss0 / 1024))" "$((rmax[1] / 1024))" "$((rss_after[1] / 1024))" "$((rmax[2] / 1024))" "$((rss_after[2] / 1024))"
	printf '| regslim RssAnon, MiB: before; run 1 max / after; run 2 max / after (200 conn) | | %s; %s / %s; %s / %s | | flat |\n' \
		"$((anon0 / 1024))" "$((amax[1] / 1024))" "$((anon_after[1] / 1024))" "$((amax[2] / 1024))" "$((anon_after[2] / 1024))"
)
notes="errors (non-2xx + socket errors): manifest registry $(errs man-reg), regslim $(errs man-rs); blob registry $(errs blob-reg), regslim $(errs blob-rs), regslim 200 conn $(errs blob-rs-200-1) and $(errs blob-rs-200-2). VmRSS samples (MiB, every second) during run 1:${samples[1]}; run 2:${samples[2]}."
machine="$(nproc) cores, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), $(awk '/^MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
v_rs=$("$REGSLIM_BIN" version 2> /dev/null | awk '{print $2}') || true
v_reg=$(docker-registry --version 2> /dev/null | awk '{print $3}') || true
v_wrk=$( (wrk -v 2>&1 || true) | head -n 1 | awk '{print $2}') || true
versions="regslim ${v_rs:-?}, docker-registry ${v_reg:-?}, wrk ${v_wrk:-?}"
echo
echo "$table"
echo
echo "$notes"
echo "machine: $machine"
echo "versions: $versions"
if [ "${BENCH_NO_DOC:-0}" != 1 ]; then
	{
		echo
		echo "### $(date -u '+%Y-%m-%d %H:%M UTC') (bench/serve.sh, ${DURATION} s per run)"
		echo
		echo "Machine: $machine. Versions: $versions."
		echo
		echo "$table"
		echo
		echo "$notes"
	} >> "$DOC"
	echo "appended to $DOC"
fi
