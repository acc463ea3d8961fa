#!/usr/bin/env bash
# serve.sh: regslim (warm cache) against Debian's docker-registry and Debian's nginx serving the
# same content, on loopback, in one run, driven by wrk (event-driven, keep-alive connections):
#   1. manifest GET requests/s: GET /v2/library/tiny/manifests/latest (Accept: docker v2s2), 64
#      connections, against the registry directly, against nginx serving the same bytes as a static
#      file (an access-log line per request, as regslim logs each request) and against regslim;
#   2. large-blob GET throughput: a 256 MiB random blob, 8 connections, against each (nginx serves
#      the very file regslim's store holds, with sendfile), then a ranged GET (the middle half of the
#      blob, Range: bytes=A-B) against nginx and regslim;
#   3. regslim's blob run again at 200 connections, twice, while its resident memory (VmRSS, RssAnon
#      from /proc/PID/status) is sampled before, every second during, and after each run;
#   4. TLS: a second regslim serving HTTPS itself (tls section; warm cache) against nginx serving
#      the same manifest and blob files over TLS with the same certificate (a test CA made here
#      with openssl), the manifest run and the blob run of 1 and 2 over https.
# With REGSLIM_BASE_BIN (another build, e.g. of main) a third regslim on its own data directory
# runs 1 and 2 as well, so a change is measured before/after in the same run.
# Prints a table with the ratios regslim / docker-registry, regslim / nginx (and regslim / base)
# and appends it, with the date, the machine (nproc, CPU, kernel, load average) and the versions,
# to docs/performance.md (BENCH_NO_DOC=1: don't).
# It never fails on timing: it fails only when something does not work (a server does not start,
# regslim serves wrong bytes).
#
# Env: REGSLIM_BIN (default build/proxy/regslim), REGSLIM_BASE_BIN (none), LAB_PORT_BASE (19000;
#      uses BASE+0, +50 to +54), DURATION (seconds per wrk run, 10), BLOB_MIB (256),
#      BENCH_NO_DOC=1, KEEP_LAB=1 (keep the lab directory), BENCH_TLS_ONLY=1 (only part 4). The
#      registry comes from the test lab, tests/lab/registry.sh.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T=$top/tests/lab
REGSLIM_BIN=${REGSLIM_BIN:-$top/build/proxy/regslim}
BASE_BIN=${REGSLIM_BASE_BIN:-}
export LAB_PORT_BASE=${LAB_PORT_BASE:-19000}
DURATION=${DURATION:-10}
BLOB_MIB=${BLOB_MIB:-256}
DOC=$top/docs/performance.md
# shellcheck source=lib.sh
. "$top/bench/lib.sh"
ACCEPT='Accept: application/vnd.docker.distribution.manifest.v2+json'

die() { echo "serve.sh: $*" >&2; exit 1; }
[ -x "$REGSLIM_BIN" ] || die "REGSLIM_BIN=$REGSLIM_BIN is not executable (build it first: cmake --build build --target regslim)"
[ -z "$BASE_BIN" ] || [ -x "$BASE_BIN" ] || die "REGSLIM_BASE_BIN=$BASE_BIN is not executable"
command -v wrk > /dev/null || die "wrk is missing (Debian package wrk)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx is missing (Debian package nginx-light or nginx)"
command -v openssl > /dev/null || die "openssl is missing (Debian package openssl)"
TLS_ONLY=${BENCH_TLS_ONLY:-0}
[ -f "$T/registry.sh" ] || die "no registry.sh in $T (the test lab is part of the checkout)"

REGSLIM_LAB=$(mktemp -d /tmp/rs-bench-XXXXXX)
export REGSLIM_LAB
touch "$REGSLIM_LAB/.regslim-lab"
LOGS=$REGSLIM_LAB/logs
mkdir -p "$LOGS"
RS_PID='' RS_TLS_PID='' RS_BASE_PID='' NGX_PID=''
# stop_pid PID: SIGTERM, SIGKILL after 15 s
stop_pid() {
	local i
	[ -n "$1" ] && kill -0 "$1" 2> /dev/null || return 0
	kill -TERM "$1" 2> /dev/null || true
	for ((i = 0; i < 150; i++)); do kill -0 "$1" 2> /dev/null || return 0; sleep 0.1; done
	kill -KILL "$1" 2> /dev/null || true
}
cleanup() {
	stop_pid "$NGX_PID"
	stop_pid "$RS_TLS_PID"
	stop_pid "$RS_BASE_PID"
	stop_pid "$RS_PID"
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
RS_TLS=127.0.0.1:$((LAB_PORT_BASE + 51))
NGX_TLS=127.0.0.1:$((LAB_PORT_BASE + 52))
NGX=127.0.0.1:$((LAB_PORT_BASE + 53))
RS_BASE=127.0.0.1:$((LAB_PORT_BASE + 54))
echo "== set-up (lab $REGSLIM_LAB)"
timeout 120 bash "$T/registry.sh" start plain > "$LOGS/registry-start.log" 2>&1 || { cat "$LOGS/registry-start.log"; die "registry did not start"; }
timeout 300 bash "$T/fixtures.sh" tiny-only > "$LOGS/fixtures.log" 2>&1 || { tail "$LOGS/fixtures.log"; die "fixtures failed"; }

# the large blob: random bytes, monolithic upload (POST, then PUT ?digest= as octet-stream)
blob=$REGSLIM_LAB/blob.bin
head -c $((BLOB_MIB << 20)) /dev/urandom > "$blob"
BD=$(bench_upload_blob "$REG" lab/bigblob "$blob") || die "the blob upload failed"
rm -f "$blob"

# rs_start NAME BIN ADDR [args]: a regslim on ADDR with the data directory $REGSLIM_LAB/NAME, its log in
# $LOGS/NAME.log; prints its PID. The caller waits with rs_wait.
rs_start() {
	local name=$1 bin=$2 addr=$3
	shift 3
	"$bin" serve --listen "$addr" --upstream "http://$REG" --data-dir "$REGSLIM_LAB/$name" "$@" > "$LOGS/$name.log" 2>&1 < /dev/null &
	echo $!
}
# rs_wait PID URL [curl args]: until URL/healthz answers 200
rs_wait() {
	local pid=$1 url=$2 i
	shift 2
	for ((i = 0; i < 100; i++)); do
		[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url/healthz" || true)" = 200 ] && return 0
		kill -0 "$pid" 2> /dev/null || return 1
		sleep 0.2
	done
	return 1
}
RS_PID=$(rs_start rs "$REGSLIM_BIN" "$RS")
rs_wait "$RS_PID" "http://$RS" || { tail "$LOGS/rs.log"; die "regslim did not start"; }
if [ -n "$BASE_BIN" ] && [ "$TLS_ONLY" != 1 ]; then
	RS_BASE_PID=$(rs_start rs-base "$BASE_BIN" "$RS_BASE")
	rs_wait "$RS_BASE_PID" "http://$RS_BASE" || { tail "$LOGS/rs-base.log"; die "regslim (REGSLIM_BASE_BIN) did not start"; }
fi

# warm regslim's cache and check it serves the same bytes as the registry
MURL=/v2/library/tiny/manifests/latest
BURL=/v2/lab/bigblob/blobs/$BD
want=$(curl -s --max-time 30 -H "$ACCEPT" "http://$REG$MURL" | sha256sum)
for srv in "$RS" ${RS_BASE_PID:+"$RS_BASE"}; do
	got=$(curl -s --max-time 30 -H "$ACCEPT" "http://$srv$MURL" | sha256sum)
	[ "$want" = "$got" ] || die "regslim's manifest ($srv) differs from the registry's"
	got=$(curl -s --max-time 600 "http://$srv$BURL" | sha256sum | cut -d' ' -f1)
	[ "sha256:$got" = "$BD" ] || die "regslim's blob ($srv, first pull) hashes to sha256:$got, not $BD"
	got=$(curl -s --max-time 600 "http://$srv$BURL" | sha256sum | cut -d' ' -f1)
	[ "sha256:$got" = "$BD" ] || die "regslim's blob ($srv, cached) hashes to sha256:$got, not $BD"
done
# nginx serves the very file regslim's store holds (and so the page cache holds it once) and the
# manifest's bytes as a small static file
hex=${BD#sha256:}
BLOB_FILE=$REGSLIM_LAB/rs/blobs/sha256/${hex:0:2}/$hex
[ -f "$BLOB_FILE" ] || die "regslim's store has no $BLOB_FILE (store layout changed?)"
WWW=$REGSLIM_LAB/www
mkdir -p "$WWW/manifests"
curl -s --max-time 30 -H "$ACCEPT" "http://$REG$MURL" > "$WWW/manifests/latest"
# the ranged run: the middle half of the blob
RA=$((BLOB_MIB << 18)) RB=$(((BLOB_MIB << 18) * 3 - 1))
RANGE="Range: bytes=$RA-$RB"

# TLS material for part 4 (nginx listens on both from the start)
PKI=$REGSLIM_LAB/pki
mkdir -p "$PKI"
printf 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$PKI/server.ext"
{ openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=regslim bench CA" \
	-keyout "$PKI/ca.key" -out "$PKI/ca.crt" &&
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
		-keyout "$PKI/server.key" -out "$PKI/server.csr" &&
	openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -set_serial 1 -days 2 \
		-extfile "$PKI/server.ext" -out "$PKI/server.crt"; } > "$LOGS/openssl.log" 2>&1 || die "openssl failed (log: $LOGS/openssl.log)"

# nginx: one worker per core (regslim runs a thread per connection on the same cores), sendfile,
# keep-alive, and an access-log line per request written as it happens (no buffer=), as regslim
# writes its request log line per request
mkdir -p "$REGSLIM_LAB/nginx-tmp"
ngx_locations="
		location = /v2/library/tiny/manifests/latest {
			alias $WWW/manifests/latest;
			default_type application/vnd.docker.distribution.manifest.v2+json;
		}
		location = $BURL {
			alias $BLOB_FILE;
			default_type application/octet-stream;
		}"
cat > "$REGSLIM_LAB/nginx.conf" << NGINXCONF
user $(id -un) $(id -gn);
worker_processes $(nproc);
daemon off;
pid $REGSLIM_LAB/nginx.pid;
error_log $LOGS/nginx-error.log warn;
events { worker_connections 1024; }
http {
	access_log $LOGS/nginx-access.log;
	client_body_temp_path $REGSLIM_LAB/nginx-tmp;
	proxy_temp_path $REGSLIM_LAB/nginx-tmp;
	fastcgi_temp_path $REGSLIM_LAB/nginx-tmp;
	uwsgi_temp_path $REGSLIM_LAB/nginx-tmp;
	scgi_temp_path $REGSLIM_LAB/nginx-tmp;
	sendfile on;
	keepalive_requests 100000;
	server {
		listen $NGX;
		$ngx_locations
	}
	server {
		listen $NGX_TLS ssl;
		ssl_certificate $PKI/server.crt;
		ssl_certificate_key $PKI/server.key;
		ssl_protocols TLSv1.2 TLSv1.3;
		$ngx_locations
	}
}
NGINXCONF
"$NGINX" -p "$REGSLIM_LAB" -c "$REGSLIM_LAB/nginx.conf" -e "$LOGS/nginx-error.log" > "$LOGS/nginx.log" 2>&1 < /dev/null &
NGX_PID=$!
for ((i = 0; i < 100; i++)); do
	[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$NGX$MURL" || true)" = 200 ] && break
	kill -0 "$NGX_PID" 2> /dev/null || { tail "$LOGS/nginx-error.log" "$LOGS/nginx.log"; die "nginx did not start"; }
	sleep 0.2
	[ "$i" -lt 99 ] || die "nginx does not answer (log: $LOGS/nginx-error.log)"
done
got=$(curl -s --max-time 30 "http://$NGX$MURL" | sha256sum)
[ "$want" = "$got" ] || die "nginx's manifest file differs from the registry's"
got=$(curl -s --max-time 600 "http://$NGX$BURL" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$BD" ] || die "nginx's blob hashes to sha256:$got, not $BD"
# both answer the ranged GET with the same bytes
want_r=$(curl -s --max-time 600 -H "$RANGE" "http://$NGX$BURL" | sha256sum)
got=$(curl -s --max-time 600 -H "$RANGE" "http://$RS$BURL" | sha256sum)
[ "$want_r" = "$got" ] || die "regslim's ranged blob GET differs from nginx's"
[ "$want_r" = "$(tail -c +$((RA + 1)) "$BLOB_FILE" | head -c $((RB - RA + 1)) | sha256sum)" ] || die "nginx's ranged GET is not bytes $RA-$RB"
sleep 1

# server_pids NAME: the processes of the server a run NAME measures (by the name's suffix)
server_pids() {
	case $1 in
		*-reg) cat "$REGSLIM_LAB/run/plain.pid" 2> /dev/null || true ;;
		*-ngx | *-ngx-tls) echo "$NGX_PID" "$(pgrep -P "$NGX_PID" | tr "\n" " ")" ;;
		*-base) echo "$RS_BASE_PID" ;;
		*-rs-tls) echo "$RS_TLS_PID" ;;
		*) echo "$RS_PID" ;;
	esac
}
# cpu_ticks PID...: their user + system time so far (clock ticks, all threads)
cpu_ticks() {
	local t=0 p
	for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2> /dev/null || echo 0))); done
	echo "$t"
}
# wrk_run NAME CONNS URL [wrk args]: output in $LOGS/wrk-NAME.txt, the server's CPU ticks during
# the run in $LOGS/cpu-NAME.txt
wrk_run() {
	local name=$1 c=$2 url=$3 pids t0
	shift 3
	pids=$(server_pids "$name")
	echo "   wrk -t2 -c$c -d${DURATION}s $* $url" >&2
	# shellcheck disable=SC2086 # a list of PIDs
	t0=$(cpu_ticks $pids)
	wrk -t2 -c"$c" -d"${DURATION}s" --timeout 120s "$@" "$url" > "$LOGS/wrk-$name.txt" 2>&1 || true
	# shellcheck disable=SC2086
	echo $(($(cpu_ticks $pids) - t0)) > "$LOGS/cpu-$name.txt"
}
CLK_TCK=$(getconf CLK_TCK)
# cpu_per NAME UNIT: the server's CPU time during run NAME per request (UNIT req: microseconds) or per
# GiB sent (UNIT gib: milliseconds); empty when the run did not happen
cpu_per() {
	[ -f "$LOGS/cpu-$1.txt" ] && [ -f "$LOGS/wrk-$1.txt" ] || return 0
	awk -v t="$(cat "$LOGS/cpu-$1.txt")" -v hz="$CLK_TCK" -v unit="$2" '
		/ requests in .* read$/ {
			n = $1; v = $(NF - 1); u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v)
			b = v * ((u == "KB") ? 1024 : (u == "MB") ? 1048576 : (u == "GB") ? 1073741824 : (u == "TB") ? 1099511627776 : 1)
		}
		END {
			s = t / hz
			if (unit == "req" && n > 0) printf "%.1f", s * 1e6 / n
			else if (unit == "gib" && b > 0) printf "%.0f", s * 1000 / (b / 1073741824)
		}' "$LOGS/wrk-$1.txt"
}
# reqs NAME / bytes_per_s NAME / errs NAME: from wrk's summary ("" when the run did not happen)
reqs() { [ ! -f "$LOGS/wrk-$1.txt" ] || bench_wrk_reqs "$LOGS/wrk-$1.txt"; }
bytes_per_s() { [ ! -f "$LOGS/wrk-$1.txt" ] || bench_wrk_bytes_per_s "$LOGS/wrk-$1.txt"; }
errs() { if [ -f "$LOGS/wrk-$1.txt" ]; then bench_wrk_errs "$LOGS/wrk-$1.txt"; else echo -; fi; }
mib() { [ -z "$1" ] || awk -v b="$1" 'BEGIN{printf "%.0f", b / 1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (a != "" && b > 0) printf "%.2f", a / b; else print "n/a"}'; }
max2() { awk -v a="$1" -v b="$2" 'BEGIN{print (a + 0 > b + 0) ? a : b}'; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$RS_PID/status" 2> /dev/null || echo 0; }
anon_kib() { awk '/^RssAnon:/{print $2}' "/proc/$RS_PID/status" 2> /dev/null || echo 0; }
load0=$(cut -d' ' -f1-3 /proc/loadavg)

if [ "$TLS_ONLY" != 1 ]; then
echo "== manifest GET, 64 connections, ${DURATION}s each"
wrk_run man-reg 64 "http://$REG$MURL" -H "$ACCEPT"
wrk_run man-ngx 64 "http://$NGX$MURL" -H "$ACCEPT"
[ -z "$RS_BASE_PID" ] || wrk_run man-base 64 "http://$RS_BASE$MURL" -H "$ACCEPT"
wrk_run man-rs 64 "http://$RS$MURL" -H "$ACCEPT"
echo "== ${BLOB_MIB} MiB blob GET, 8 connections, ${DURATION}s each; then bytes $RA-$RB of it"
wrk_run blob-reg 8 "http://$REG$BURL"
wrk_run blob-ngx 8 "http://$NGX$BURL"
[ -z "$RS_BASE_PID" ] || wrk_run blob-base 8 "http://$RS_BASE$BURL"
wrk_run blob-rs 8 "http://$RS$BURL"
wrk_run range-ngx 8 "http://$NGX$BURL" -H "$RANGE"
[ -z "$RS_BASE_PID" ] || wrk_run range-base 8 "http://$RS_BASE$BURL" -H "$RANGE"
wrk_run range-rs 8 "http://$RS$BURL" -H "$RANGE"
stop_pid "$RS_BASE_PID"

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
	kill -0 "$RS_PID" 2> /dev/null || die "regslim died during the 200-connection run (log: $LOGS/rs.log)"
done
# after both runs, a small request still works (no exhausted descriptors or threads)
got=$(curl -s --max-time 30 -H "$ACCEPT" "http://$RS$MURL" | sha256sum)
[ "$want" = "$got" ] || die "regslim's manifest differs from the registry's after the 200-connection runs"
fi

# ---- 4. TLS: regslim's own TLS against nginx, same files, same certificate
RS_TLS_PID=$(rs_start rs-tls "$REGSLIM_BIN" "$RS_TLS" --tls-cert "$PKI/server.crt" --tls-key "$PKI/server.key")
rs_wait "$RS_TLS_PID" "https://$RS_TLS" --cacert "$PKI/ca.crt" || { tail "$LOGS/rs-tls.log"; die "regslim (TLS) did not start"; }
# warm regslim's cache over https; both must serve the registry's bytes
for srv in "$RS_TLS" "$NGX_TLS" "$RS_TLS"; do
	got=$(curl -s --max-time 30 --cacert "$PKI/ca.crt" -H "$ACCEPT" "https://$srv$MURL" | sha256sum)
	[ "$want" = "$got" ] || die "the manifest over https from $srv differs from the registry's"
	got=$(curl -s --max-time 600 --cacert "$PKI/ca.crt" "https://$srv$BURL" | sha256sum | cut -d' ' -f1)
	[ "sha256:$got" = "$BD" ] || die "the blob over https from $srv hashes to sha256:$got, not $BD"
done
# what each negotiates with an OpenSSL client (wrk uses OpenSSL too)
negotiated() {
	timeout 10 openssl s_client -connect "$1" -CAfile "$PKI/ca.crt" < /dev/null 2> /dev/null |
		awk '/^New, /{sub(/^New, /, ""); sub(/, Cipher is /, " "); print; exit}'
}
cipher_rs=$(negotiated "$RS_TLS") cipher_ngx=$(negotiated "$NGX_TLS")
sleep 1
echo "== TLS: manifest GET, 64 connections; ${BLOB_MIB} MiB blob GET, 8 connections; ${DURATION}s each"
wrk_run man-rs-tls 64 "https://$RS_TLS$MURL" -H "$ACCEPT"
wrk_run man-ngx-tls 64 "https://$NGX_TLS$MURL" -H "$ACCEPT"
wrk_run blob-rs-tls 8 "https://$RS_TLS$BURL"
wrk_run blob-ngx-tls 8 "https://$NGX_TLS$BURL"
kill -0 "$RS_TLS_PID" 2> /dev/null || die "regslim (TLS) died during the runs (log: $LOGS/rs-tls.log)"
load1=$(cut -d' ' -f1-3 /proc/loadavg)

# row LABEL REG NGX BASE RS TARGET: one line of the table (numbers already in the row's unit)
row() {
	local peer
	peer=$(max2 "$2" "$3")
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "${2:--}" "${3:--}" "${4:--}" "$5" \
		"$(ratio "$5" "$2")" "$(ratio "$5" "$3")" "$(ratio "$5" "$peer")" "$(ratio "$5" "$4")" "$6"
}
mt=$(reqs man-rs-tls) mn=$(reqs man-ngx-tls) bt=$(bytes_per_s blob-rs-tls) bn=$(bytes_per_s blob-ngx-tls)
tls_rows() {
	row "manifest GET over TLS, 64 conn, req/s" "" "$mn" "" "$mt" "TLS: >= 0.8 nginx"
	row "$BLOB_MIB MiB blob GET over TLS, 8 conn, MiB/s" "" "$(mib "$bn")" "" "$(mib "$bt")" "TLS: >= 0.8 nginx"
	row "server CPU per manifest GET over TLS, us" "" "$(cpu_per man-ngx-tls req)" "" "$(cpu_per man-rs-tls req)" \
		"(lower is better)"
}
header='| measurement | docker-registry | nginx | regslim (base) | regslim | / docker-registry | / nginx | / max(registry, nginx) | / base | target (issue) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |'
tls_notes="TLS errors (non-2xx + socket errors): manifest nginx $(errs man-ngx-tls), regslim $(errs man-rs-tls); blob nginx $(errs blob-ngx-tls), regslim $(errs blob-rs-tls). Negotiated with an OpenSSL client: regslim ${cipher_rs:-?}, nginx ${cipher_ngx:-?}."
if [ "$TLS_ONLY" != 1 ]; then
	b200=$(bytes_per_s blob-rs-200-1)
	table=$(
		echo "$header"
		row "manifest GET, 64 conn, req/s" "$(reqs man-reg)" "$(reqs man-ngx)" "$(reqs man-base)" "$(reqs man-rs)" \
			">= 2 registry (2), >= 0.8 nginx (16)"
		row "$BLOB_MIB MiB blob GET, 8 conn, MiB/s" "$(mib "$(bytes_per_s blob-reg)")" "$(mib "$(bytes_per_s blob-ngx)")" \
			"$(mib "$(bytes_per_s blob-base)")" "$(mib "$(bytes_per_s blob-rs)")" ">= 1.2 registry (2), >= 1.0 max (16)"
		row "ranged blob GET ($((BLOB_MIB / 2)) MiB of it), 8 conn, MiB/s" "" "$(mib "$(bytes_per_s range-ngx)")" \
			"$(mib "$(bytes_per_s range-base)")" "$(mib "$(bytes_per_s range-rs)")" ">= 1.0 nginx (16)"
		row "server CPU per manifest GET, us" "$(cpu_per man-reg req)" "$(cpu_per man-ngx req)" "$(cpu_per man-base req)" \
			"$(cpu_per man-rs req)" "(lower is better)"
		row "server CPU per GiB of blob sent, ms" "$(cpu_per blob-reg gib)" "$(cpu_per blob-ngx gib)" \
			"$(cpu_per blob-base gib)" "$(cpu_per blob-rs gib)" "(lower is better)"
		row "server CPU per GiB of ranged blob sent, ms" "" "$(cpu_per range-ngx gib)" "$(cpu_per range-base gib)" \
			"$(cpu_per range-rs gib)" "(lower is better)"
		printf '| %s MiB blob GET, 200 conn, MiB/s | | | | %s | | | | | |\n' "$BLOB_MIB" "$(mib "$b200")"
		printf '| regslim VmRSS, MiB: before; run 1 max / after; run 2 max / after (200 conn) | | | | %s; %s / %s; %s / %s | | | | | flat |\n' \
			"$((rss0 / 1024))" "$((rmax[1] / 1024))" "$((rss_after[1] / 1024))" "$((rmax[2] / 1024))" "$((rss_after[2] / 1024))"
		printf '| regslim RssAnon, MiB: before; run 1 max / after; run 2 max / after (200 conn) | | | | %s; %s / %s; %s / %s | | | | | flat |\n' \
			"$((anon0 / 1024))" "$((amax[1] / 1024))" "$((anon_after[1] / 1024))" "$((amax[2] / 1024))" "$((anon_after[2] / 1024))"
		tls_rows
	)
	notes="errors (non-2xx + socket errors): manifest registry $(errs man-reg), nginx $(errs man-ngx), base $(errs man-base), regslim $(errs man-rs); blob registry $(errs blob-reg), nginx $(errs blob-ngx), base $(errs blob-base), regslim $(errs blob-rs); ranged nginx $(errs range-ngx), base $(errs range-base), regslim $(errs range-rs); regslim 200 conn $(errs blob-rs-200-1) and $(errs blob-rs-200-2). VmRSS samples (MiB, every second) during run 1:${samples[1]}; run 2:${samples[2]}. $tls_notes"
else
	table=$(
		echo "$header"
		tls_rows
	)
	notes=$tls_notes
fi
machine="$(nproc) cores, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), $(awk '/^MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r); load average $load0 before the runs, $load1 after"
v_rs=$("$REGSLIM_BIN" version 2> /dev/null | awk '{print $2}') || true
v_reg=$(docker-registry --version 2> /dev/null | awk '{print $3}') || true
v_wrk=$( (wrk -v 2>&1 || true) | head -n 1 | awk '{print $2}') || true
v_ngx=$("$NGINX" -v 2>&1 | awk -F/ '{print $2}') || true
v_mhd=$(dpkg-query -W -f='${Version}' libmicrohttpd12 2> /dev/null) || true
v_gnutls=$(dpkg-query -W -f='${Version}' libgnutls30 2> /dev/null) || true
versions="regslim ${v_rs:-?}${BASE_BIN:+ (base: $BASE_BIN)}, docker-registry ${v_reg:-?}, wrk ${v_wrk:-?}, nginx ${v_ngx:-?}, libmicrohttpd ${v_mhd:-?}, GnuTLS ${v_gnutls:-?}"
echo
echo "$table"
echo
echo "$notes"
echo "machine: $machine"
echo "versions: $versions"
if [ "${BENCH_NO_DOC:-0}" != 1 ]; then
	run=$REGSLIM_LAB/doc-run.md
	{
		echo "### $(date -u '+%Y-%m-%d %H:%M UTC') (bench/serve.sh$([ "$TLS_ONLY" != 1 ] || echo ', TLS only'), ${DURATION} s per run)"
		echo
		echo "Machine: $machine. Versions: $versions."
		echo
		echo "$table"
		echo
		echo "$notes"
		echo
	} > "$run"
	bench_doc_append "$DOC" "## Serving: results of bench/serve.sh" "$run"
	echo "added to $DOC"
fi
