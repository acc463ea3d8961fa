#!/usr/bin/env bash
# push.sh: pushes of the big fixture (oci layout, 4 gzip layers, ~226 MB) with skopeo copy, in one
# run, straight into Debian's docker-registry (htpasswd auth) and through regslim's push gate into
# that same registry, each push to a fresh upstream repository:
#   direct      skopeo copy oci:big -> docker-registry (bench/direct:v1);
#   check-only  skopeo copy oci:big -> a fresh regslim, gate with every rule on (sizes and layers
#               deny, non_root and labels warn, forbidden_paths deny, secrets SECRETS_ACTION),
#               mode check-only -> the same registry (bench/check:v1);
#   repeat      the same image again to another tag (bench/check:v2) through a regslim restarted
#               on the same data directory: the blobs are already in regslim and upstream;
#   optimize    as check-only with mode optimize-and-push (bench/opt:v1), fresh regslim on another
#               port (BASE+51): skopeo's blob cache then knows no repository there to mount the
#               layers from, so they are uploaded as in check-only (on the same port skopeo mounts
#               them from bench/check, which regslim fetches back from the upstream).
# Per push: wall time of skopeo; the manifest PUT's time (regslim: "ms" of its JSON request log
# line; split into the gate check, up to the log line of the policy warnings, and the forward to
# the upstream, optimization included; docker-registry: http.response.duration of its log line);
# bytes uploaded to the upstream (blob PUTs with digest= and manifest PUTs answered 201 in the
# registry's access log, each sized by a HEAD on the registry); regslim's peak RSS (VmHWM of
# /proc/<pid>/status after the push; each push has a process of its own) and CPU time; the gate
# report's numbers (GET /regslim/v1/reports/<name>/<digest>: uncompressed bytes scanned, findings).
# The layer scans run as each blob's upload completes (docs/policy.md "When layers are scanned"):
# per push, regslim_gate_layer_scans_total says how many ran at upload and how many in the manifest
# PUT. Prints the target of issue 16 (check-only push at most 1.3x the direct push) with its ratio,
# a table with the ratios regslim / direct, the scan throughput (uncompressed MB / manifest
# PUT s of check-only, and / check s) against the inflate floor (igzip -d, else gzip -d, of the
# same layers), and adds it with the date, machine and versions at the end of the section "Pushes
# through the gate (bench/push.sh)" of docs/performance.md (BENCH_NO_DOC=1: don't).
# It never fails on timing: it exits non-zero only when something does not work (a server does
# not start, a push fails, a report is missing).
#
# Env: REGSLIM_BIN (default build/proxy/regslim), LAB_PORT_BASE (23000; auth registry BASE+1,
#      regslim BASE+50, for optimize-and-push BASE+51), PUSH_TIMEOUT (600 s per push), SECRETS_ACTION (warn: with deny the big
#      image is refused, see docs/performance.md), FIXTURES_FROM (a lab directory whose
#      fixtures/oci/{big,big-zstd} layouts are copied instead of building them; default: build with
#      tests/lab/fixtures.sh, ~2-3 min, root), BENCH_NO_DOC=1, KEEP_LAB=1 (keep the lab directory),
#      PERF_PUSH=check (or repeat, opt: perf record -g of regslim during that push; needs perf and
#      KEEP_LAB=1 to keep the data), STREAM_UPLOADS=false (push.stream_uploads: layers go upstream
#      after their scan instead of as they arrive), LINK_RATE=BYTES_PER_S (push over links of that
#      bandwidth instead of loopback: bench/linkrate.py between skopeo and the registry or regslim,
#      and between regslim and the registry, one link each, ports BASE+60..63).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T=$top/tests/lab
REGSLIM_BIN=${REGSLIM_BIN:-$top/build/proxy/regslim}
export LAB_PORT_BASE=${LAB_PORT_BASE:-23000}
PUSH_TIMEOUT=${PUSH_TIMEOUT:-600}
SECRETS_ACTION=${SECRETS_ACTION:-warn}
DOC=$top/docs/performance.md
SECTION="## Pushes through the gate (bench/push.sh)"
ACCEPTS=(-H 'Accept: application/vnd.oci.image.manifest.v1+json'
	-H 'Accept: application/vnd.docker.distribution.manifest.v2+json'
	-H 'Accept: application/vnd.oci.image.index.v1+json'
	-H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json')

die() { echo "push.sh: $*" >&2; exit 1; }
[ -x "$REGSLIM_BIN" ] || die "REGSLIM_BIN=$REGSLIM_BIN is not executable (build it first: cmake --build build --target regslim)"
[ -f "$T/registry.sh" ] || die "no registry.sh in $T (the test lab is part of the checkout)"
case $SECRETS_ACTION in deny | warn) ;; *) die "SECRETS_ACTION must be deny or warn, not '$SECRETS_ACTION'" ;; esac
for c in jq skopeo curl htpasswd; do command -v "$c" > /dev/null || die "$c is missing (Debian packages jq skopeo curl apache2-utils)"; done
INFLATE=igzip
command -v igzip > /dev/null || INFLATE=gzip

REGSLIM_LAB=$(mktemp -d /tmp/rs-pu-XXXXXX)
export REGSLIM_LAB
touch "$REGSLIM_LAB/.regslim-lab"
LOGS=$REGSLIM_LAB/logs
G=$REGSLIM_LAB/gate
mkdir -p "$LOGS" "$G"
RS_PID=
stop_regslim() {
	local i
	if [ -n "$RS_PID" ] && kill -0 "$RS_PID" 2> /dev/null; then
		kill -TERM "$RS_PID" 2> /dev/null || true
		for ((i = 0; i < 150; i++)); do kill -0 "$RS_PID" 2> /dev/null || break; sleep 0.1; done
		kill -KILL "$RS_PID" 2> /dev/null || true
		wait "$RS_PID" 2> /dev/null || true
	fi
	RS_PID=
}
LINK_PIDS=()
cleanup() {
	stop_regslim
	local p
	for p in "${LINK_PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
	if [ "${KEEP_LAB:-0}" = 1 ]; then
		timeout 60 bash "$T/registry.sh" stop all > /dev/null 2>&1 || true
		echo "kept $REGSLIM_LAB"
	else
		timeout 60 bash "$T/registry.sh" stop all > /dev/null 2>&1 || true
		[ -f "$REGSLIM_LAB/.regslim-lab" ] && rm -rf "$REGSLIM_LAB"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

REG=127.0.0.1:$((LAB_PORT_BASE + 1))
RS=127.0.0.1:$((LAB_PORT_BASE + 50))
# where skopeo pushes (CLIENT_*) and regslim's upstream (UPLINK): the servers themselves, or links
CLIENT_REG=$REG CLIENT_RS=$RS CLIENT_RS_OPT=127.0.0.1:$((LAB_PORT_BASE + 51)) UPLINK=$REG
link() { # link PORT UPSTREAM: a bench/linkrate.py link of LINK_RATE bytes/s on 127.0.0.1:PORT
	"${PY:-python3}" "$top/bench/linkrate.py" --listen "127.0.0.1:$1" --upstream "$2" --rate "$LINK_RATE" \
		> "$LOGS/link-$1.log" 2>&1 &
	LINK_PIDS+=($!)
	echo "127.0.0.1:$1"
}
REGLOG=$LOGS/registry-$((LAB_PORT_BASE + 1)).log
LAB_USER=${LAB_USER:-lab} LAB_PASS=${LAB_PASS:-labpass}
export LAB_USER LAB_PASS
CI_USER=ci CI_PASS=cipw
BIG=$REGSLIM_LAB/fixtures/oci/big

echo "== set-up (lab $REGSLIM_LAB)"
timeout 120 bash "$T/registry.sh" start auth > "$LOGS/registry-start.log" 2>&1 || { cat "$LOGS/registry-start.log"; die "registry did not start"; }
if [ -n "${LINK_RATE:-}" ]; then
	case $LINK_RATE in *[!0-9]* | '') die "LINK_RATE must be bytes per second, not '$LINK_RATE'" ;; esac
	CLIENT_REG=$(link $((LAB_PORT_BASE + 60)) "$REG")
	UPLINK=$(link $((LAB_PORT_BASE + 61)) "$REG")
	CLIENT_RS=$(link $((LAB_PORT_BASE + 62)) "$RS")
	CLIENT_RS_OPT=$(link $((LAB_PORT_BASE + 63)) "$CLIENT_RS_OPT")
	sleep 0.5
	echo "   links of $LINK_RATE bytes/s each way: skopeo -> registry, skopeo -> regslim, regslim -> registry"
fi
if [ -n "${FIXTURES_FROM:-}" ]; then
	mkdir -p "$REGSLIM_LAB/fixtures/oci"
	for l in big big-zstd; do
		[ -f "$FIXTURES_FROM/fixtures/oci/$l/index.json" ] || die "no $FIXTURES_FROM/fixtures/oci/$l layout (FIXTURES_FROM)"
		cp -al "$FIXTURES_FROM/fixtures/oci/$l" "$REGSLIM_LAB/fixtures/oci/" 2> /dev/null ||
			cp -a "$FIXTURES_FROM/fixtures/oci/$l" "$REGSLIM_LAB/fixtures/oci/"
	done
fi
timeout 1800 bash "$T/fixtures.sh" big > "$LOGS/fixtures-build.log" 2>&1 || { tail "$LOGS/fixtures-build.log"; die "building the big fixture failed"; }
man_digest=$(jq -r '.manifests[0].digest' "$BIG/index.json")
MAN=$BIG/blobs/sha256/${man_digest#sha256:}
[ -f "$MAN" ] || die "the big layout has no manifest $man_digest"
mapfile -t LAYERS < <(jq -r '.layers[].digest | sub("^sha256:"; "")' "$MAN")
big_size=$(jq '[.layers[].size] | add' "$MAN")
echo "   oci:big = $man_digest, ${#LAYERS[@]} layers, $big_size bytes compressed"

htpasswd -Bbc "$G/htpasswd" "$CI_USER" "$CI_PASS" > /dev/null 2>&1 || die "htpasswd failed"
export RS_BENCH_UP_PASS=$LAB_PASS
rules=$(
	cat << EOF
{"max_compressed_size": {"limit": "1GiB", "action": "deny"},
 "max_uncompressed_size": {"limit": "4GiB", "action": "deny"},
 "max_layers": {"limit": 40, "action": "deny"},
 "non_root": {"action": "warn"},
 "required_labels": {"labels": ["org.opencontainers.image.source"], "action": "warn"},
 "forbidden_paths": {"paths": ["**/.env", "root/.ssh/**", "**/*.tfstate", "**/.git-credentials"], "action": "deny"},
 "secrets": {"action": "$SECRETS_ACTION"}}
EOF
)
cat > "$G/regslim.json" << EOF
{"log": {"level": "debug"},
 "upstreams": [{"name": "up", "url": "http://$UPLINK", "default": true,
                "auth": {"username": "$LAB_USER", "password_env": "RS_BENCH_UP_PASS"}}],
 "auth": {"htpasswd": "$G/htpasswd",
          "acl": [{"repository": "*", "users": ["$CI_USER"], "actions": ["pull", "push"]}]},
 "push": {"stream_uploads": ${STREAM_UPLOADS:-true}, "policies": [
   {"repositories": ["bench/opt*"], "mode": "optimize-and-push", "rules": $rules},
   {"repositories": ["bench/*"], "mode": "check-only", "rules": $rules}]}}
EOF
"$REGSLIM_BIN" check-config "$G/regslim.json" > "$LOGS/check-config.log" 2>&1 || { cat "$LOGS/check-config.log"; die "the gate configuration is refused"; }

RS_LOG=
start_regslim() { # DATA_DIR [fresh]: regslim on $RS with the gate configuration; its log is $LOGS/rs-<dir>.log
	[ "${2:-}" != fresh ] || rm -rf "$1"
	RS_LOG=$LOGS/regslim-$(basename "$1").log
	"$REGSLIM_BIN" serve --config "$G/regslim.json" --listen "$RS" --data-dir "$1" >> "$RS_LOG" 2>&1 < /dev/null &
	RS_PID=$!
	local i
	for ((i = 0; i < 100; i++)); do
		[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$RS/healthz" || true)" = 200 ] && return 0
		kill -0 "$RS_PID" 2> /dev/null || break
		sleep 0.2
	done
	tail "$RS_LOG"
	die "regslim did not start"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
reglines() { wc -l < "$REGLOG"; }
# status_kb PID FIELD: a field of /proc/PID/status in kB
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2> /dev/null || true; }
# cpu_ms PID: user + system CPU time of the process so far
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%d", ($12 + $13) * 1000 / hz }' "/proc/$1/stat" 2> /dev/null || true; }
# upbytes FROM_LINE: bytes uploaded to the registry after access log line FROM_LINE: every blob
# upload completed (PUT with digest=, 201) and every manifest PUT (201), sized by a HEAD
upbytes() {
	local sum=0 n repo what
	while read -r repo what; do
		case $what in
		sha256:*) n=$(curl -s -I --max-time 30 -u "$LAB_USER:$LAB_PASS" "http://$REG/v2/$repo/blobs/$what" |
			tr -d '\r' | awk -F': ' 'tolower($1) == "content-length" { print $2 }') ;;
		*) n=$(curl -s -I --max-time 30 -u "$LAB_USER:$LAB_PASS" "${ACCEPTS[@]}" "http://$REG/v2/$repo/manifests/$what" |
			tr -d '\r' | awk -F': ' 'tolower($1) == "content-length" { print $2 }') ;;
		esac
		[ -n "$n" ] || { echo "push.sh: cannot size $repo $what on the registry" >&2; echo ""; return 0; }
		sum=$((sum + n))
	done < <(tail -n "+$(($1 + 1))" "$REGLOG" | awk '$1 ~ /^[0-9.]+$/ && $6 == "\"PUT" && $9 == 201 {
		u = $7
		if (match(u, /^\/v2\/.*\/blobs\/uploads\//) && match(u, /[?&]digest=sha256(:|%3A|%3a)[0-9a-f]+/)) {
			d = substr(u, RSTART, RLENGTH); sub(/^.*digest=sha256(:|%3A|%3a)/, "", d)
			r = u; sub(/^\/v2\//, "", r); sub(/\/blobs\/uploads\/.*$/, "", r)
			print r, "sha256:" d
		} else if (match(u, /^\/v2\/.*\/manifests\/[^\/?]+$/)) {
			r = u; sub(/^\/v2\//, "", r); sub(/\/manifests\/[^\/]*$/, "", r)
			t = u; sub(/^.*\/manifests\//, "", t)
			print r, t
		}
	}')
	echo "$sum"
}
# reg_put_ms FROM_LINE REPO TAG: the registry's own duration of the manifest PUT (ms)
reg_put_ms() {
	tail -n "+$(($1 + 1))" "$REGLOG" | awk -v uri="http.request.uri=/v2/$2/manifests/$3" '
		/msg="response completed"/ && /http.request.method=PUT/ && index($0, uri " ") {
			match($0, /http.response.duration=[0-9.]+[a-zµ]+/); d = substr($0, RSTART + 23, RLENGTH - 23)
			v = d + 0; u = d; sub(/^[0-9.]+/, "", u)
			ms = u == "ms" ? v : u == "s" ? v * 1000 : (u == "µs" || u == "us") ? v / 1000 : u == "ns" ? v / 1e6 : u == "m" ? v * 60000 : v
		} END { if (ms != "") printf "%.0f", ms }'
}
# rs_put REPO TAG: from regslim's log: "STATUS MS CHECK_MS DIGEST" of the manifest PUT (CHECK_MS: from
# the PUT's start to the gate's policy-warnings line, "-" without one; DIGEST "-" when not logged)
rs_put() {
	jq -r -R --arg p "/v2/$1/manifests/$2" --arg w "push $1:$2 (" '
		def ms: (.[0:19] + "Z" | fromdateiso8601) * 1000 + (.[20:23] | tonumber);
		fromjson? // empty
		| if .msg == "request" and .method == "PUT" and .path == $p then "R \(.status) \(.ms) \(.ts | ms)"
		  elif (.msg | startswith($w)) then
			"W \(.msg | ltrimstr($w) | split(")")[0]) \(if (.msg | test("policy warning")) then (.ts | ms) else "-" end)"
		  else empty end' "$RS_LOG" | awk '
		$1 == "W" { dg = $2; if ($3 != "-") w = $3 }
		$1 == "R" { st = $2; ms = $3; end = $4 }
		END { if (st == "") exit; printf "%s %s %s %s\n", st, ms, (w != "" ? w - (end - ms) : "-"), (dg != "" ? dg : "-") }'
}

# rs_join REPO TAG: seconds the manifest PUT waited for layers being sent upstream early (its debug
# timing line; "-" without one)
rs_join() {
	jq -r -R --arg w "push $1:$2 (" 'fromjson? // empty | select(.msg | startswith($w)) | .msg
		| capture("early forwards joined (?<j>[0-9.]+) s") | .j' "$RS_LOG" | tail -n 1 | grep . || echo -
}
declare -A WALL PUT CHECK UP RSS RSS0 CPU UNC FIND ST DG OPT SCANS JOIN SKO REGCPU RSCPU ALLCPU
FAILED=''
# cpu_of PID: cpu_ms, 0 without a process
cpu_of() { local v=; [ -z "$1" ] || v=$(cpu_ms "$1"); echo "${v:-0}"; }
# push NAME DEST CREDS: the timed skopeo copy of oci:big to DEST; sets WALL[NAME] and ST[NAME]
push() {
	local name=$1 dest=$2 creds=$3 t0 rc=0
	sync
	local r0 p0
	r0=$(cpu_of "$(cat "$REGSLIM_LAB/run/auth.pid" 2> /dev/null)")
	p0=$(cpu_of "$RS_PID")
	t0=$(now_ms)
	# skopeo's CPU: the subshell's children's user and system times (bash's times)
	(
		timeout "$PUSH_TIMEOUT" skopeo copy --dest-tls-verify=false --dest-creds "$creds" "oci:$BIG:latest" "docker://$dest" \
			> "$LOGS/push-$name.log" 2>&1 || rc=$?
		times > "$LOGS/times-$name"
		exit $rc
	) || rc=$?
	WALL[$name]=$(($(now_ms) - t0))
	# CPU of skopeo, docker-registry and regslim during the push (the machine's work for it)
	SKO[$name]=$(awk 'NR == 2 { split($1 " " $2, t, /[ms ]/); printf "%d", (t[1] * 60 + t[2] + t[4] * 60 + t[5]) * 1000 }' "$LOGS/times-$name")
	REGCPU[$name]=$(($(cpu_of "$(cat "$REGSLIM_LAB/run/auth.pid" 2> /dev/null)") - r0))
	RSCPU[$name]=$(($(cpu_of "$RS_PID") - p0))
	if [ $rc -ne 0 ]; then
		echo "   $name: FAILED (exit $rc), log $LOGS/push-$name.log:" >&2
		tail -n 3 "$LOGS/push-$name.log" | sed 's/^/      /' >&2
		WALL[$name]=''
		FAILED="$FAILED $name"
	fi
	sleep 0.5 # let the logs settle
}
# gated NAME REPO TAG: push through the running regslim and collect its numbers
gated() {
	local name=$1 repo=$2 tag=$3 l0 line st ms ck dg rep unc d w v
	RSS0[$name]=$(status_kb "$RS_PID" VmHWM)
	local c0
	c0=$(cpu_ms "$RS_PID")
	l0=$(reglines)
	local perf=
	if [ -n "${PERF_PUSH:-}" ] && [ "$name" = "$PERF_PUSH" ]; then # a CPU profile of regslim during this push
		perf record -F 999 -g -o "$LOGS/perf-$name.data" -p "$RS_PID" > "$LOGS/perf-$name.log" 2>&1 &
		perf=$!
		sleep 0.3
	fi
	push "$name" "$CLIENT/$repo:$tag" "$CI_USER:$CI_PASS"
	if [ -n "$perf" ]; then
		kill -INT "$perf" 2> /dev/null || true
		wait "$perf" 2> /dev/null || true
		perf report -i "$LOGS/perf-$name.data" --no-children --sort dso,sym --stdio 2> /dev/null | grep -v '^#' | grep '%' | head -40 > "$LOGS/perf-$name.txt" || true
		echo "   perf profile of regslim: $LOGS/perf-$name.data (top: $LOGS/perf-$name.txt)"
	fi
	RSS[$name]=$(status_kb "$RS_PID" VmHWM)
	CPU[$name]=$(($(cpu_ms "$RS_PID") - c0))
	# layer scans of this process so far (each push has a process of its own): at upload, in the PUT
	SCANS[$name]=$(curl -s --max-time 10 "http://$RS/metrics" | awk '
		$1 ~ /^regslim_gate_layer_scans_total\{/ { w = $1; sub(/.*when="/, "", w); sub(/".*/, "", w); n[w] = $2 }
		END { printf "%d at upload, %d in the PUT", n["upload"], n["manifest"] }')
	kill -0 "$RS_PID" 2> /dev/null || { FAILED="$FAILED $name(regslim-died)"; echo "   regslim died" >&2; }
	UP[$name]=$(upbytes "$l0")
	line=$(rs_put "$repo" "$tag")
	read -r st ms ck dg <<< "${line:-- - - -}"
	ST[$name]=$st PUT[$name]=$ms CHECK[$name]=$ck DG[$name]=$dg JOIN[$name]=$(rs_join "$repo" "$tag")
	[ "$dg" != - ] || dg=$man_digest
	if curl -s -f --max-time 30 -u "$CI_USER:$CI_PASS" -o "$LOGS/report-$name.json" "http://$RS/regslim/v1/reports/$repo/$dg"; then
		rep=$(jq -r '"\(.image.uncompressed_bytes // "-") \(.denies) \(.warnings) \(.verdict)"' "$LOGS/report-$name.json")
		read -r unc d w v <<< "$rep"
		UNC[$name]=$unc
		FIND[$name]="$d deny, $w warn ($v)"
		OPT[$name]=$(jq -r 'if .optimization then "\(.optimization.totals.size_after)" else "" end' "$LOGS/report-$name.json")
	else
		UNC[$name]='' FIND[$name]='no report'
		FAILED="$FAILED $name(report)"
	fi
}
sec() { [ -n "$1" ] && [ "$1" != - ] && awk -v m="$1" 'BEGIN{printf "%.2f", m / 1000}' || echo -; }
mb() { [ -n "$1" ] && [ "$1" != - ] && awk -v b="$1" 'BEGIN{printf "%.1f", b / 1e6}' || echo -; }
mib() { [ -n "$1" ] && awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}' || echo -; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (a != "" && a != "-" && b > 0) printf "%.2f", a / b; else print "n/a"}'; }
mbps() { awk -v b="$1" -v m="$2" 'BEGIN{if (b != "" && b != "-" && m != "" && m != "-" && m > 0) printf "%.0f", b / 1e3 / m; else print "n/a"}'; }

echo "== inflate floor: $INFLATE -d of the ${#LAYERS[@]} layers (the page cache warmed by a first pass)"
for l in "${LAYERS[@]}"; do cat "$BIG/blobs/sha256/$l"; done > /dev/null
t0=$(now_ms)
unc_floor=$(for l in "${LAYERS[@]}"; do "$INFLATE" -dc < "$BIG/blobs/sha256/$l"; done | wc -c)
INF_MS=$(($(now_ms) - t0))
echo "   $(sec "$INF_MS") s for $(mb "$unc_floor") MB uncompressed ($(mbps "$unc_floor" "$INF_MS") MB/s)"

echo "== direct: skopeo copy -> docker-registry (bench/direct:v1)"
l0=$(reglines)
push direct "$CLIENT_REG/bench/direct:v1" "$LAB_USER:$LAB_PASS"
UP[direct]=$(upbytes "$l0")
PUT[direct]=$(reg_put_ms "$l0" bench/direct v1)
echo "   $(sec "${WALL[direct]}") s, manifest PUT $(sec "${PUT[direct]}") s, $(mb "${UP[direct]}") MB uploaded, CPU: skopeo $(sec "${SKO[direct]}") s, docker-registry $(sec "${REGCPU[direct]}") s"

show() { echo "   $(sec "${WALL[$1]}") s (PUT ${ST[$1]}), manifest PUT $(sec "${PUT[$1]}") s (check $(sec "${CHECK[$1]}") s, waiting for early sends ${JOIN[$1]} s), $(mb "${UP[$1]}") MB to the upstream, peak RSS $(mib "${RSS[$1]}") MiB, CPU $(sec "${CPU[$1]}") s, scanned $(mb "${UNC[$1]}") MB, layer scans ${SCANS[$1]}, findings ${FIND[$1]}"; }
echo "== check-only: skopeo copy -> fresh regslim -> docker-registry (bench/check:v1)"
start_regslim "$REGSLIM_LAB/rs-check" fresh
CLIENT=$CLIENT_RS
gated check bench/check v1
show check
echo "== repeat: the same image to another tag (bench/check:v2), regslim restarted on the same data"
stop_regslim
start_regslim "$REGSLIM_LAB/rs-check"
gated repeat bench/check v2
show repeat
stop_regslim
echo "== optimize-and-push: skopeo copy -> fresh regslim (another port) -> docker-registry (bench/opt:v1)"
RS=127.0.0.1:$((LAB_PORT_BASE + 51)) CLIENT=$CLIENT_RS_OPT
start_regslim "$REGSLIM_LAB/rs-opt" fresh
gated opt bench/opt v1
show opt
stop_regslim
echo "== the optimization alone: regslim optimize --threads 1 oci:big (what optimize-and-push runs)"
sync
t0=$(now_ms)
if timeout "$PUSH_TIMEOUT" "$REGSLIM_BIN" optimize --threads 1 --quiet "oci:$BIG:latest" "oci:$REGSLIM_LAB/opt-alone:latest" \
	> "$LOGS/optimize-alone.log" 2>&1; then
	OPT_MS=$(($(now_ms) - t0))
	echo "   $(sec "$OPT_MS") s"
else
	OPT_MS=''
	FAILED="$FAILED optimize-alone"
	tail -n 3 "$LOGS/optimize-alone.log" | sed 's/^/      /' >&2
fi

fwd() { [ -n "$1" ] && [ "$1" != - ] && [ "$2" != - ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (a - b) / 1000}' || echo -; }
table=$(
	printf '| push | wall s | wall / direct | manifest PUT s | PUT / direct | gate check s | forward s | early-send wait s | to upstream MB | bytes / direct | peak RSS MiB (at start) | regslim CPU s | scanned MB (uncompressed) | layer scans | findings |\n'
	printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n'
	printf '| direct (docker-registry) | %s | | %s | | | | | %s | | | | | | |\n' "$(sec "${WALL[direct]}")" "$(sec "${PUT[direct]}")" "$(mb "${UP[direct]}")"
	for n in check repeat opt; do
		case $n in check) what='check-only' ;; repeat) what='check-only, same image, new tag' ;; opt) what='optimize-and-push' ;; esac
		printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s |\n' "$what" \
			"$(sec "${WALL[$n]}")" "$(ratio "${WALL[$n]}" "${WALL[direct]}")" "$(sec "${PUT[$n]}")" "$(ratio "${PUT[$n]}" "${PUT[direct]}")" \
			"$(sec "${CHECK[$n]}")" "$(fwd "${PUT[$n]}" "${CHECK[$n]}")" "${JOIN[$n]}" "$(mb "${UP[$n]}")" "$(ratio "${UP[$n]}" "${UP[direct]}")" \
			"$(mib "${RSS[$n]}")" "$(mib "${RSS0[$n]}")" "$(sec "${CPU[$n]}")" "$(mb "${UNC[$n]}")" "${SCANS[$n]}" "${FIND[$n]}"
	done
)
# The machine's CPU for each push: skopeo + docker-registry (+ regslim) over the push, and the
# shortest wall time that work allows on this machine's cores (all of them busy all along).
NCPU=$(nproc)
cpu=$(
	printf '| push | skopeo CPU s | docker-registry CPU s | regslim CPU s | all CPU s | / direct | all CPU / %s cores, s | wall s |\n' "$NCPU"
	printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
	for n in direct check opt; do
		case $n in direct) what='direct' ;; check) what='check-only' ;; opt) what='optimize-and-push' ;; esac
		[ -n "${SKO[$n]:-}" ] || continue
		all=$((SKO[$n] + REGCPU[$n] + RSCPU[$n]))
		ALLCPU[$n]=$all
		printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$what" "$(sec "${SKO[$n]}")" "$(sec "${REGCPU[$n]}")" \
			"$([ "$n" = direct ] && echo - || sec "${RSCPU[$n]}")" "$(sec "$all")" "$(ratio "$all" "${ALLCPU[direct]}")" \
			"$(sec "$((all / NCPU))")" "$(sec "${WALL[$n]}")"
	done
)
scan=$(
	printf '| scan throughput (check-only) | MB/s uncompressed | / inflate floor |\n| --- | ---: | ---: |\n'
	a=$(mbps "${UNC[check]}" "${PUT[check]}") b=$(mbps "${UNC[check]}" "${CHECK[check]}") f=$(mbps "$unc_floor" "$INF_MS")
	printf '| uncompressed bytes / manifest PUT time | %s | %s |\n' "$a" "$(ratio "$a" "$f")"
	printf '| uncompressed bytes / gate check time | %s | %s |\n' "$b" "$(ratio "$b" "$f")"
	b=$(mbps "${UNC[repeat]}" "${CHECK[repeat]}")
	printf '| same, repeat push (page cache warm) | %s | %s |\n' "$b" "$(ratio "$b" "$f")"
	# shellcheck disable=SC2016 # the backquotes are Markdown
	printf '| inflate floor: `%s -d` of the same layers | %s | 1.00 |\n' "$INFLATE" "$f"
)
# shellcheck disable=SC2016 # the backquotes are Markdown
notes="Image: oci:big = $man_digest ($(jq -r .mediaType "$MAN")), ${#LAYERS[@]} gzip layers of $(mb "$big_size") MB, $(mb "$unc_floor") MB uncompressed; pushed with \`skopeo copy oci:... docker://...\`. MB = 10^6 bytes, MiB = 2^20. Rules: max_compressed_size 1GiB, max_uncompressed_size 4GiB, max_layers 40 (deny), non_root and required_labels (warn), forbidden_paths 4 globs (deny), secrets ($SECRETS_ACTION). Manifest PUT: regslim's request log \`ms\` (docker-registry: its \`http.response.duration\`); gate check: from the PUT's start to regslim's policy-warnings log line (ms resolution); forward: the rest (upload to the upstream, after waiting for the layers being sent upstream early (\`early-send wait\`, regslim's debug timing line); in optimize-and-push also the optimization). The optimization alone: \`regslim optimize --threads 1\` of oci:big to a new layout, wall time. To upstream: blob and manifest PUTs answered 201 in the registry's access log, sized by HEAD. Peak RSS: VmHWM of a regslim process started for that push (at start: VmHWM before the push). Findings: from the gate report. CPU: user + system seconds during the push of skopeo (bash's \`times\` of its subshell), docker-registry and regslim (\`/proc/<pid>/stat\`); all CPU / cores is the shortest wall time that work allows here."
notes="$notes push.stream_uploads: ${STREAM_UPLOADS:-true}."
[ -z "${LINK_RATE:-}" ] || notes="$notes Network: every push crossed bench/linkrate.py links of $(mb "$LINK_RATE") MB/s each way (skopeo -> registry; skopeo -> regslim and regslim -> registry), not loopback."
[ "${DG[check]:--}" = "$man_digest" ] || notes="$notes regslim logged the pushed manifest as ${DG[check]:--}, not $man_digest."
[ -z "${OPT[opt]:-}" ] || notes="$notes optimize-and-push sent an optimized image of $(mb "${OPT[opt]}") MB (report: optimization.totals.size_after)."
[ -z "$FAILED" ] || notes="$notes FAILED:$FAILED (logs kept only with KEEP_LAB=1)."
machine="$(nproc) cores, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), $(awk '/^MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
v_rs=$("$REGSLIM_BIN" version 2> /dev/null | awk '{print $2}') || true
v_reg=$(docker-registry --version 2> /dev/null | awk '{print $3}') || true
v_sk=$(skopeo --version 2> /dev/null | awk '{print $3}') || true
versions="regslim ${v_rs:-?}, docker-registry ${v_reg:-?} (htpasswd auth), skopeo ${v_sk:-?}"
cr=$(ratio "${WALL[check]}" "${WALL[direct]}")
met=$(awk -v r="$cr" 'BEGIN { if (r == "n/a") print "n/a"; else if (r + 0 <= 1.3) print "met"; else print "missed" }')
or=n/a
[ -z "${WALL[check]}" ] || [ -z "$OPT_MS" ] || or=$(ratio "${WALL[opt]}" "$((WALL[check] + OPT_MS))")
omet=$(awk -v r="$or" 'BEGIN { if (r == "n/a") print "n/a"; else if (r + 0 <= 1.5) print "met"; else print "missed" }')
target=$(
	printf '| target (issue 16) | ratio | goal | |\n| --- | ---: | ---: | --- |\n'
	printf '| check-only push through the gate / direct push (wall) | %s | <= 1.30 | %s |\n' "$cr" "$met"
	printf '| optimize-and-push / (check-only push + the optimization alone, %s s) (wall) | %s | <= 1.50 | %s |\n' \
		"$(sec "$OPT_MS")" "$or" "$omet"
)
notes="$notes Layer scans: regslim_gate_layer_scans_total of the push's regslim process, scans run as blob uploads completed (at upload) and in the manifest PUT; a layer whose scan is stored (same digest and scan parameters, also from before a restart) is not scanned again."
results=$(printf '%s\n\n%s\n\n%s\n\n%s\n\n%s' "$target" "$table" "$cpu" "$scan" "$notes")
echo
echo "$results"
echo "machine: $machine"
echo "versions: $versions"
# the run goes at the end of the section "## Pushes through the gate (bench/push.sh)" (before the
# next "## " heading); without that section, the section and the run are appended to the file
if [ "${BENCH_NO_DOC:-0}" != 1 ]; then
	run=$REGSLIM_LAB/doc-run.md
	printf '#### %s (bench/push.sh)\n\nMachine: %s. Versions: %s.\n\n%s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" \
		"$machine" "$versions" "$results" > "$run"
	awk -v runf="$run" -v h="$SECTION" '
		function emit(  l) { while ((getline l < runf) > 0) print l; close(runf); done = 1 }
		$0 == h { in_s = 1; print; next }
		in_s && !done && /^## / { emit(); in_s = 0 }
		{ print }
		END {
			if (!done && in_s) { print ""; emit() }
			else if (!done) { print ""; print h; print ""; emit() }
		}' "$DOC" > "$DOC.push-tmp" && mv "$DOC.push-tmp" "$DOC"
	echo "added to $DOC (section \"$SECTION\")"
fi
[ -z "$FAILED" ] || die "failed:$FAILED"
