# lib.sh - shared helpers for regslim's integration tests (tests/integration/test_*.sh).
#
# A test sources this file, then typically:
#
#   . "$(dirname "$0")/lib.sh"
#   lab_setup                 # own $REGSLIM_LAB, EXIT trap, clients.sh sourced
#   upstream_start            # plain docker-registry on 127.0.0.1:$LAB_PORT_BASE + tiny/multi fixtures
#   start_regslim             # regslim on 127.0.0.1:$((LAB_PORT_BASE + 50)), MIRROR set to it
#   check "name" some_command args...
#   finish                    # prints "N passed, N failed", exits 1 on any failure
#
# Environment (set by ctest; defaults for runs by hand):
#   REGSLIM_BIN      the binary        (default: $top/build/proxy/regslim, else the newest
#                                       $top/build*/proxy/regslim)
#   RS_LAB_DIR       the test lab's scripts: $top/tests/lab (registry.sh, fixtures.sh, clients.sh,
#                    logproxy.py ...; see tests/lab/README.md), always this checkout's own
#   LAB_PORT_BASE    first port        (default 18000); regslim listens on BASE+50,
#                    more instances (regslim_spawn) on BASE+51..59; helper daemons (lab_spawn)
#                    on BASE+60..79; clients.sh: logging proxy BASE+80, FALLBACK BASE+99
#   KEEP_LAB=1       stop everything at exit but keep $REGSLIM_LAB (logs) for a post-mortem
#   HTTP_TIMEOUT     seconds per curl call (default 30)
#   PULL_TIMEOUT     seconds per client pull (clients.sh; lib.sh default 90)
#   RS_TEST_TIMEOUT  watchdog: after this many seconds (600) the test FAILs `watchdog`, prints its
#                    closing line and tears the lab down (before ctest's own 900 s kill, which
#                    would leave the lab's daemons running)
#
# Output contract: one line per check, `PASS name`, `FAIL name: why` or `SKIP name: why`, then
# the closing line `N passed, N failed` alone on a line. Every wait and call is bounded in time.
# Function names are stable: other test files depend on them.

set -o pipefail

RS_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC2034 # for the tests: the directory of lib.sh
RS_TEST_DIR=$RS_TOP/tests/integration
RS_LAB_DIR=$RS_TOP/tests/lab
if [ -z "${REGSLIM_BIN:-}" ]; then
	REGSLIM_BIN=$RS_TOP/build/proxy/regslim
	if [ ! -x "$REGSLIM_BIN" ]; then
		REGSLIM_BIN=$(ls -t "$RS_TOP"/build*/proxy/regslim 2> /dev/null | head -n 1)
		REGSLIM_BIN=${REGSLIM_BIN:-$RS_TOP/build/proxy/regslim}
	fi
fi
export REGSLIM_BIN RS_LAB_DIR
export LAB_PORT_BASE=${LAB_PORT_BASE:-18000}
export PULL_TIMEOUT=${PULL_TIMEOUT:-90}
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-600}
HTTP_TIMEOUT=${HTTP_TIMEOUT:-30}

# Accept values clients send for manifests (skopeo/podman's list, one header each).
RS_ACCEPT_ALL=(
	-H "Accept: application/vnd.oci.image.manifest.v1+json"
	-H "Accept: application/vnd.docker.distribution.manifest.v2+json"
	-H "Accept: application/vnd.docker.distribution.manifest.list.v2+json"
	-H "Accept: application/vnd.oci.image.index.v1+json"
)

RS_PASSED=0
RS_FAILED=0
RS_SKIPPED=0
RS_EXIT_HOOKS=()
RS_T0=$(date +%s)

# ---------------------------------------------------------------- results

# pass NAME: record and print `PASS NAME`.
pass() { RS_PASSED=$((RS_PASSED + 1)); echo "PASS $1"; }

# fail NAME WHY...: record and print `FAIL NAME: WHY` (always returns 1, so `... || fail` chains).
fail() {
	local n=$1
	shift
	RS_FAILED=$((RS_FAILED + 1))
	echo "FAIL $n: $*"
	return 1
}

# skip NAME WHY...: print `SKIP NAME: WHY` (not counted as passed or failed). Only for a client
# that cannot run on this machine at all (see client_usable), never for a regslim failure.
skip() {
	local n=$1
	shift
	RS_SKIPPED=$((RS_SKIPPED + 1))
	echo "SKIP $n: $*"
}

# check NAME CMD [ARGS...]: run CMD (output kept in $LOGS/check-<n>.log); PASS when it exits 0,
# else FAIL with the exit code and the last line of its output. Returns CMD's status.
check() {
	local n=$1 out rc=0
	shift
	out=$REGSLIM_LAB/logs/check-$((RS_PASSED + RS_FAILED + 1)).log
	"$@" > "$out" 2>&1 || rc=$?
	if [ $rc -eq 0 ]; then
		pass "$n"
	else
		fail "$n" "exit $rc: $(tail -n 3 "$out" | tr '\n' ' ' | cut -c1-400) (log $out)"
	fi
	return $rc
}

# expect_eq NAME GOT WANT: PASS when the two strings are equal, else FAIL showing both.
expect_eq() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got '$2', expected '$3'"; fi
}

# expect_ne NAME GOT UNWANTED: PASS when GOT differs from UNWANTED (and is not empty).
expect_ne() {
	if [ -n "$2" ] && [ "$2" != "$3" ]; then pass "$1"; else fail "$1" "got '$2', expected something other than '$3'"; fi
}

# expect_ge NAME GOT MIN: PASS when the number GOT >= MIN.
expect_ge() {
	if awk -v a="$2" -v b="$3" 'BEGIN { exit !(a != "" && a + 0 >= b + 0) }'; then
		pass "$1"
	else
		fail "$1" "got '$2', expected >= $3"
	fi
}

# finish: stop every regslim instance (SIGTERM), FAIL `sanitizer` when a regslim log holds an
# ASan/LSan/UBSan report (sanitizer builds), print the closing line `N passed, N failed` and exit 1
# when anything failed (or when nothing was checked at all), 0 otherwise. The EXIT trap then
# tears the lab down.
finish() {
	local f n
	for f in "$REGSLIM_LAB"/run/regslim-*.pid; do
		[ -e "$f" ] || continue
		n=$(basename "$f" .pid)
		lab_stop "$n" > /dev/null 2>&1
	done
	for f in "$REGSLIM_LAB"/logs/regslim-*.log; do
		[ -e "$f" ] || continue
		if grep -qE 'ERROR: (Address|Leak|Thread|Memory)Sanitizer|\.[ch]:[0-9]+:[0-9]+: runtime error:' "$f"; then
			fail sanitizer "report in $f: $(grep -m 1 -E 'Sanitizer|runtime error:' "$f" | cut -c1-200)"
			grep -m 1 -A 15 -E 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$f" | sed 's/^/    | /'
		fi
	done
	echo "# $(basename "$0"): $(($(date +%s) - RS_T0)) s, $RS_SKIPPED skipped"
	echo "$RS_PASSED passed, $RS_FAILED failed"
	if [ "$RS_FAILED" -gt 0 ] || [ $((RS_PASSED + RS_FAILED)) -eq 0 ]; then exit 1; fi
	exit 0
}

# log_tail FILE [N]: the last N (10) lines of FILE, indented, on stdout (for diagnostics).
log_tail() { tail -n "${2:-10}" "$1" 2> /dev/null | sed 's/^/    | /'; }

# ---------------------------------------------------------------- lab

# PY: the system python first, like the lab's scripts.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

# expect NAME CONDITION WHY: PASS when the shell CONDITION (eval'd) holds, else FAIL NAME: WHY
expect() { if eval "$2" > /dev/null 2>&1; then pass "$1"; else fail "$1" "$3"; fi; }

# lab_setup: create REGSLIM_LAB=/tmp/rs-XXXXXX (exported, with the lab's marker), set LOGS,
# install the EXIT trap (lab_teardown), and source clients.sh (its functions: skopeo_pull,
# podman_pull, ctr_pull, docker_pull, lpodman, lctr, ldocker, *_clean, logproxy_*...).
# Fails the test (exit 1) when REGSLIM_BIN or the lab's clients.sh is missing.
lab_setup() {
	if [ ! -f "$RS_LAB_DIR/clients.sh" ]; then
		echo "FAIL setup: the test lab $RS_LAB_DIR has no clients.sh"; echo "0 passed, 1 failed"; exit 1
	fi
	if [ ! -x "$REGSLIM_BIN" ]; then
		echo "FAIL setup: REGSLIM_BIN=$REGSLIM_BIN is not an executable"; echo "0 passed, 1 failed"; exit 1
	fi
	REGSLIM_LAB=$(mktemp -d /tmp/rs-XXXXXX) || exit 1
	export REGSLIM_LAB
	LOGS=$REGSLIM_LAB/logs
	mkdir -p "$LOGS" "$REGSLIM_LAB/run" "$REGSLIM_LAB/tmp"
	touch "$REGSLIM_LAB/.regslim-lab"
	trap lab_teardown EXIT
	trap 'exit 130' INT TERM
	trap _lab_watchdog_fired USR1
	(
		for ((i = 0; i < RS_TEST_TIMEOUT; i++)); do
			sleep 1
			kill -0 $$ 2> /dev/null || exit 0
		done
		kill -USR1 $$ 2> /dev/null
	) > /dev/null 2>&1 < /dev/null &
	RS_WATCHDOG=$!
	# shellcheck source=/dev/null
	. "$RS_LAB_DIR/clients.sh"
	echo "# lab $REGSLIM_LAB, ports $LAB_PORT_BASE.., regslim $REGSLIM_BIN"
}

# lab_setup_s3 NAME: lab_setup for a test of the s3 store, then S3TOOL (S3TOOL_BIN, else the
# s3tool of REGSLIM_BIN's build tree; a failed check and the end of the test when it is not there)
# and the test's work directory W=$REGSLIM_LAB/NAME. Also defines sha FILE (its sha256 hex),
# ms (milliseconds now) and bucket_keys PREFIX (the bucket's keys under PREFIX, one a line).
lab_setup_s3() {
	S3TOOL=${S3TOOL_BIN:-$(dirname "$(dirname "$REGSLIM_BIN")")/tests/s3tool}
	lab_setup
	if [ ! -x "$S3TOOL" ]; then
		fail setup "S3TOOL_BIN=$S3TOOL is not an executable (build the s3tool target)"
		finish
	fi
	W=$REGSLIM_LAB/$1
	mkdir -p "$W"
}
sha() { sha256sum < "$1" | cut -d' ' -f1; }
ms() { date +%s%3N; }
bucket_keys() { timeout 60 "$S3TOOL" list "$1" < /dev/null 2> "$W/list.err" | awk '{print $1}'; }

# _lab_watchdog_fired: (USR1 trap) the test ran over RS_TEST_TIMEOUT: FAIL, closing line, exit 1.
_lab_watchdog_fired() {
	RS_WATCHDOG=
	fail watchdog "the test ran over $RS_TEST_TIMEOUT s (RS_TEST_TIMEOUT); giving up"
	echo "$RS_PASSED passed, $RS_FAILED failed"
	exit 1
}

# lab_on_exit CMD...: run CMD (eval'd) at exit, before the lab is torn down.
lab_on_exit() { RS_EXIT_HOOKS+=("$*"); }

# lab_teardown: (EXIT trap) run lab_on_exit hooks, stop every regslim and lab_spawn daemon by
# PID, then `clients.sh teardown` (clients, registries, delete $REGSLIM_LAB), bounded by timeout.
# With KEEP_LAB=1 everything is stopped but the directory is kept.
lab_teardown() {
	local h f rc=$?
	trap - EXIT
	trap '' USR1
	[ -z "${RS_WATCHDOG:-}" ] || kill "$RS_WATCHDOG" 2> /dev/null
	for h in "${RS_EXIT_HOOKS[@]}"; do eval "$h" > /dev/null 2>&1 || true; done
	[ -n "${REGSLIM_LAB:-}" ] && [ -d "$REGSLIM_LAB/run" ] || exit $rc
	for f in "$REGSLIM_LAB"/run/regslim-*.pid "$REGSLIM_LAB"/run/aux-*.pid; do
		[ -e "$f" ] || continue
		f=$(basename "$f" .pid)
		lab_stop "$f" > /dev/null 2>&1
	done
	if [ "${KEEP_LAB:-0}" = 1 ]; then
		timeout 120 bash "$RS_LAB_DIR/clients.sh" stop_all > /dev/null 2>&1
		timeout 60 bash "$RS_LAB_DIR/registry.sh" stop all > /dev/null 2>&1
		echo "# kept $REGSLIM_LAB"
	else
		timeout 180 bash "$RS_LAB_DIR/clients.sh" teardown > /dev/null 2>&1 \
			|| echo "# teardown of $REGSLIM_LAB did not finish cleanly"
	fi
	exit $rc
}

# lab_spawn NAME LOG CMD...: start a helper daemon in the background (stdout+stderr to LOG), its
# PID in $REGSLIM_LAB/run/NAME.pid; stopped by lab_stop NAME or at exit (NAME must start with
# "aux-" or "regslim-" to be stopped at exit). Prints nothing; returns 1 if it died at once.
lab_spawn() {
	local name=$1 log=$2 pid
	shift 2
	"$@" >> "$log" 2>&1 < /dev/null &
	pid=$!
	echo "$pid" > "$REGSLIM_LAB/run/$name.pid"
	sleep 0.1
	kill -0 "$pid" 2> /dev/null
}

# lab_pid NAME: the PID recorded for NAME (empty if none).
lab_pid() { cat "$REGSLIM_LAB/run/$1.pid" 2> /dev/null; }

# lab_alive NAME: NAME's recorded PID runs (and is not a zombie).
lab_alive() {
	local pid
	pid=$(lab_pid "$1")
	[ -n "$pid" ] && kill -0 "$pid" 2> /dev/null \
		&& [ "$(sed 's/.*) //' "/proc/$pid/stat" 2> /dev/null | cut -c1)" != Z ]
}

# lab_stop NAME [TIMEOUT_S]: SIGTERM NAME's PID, SIGKILL after TIMEOUT_S (15), reap it.
# Returns the process's exit status when it was our child (else 0).
lab_stop() {
	local name=$1 t=${2:-15} pid i rc=0
	pid=$(lab_pid "$name")
	[ -n "$pid" ] || return 0
	if lab_alive "$name"; then
		kill -TERM "$pid" 2> /dev/null
		for ((i = 0; i < t * 10; i++)); do lab_alive "$name" || break; sleep 0.1; done
		if lab_alive "$name"; then
			kill -KILL "$pid" 2> /dev/null
			echo "lab_stop: $name (pid $pid) ignored SIGTERM for $t s, killed" >&2
			rc=137
		fi
	fi
	local st=0
	wait "$pid" 2> /dev/null || st=$?
	# 127: not our child (started by another shell), status unknown
	if [ $rc -eq 0 ] && [ $st -ne 127 ]; then rc=$st; fi
	rm -f "$REGSLIM_LAB/run/$name.pid"
	return $rc
}

# wait_port PORT [TIMEOUT_S]: wait until something listens on 127.0.0.1:PORT (default 10 s).
wait_port() {
	local i
	for ((i = 0; i < ${2:-10} * 10; i++)); do
		(: <> "/dev/tcp/127.0.0.1/$1") 2> /dev/null && return 0
		sleep 0.1
	done
	return 1
}

# upstream_start [plain|auth|token|all] [FIXTURES]: start the registry (default plain) and push
# the fixtures (default tiny-only; "none" pushes nothing), then set REG_PLAIN, REG_AUTH,
# REG_TOKEN, LOGPROXY, LAB_USER, LAB_PASS ... (registry.sh env). Exits the test on failure.
upstream_start() {
	local what=${1:-plain} fx=${2:-tiny-only}
	if ! timeout 120 bash "$RS_LAB_DIR/registry.sh" start "$what" > "$LOGS/upstream-start.log" 2>&1; then
		fail "upstream_start" "registry.sh start $what failed:"; log_tail "$LOGS/upstream-start.log"; finish
	fi
	if [ "$fx" != none ] && ! timeout 300 bash "$RS_LAB_DIR/fixtures.sh" "$fx" > "$LOGS/fixtures.log" 2>&1; then
		fail "upstream_start" "fixtures.sh $fx failed:"; log_tail "$LOGS/fixtures.log"; finish
	fi
	eval "$(bash "$RS_LAB_DIR/registry.sh" env)"
	REG_LOG=$LOGS/registry-${REG_PLAIN##*:}.log
	REG_DATA=$REGSLIM_LAB/registry/data-${REG_PLAIN##*:}
}

# upstream_also auth|token: after upstream_start, start one more registry of the lab (its
# fixtures are pushed there only when it runs while fixtures.sh pushes) and read the environment
# again. Exits the test (FAIL upstream_<name>_start) on failure.
upstream_also() {
	if ! timeout 120 bash "$RS_LAB_DIR/registry.sh" start "$1" > "$LOGS/upstream-$1.log" 2>&1; then
		fail "upstream_$1_start" "$(tail -n 2 "$LOGS/upstream-$1.log")"
		finish
	fi
	eval "$(bash "$RS_LAB_DIR/registry.sh" env)"
}

# upstream_stop [plain|auth|token|all]: stop a registry (its storage stays).
upstream_stop() { timeout 60 bash "$RS_LAB_DIR/registry.sh" stop "${1:-plain}" > /dev/null 2>&1; }

# upstream_restart [plain|...]: start it again on the same port and storage.
upstream_restart() { timeout 60 bash "$RS_LAB_DIR/registry.sh" start "${1:-plain}" > /dev/null 2>&1; }

# ---------------------------------------------------------------- regslim

# regslim_spawn NAME PORT UPSTREAM_URL DATA_DIR [EXTRA SERVE ARGS...]: start
# `regslim serve --listen 127.0.0.1:PORT [--upstream URL] --data-dir DIR [--no-optimize] EXTRA...`
# (--no-optimize unless RS_OPTIMIZE=1; no --upstream
# when UPSTREAM_URL is ""), log (stderr+stdout) appended to $LOGS/regslim-NAME.log, PID in
# run/regslim-NAME.pid; waits up to 20 s for GET /healthz = 200. Returns 1 (log tail on stderr)
# when it does not come up.
regslim_spawn() {
	local name=$1 port=$2 up=$3 data=$4 i code=
	shift 4
	local args=(serve --listen "127.0.0.1:$port" --data-dir "$data")
	[ -z "$up" ] || args+=(--upstream "$up")
	# Optimization of docker.io pulls is on by default in regslim; these tests compare digests
	# with the upstream's, so they run a plain mirror unless RS_OPTIMIZE=1 (test_optimized_pull).
	[ "${RS_OPTIMIZE:-0}" = 1 ] || args+=(--no-optimize)
	echo "# $(date -u +%T) $REGSLIM_BIN ${args[*]} $*" >> "$LOGS/regslim-$name.log"
	lab_spawn "regslim-$name" "$LOGS/regslim-$name.log" "$REGSLIM_BIN" "${args[@]}" "$@"
	for ((i = 0; i < 100; i++)); do
		lab_alive "regslim-$name" || break
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/healthz") || true
		[ "$code" = 200 ] && return 0
		sleep 0.2
	done
	echo "regslim $name did not come up on 127.0.0.1:$port (last /healthz code '$code'):" >&2
	log_tail "$LOGS/regslim-$name.log" >&2
	lab_stop "regslim-$name" 2 > /dev/null 2>&1
	return 1
}

# start_regslim [EXTRA SERVE ARGS...]: the main instance: regslim_spawn main RS_PORT
# (BASE+50) RS_UPSTREAM (http://$REG_PLAIN) RS_DATA ($REGSLIM_LAB/rs) EXTRA...; sets
# RS_LOG, RS_URL=http://127.0.0.1:RS_PORT and MIRROR=127.0.0.1:RS_PORT (used by clients.sh).
# The args are remembered for restart_regslim. On failure: FAIL start_regslim and finish.
start_regslim() {
	RS_PORT=${RS_PORT:-$((LAB_PORT_BASE + 50))}
	RS_UPSTREAM=${RS_UPSTREAM-http://$REG_PLAIN}
	RS_DATA=${RS_DATA:-$REGSLIM_LAB/rs}
	RS_LOG=$LOGS/regslim-main.log
	RS_ARGS=("$@")
	if ! regslim_spawn main "$RS_PORT" "$RS_UPSTREAM" "$RS_DATA" "$@" 2> "$LOGS/start-regslim.err"; then
		fail start_regslim "$(head -n 1 "$LOGS/start-regslim.err")"; log_tail "$RS_LOG"; finish
	fi
	RS_URL=http://127.0.0.1:$RS_PORT
	MIRROR=127.0.0.1:$RS_PORT
	export MIRROR
}

# stop_regslim: SIGTERM the main instance and wait for it (SIGKILL after 15 s). Returns its exit
# status (0 = graceful shutdown).
stop_regslim() { lab_stop regslim-main 15; }

# restart_regslim [EXTRA SERVE ARGS...]: stop the main instance and start it again with the same
# port, upstream and data dir (and the given args, default the previous ones).
restart_regslim() {
	stop_regslim
	if [ $# -gt 0 ]; then start_regslim "$@"; else start_regslim "${RS_ARGS[@]}"; fi
}

# regslim_log_has REGEX [LOG]: regslim's log (default the main instance's) has a line matching
# the extended regex.
regslim_log_has() { grep -Eq -- "$1" "${2:-$RS_LOG}"; }

# ---------------------------------------------------------------- HTTP

# rs_curl ARGS...: curl -sS with --max-time HTTP_TIMEOUT (plus ARGS).
rs_curl() { curl -sS --max-time "$HTTP_TIMEOUT" "$@"; }

# http_code URL [CURL ARGS...]: the HTTP status of a GET (000 when no answer); body discarded.
http_code() {
	local u=$1
	shift
	curl -s -o /dev/null -w '%{http_code}' --max-time "$HTTP_TIMEOUT" "$@" "$u" || true
}

# http_get URL [CURL ARGS...]: the body of a GET on stdout; fails on HTTP >= 400 or no answer.
http_get() {
	local u=$1
	shift
	curl -sS -f --max-time "$HTTP_TIMEOUT" "$@" "$u"
}

# http_head URL [CURL ARGS...]: the response headers of a HEAD (CRs removed) on stdout.
http_head() {
	local u=$1
	shift
	curl -sS -I --max-time "$HTTP_TIMEOUT" "$@" "$u" | tr -d '\r'
}

# http_header URL NAME [CURL ARGS...]: the value of response header NAME of a HEAD request
# (case-insensitive name, last occurrence; empty if absent). Use -X GET in ARGS for a GET.
http_header() {
	local u=$1 n=$2
	shift 2
	curl -sS -o /dev/null -D - --max-time "$HTTP_TIMEOUT" -I "$@" "$u" | header_value "$n"
}

# header_value NAME: from response headers on stdin (e.g. http_head's output), the value of
# header NAME (case-insensitive, last occurrence; empty if absent).
header_value() {
	tr -d '\r' | awk -v n="$1" 'BEGIN { n = tolower(n) } { i = index($0, ":"); if (i && tolower(substr($0, 1, i - 1)) == n) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v) } } END { print v }'
}

# A chunked upload through regslim, with the caller's AUTH array (e.g. AUTH=(-H "Authorization:
# Bearer ...")). upload_start REPO: POST, prints the upload's Location; upload_patch LOCATION FILE:
# one PATCH of FILE, prints the next Location; upload_finish LOCATION DIGEST: the final PUT (no
# body), prints its status.
upload_start() { rs_curl -o /dev/null -D - -X POST "${AUTH[@]}" "$RS_URL/v2/$1/blobs/uploads/" | header_value Location; }
upload_patch() {
	rs_curl -o /dev/null -D - -X PATCH "${AUTH[@]}" -H "Content-Type: application/octet-stream" \
		--data-binary "@$2" "$RS_URL$1" | header_value Location
}
upload_finish() {
	local sep='?'
	case $1 in *\?*) sep='&' ;; esac
	rs_curl -o /dev/null -w '%{http_code}' -X PUT "${AUTH[@]}" "$RS_URL$1${sep}digest=$2"
}

# ---------------------------------------------------------------- metrics

# metric NAME [LABELS] [URL]: the value of Prometheus metric NAME from regslim's /metrics
# (default $RS_URL/metrics), summed over every series whose label set contains all the given
# labels (LABELS like 'kind="blob"' or 'route="blob",status="200"'). Prints 0 when no series
# matches; prints nothing and returns 1 when /metrics cannot be read.
metric() {
	local name=$1 labels=${2:-} url=${3:-$RS_URL/metrics} body
	body=$(curl -sS -f --max-time "$HTTP_TIMEOUT" "$url") || return 1
	printf '%s\n' "$body" | awk -v name="$name" -v want="$labels" '
		BEGIN { n = split(want, w, ","); s = 0 }
		/^#/ || NF < 2 { next }
		{
			key = $1; lab = ""
			i = index(key, "{")
			if (i) { lab = substr($0, i + 1); j = index(lab, "}"); lab = substr(lab, 1, j - 1); key = substr(key, 1, i - 1) }
			if (key != name) next
			for (k = 1; k <= n; k++) if (w[k] != "" && index("," lab ",", "," w[k] ",") == 0) next
			v = $NF; if (i) { t = $0; sub(/.*\}[ \t]*/, "", t); split(t, tv, /[ \t]+/); v = tv[1] }
			s += v
		}
		END { if (s == int(s)) printf "%d\n", s; else print s }'
}

# ---------------------------------------------------------------- upstream access log

# upstream_mark [LOG]: remember the current length of the registry log (default $REG_LOG);
# upstream_count then counts only lines written after the mark.
upstream_mark() { RS_UP_MARK=$(wc -l < "${1:-$REG_LOG}"); }

# upstream_count METHOD PATH_REGEX [UA_REGEX] [LOG]: the number of access-log lines of the
# upstream registry (default $REG_LOG, after upstream_mark if called) whose request is
# `METHOD <uri>` with the URI matching PATH_REGEX (ERE; anchor with ^ / $, the query included),
# and whose User-Agent matches UA_REGEX (default: any).
upstream_count() {
	local m=$1 re=$2 ua=${3:-} log=${4:-$REG_LOG}
	# regexes through the environment: awk -v would eat their backslashes
	tail -n +"$((${RS_UP_MARK:-0} + 1))" "$log" | RS_M=$m RS_RE=$re RS_UA=$ua awk '
		BEGIN { m = ENVIRON["RS_M"]; re = ENVIRON["RS_RE"]; ua = ENVIRON["RS_UA"] }
		# 127.0.0.1 - - [date] "GET /v2/... HTTP/1.1" 200 123 "" "user agent"
		match($0, /"[A-Z]+ [^ ]+ HTTP\/[0-9.]+"/) {
			split(substr($0, RSTART + 1, RLENGTH - 2), r, " ")
			if (r[1] != m || r[2] !~ re) next
			if (ua != "") { u = $0; sub(/.*"[^"]*" "/, "", u); sub(/"$/, "", u); if (u !~ ua) next }
			c++
		}
		END { print c + 0 }'
}

# upstream_requests [LOG]: every access-log request line after the mark, as `METHOD URI STATUS UA`.
upstream_requests() {
	tail -n +"$((${RS_UP_MARK:-0} + 1))" "${1:-$REG_LOG}" | awk '
		match($0, /"[A-Z]+ [^ ]+ HTTP\/[0-9.]+" [0-9]+/) {
			split(substr($0, RSTART + 1, RLENGTH - 1), r, " "); u = $0; sub(/.*"[^"]*" "/, "", u); sub(/"$/, "", u)
			print r[1], r[2], r[4], u
		}'
}

# ---------------------------------------------------------------- digests and manifests

# sha256_of FILE: `sha256:<hex>` of a file's bytes.
sha256_of() { echo "sha256:$(sha256sum < "$1" | cut -d' ' -f1)"; }

# manifest_get HOSTPORT REPO REF [CURL ARGS...]: the manifest bytes (GET with the OCI + docker
# v2s2 + list + index Accept headers) from http://HOSTPORT on stdout; fails on HTTP >= 400.
manifest_get() {
	local hp=$1 repo=$2 ref=$3
	shift 3
	http_get "http://$hp/v2/$repo/manifests/$ref" "${RS_ACCEPT_ALL[@]}" "$@"
}

# manifest_digest HOSTPORT REPO REF [CURL ARGS...]: the Docker-Content-Digest of a HEAD with the
# same Accept headers (empty if absent).
manifest_digest() {
	local hp=$1 repo=$2 ref=$3
	shift 3
	http_header "http://$hp/v2/$repo/manifests/$ref" Docker-Content-Digest "${RS_ACCEPT_ALL[@]}" "$@"
}

# manifest_blobs FILE: the digests a manifest FILE references (config, then layers), one per line;
# for an index or list: the platform manifests' digests.
manifest_blobs() { jq -r '(.config.digest // empty), ((.layers // [])[] | .digest), ((.manifests // [])[] | .digest)' "$1"; }

# index_platform_digest FILE OS/ARCH: from an index/list FILE, the digest of the manifest for a
# platform (e.g. linux/arm64); empty if none.
index_platform_digest() {
	jq -r --arg os "${2%%/*}" --arg arch "${2#*/}" \
		'[.manifests[] | select(.platform.os == $os and .platform.architecture == $arch) | .digest][0] // empty' "$1"
}

# image_blobs HOSTPORT REPO REF [PLATFORM]: every digest pulling REPO:REF fetches for PLATFORM
# (default linux/amd64), one per line: [index,] manifest, config, layers. Fails when unreadable.
image_blobs() {
	local hp=$1 repo=$2 ref=$3 plat=${4:-linux/amd64} f d
	f=$(mktemp "$REGSLIM_LAB/tmp/mf.XXXXXX")
	manifest_get "$hp" "$repo" "$ref" > "$f" || { rm -f "$f"; return 1; }
	if jq -e '.manifests' "$f" > /dev/null 2>&1; then
		sha256_of "$f"
		d=$(index_platform_digest "$f" "$plat")
		[ -n "$d" ] || { rm -f "$f"; return 1; }
		manifest_get "$hp" "$repo" "$d" > "$f" || { rm -f "$f"; return 1; }
	fi
	sha256_of "$f"
	manifest_blobs "$f"
	rm -f "$f"
}

# blob_digest_ok HOSTPORT REPO DIGEST: GET the blob and check its bytes hash to DIGEST.
blob_digest_ok() {
	local got
	got=$(curl -sS -f --max-time "$HTTP_TIMEOUT" "http://$1/v2/$2/blobs/$3" | sha256sum | cut -d' ' -f1) || return 1
	[ "sha256:$got" = "$3" ] || { echo "blob $3 from $1 hashes to sha256:$got"; return 1; }
}

# store_blob_path DIGEST [DATA_DIR]: where regslim keeps a blob (default data dir $RS_DATA).
store_blob_path() { local h=${1#sha256:}; echo "${2:-$RS_DATA}/blobs/sha256/${h:0:2}/$h"; }

# store_has_blob DIGEST [DATA_DIR]: regslim's store holds DIGEST (file present anywhere under
# blobs/ with that hex name) and its bytes hash to DIGEST.
store_has_blob() {
	local h=${1#sha256:} f
	f=$(find "${2:-$RS_DATA}/blobs" -name "$h" -type f 2> /dev/null | head -n 1)
	[ -n "$f" ] && [ "$(sha256sum < "$f" | cut -d' ' -f1)" = "$h" ]
}

# store_find_blob DIGEST [DATA_DIR]: every file under DATA_DIR (blobs/ and elsewhere except tmp/
# and the repository links under links/ and push/links/, which name digests without holding
# bytes) whose name contains DIGEST's hex; one path per line (none expected after a bad upstream).
store_find_blob() {
	local h=${1#sha256:} d=${2:-$RS_DATA}
	find "$d" \( -path "$d/tmp" -o -path "$d/links" -o -path "$d/push/links" \) -prune -o -name "*$h*" -print 2> /dev/null
}

# store_tmp_files [DATA_DIR]: files left in DATA_DIR/tmp, one per line.
store_tmp_files() { find "${1:-$RS_DATA}/tmp" -type f 2> /dev/null; }

# registry_blob_path DIGEST: the blob's data file in the plain registry's storage.
registry_blob_path() {
	local h=${1#sha256:}
	echo "$REG_DATA/docker/registry/v2/blobs/sha256/${h:0:2}/$h/data"
}

# ---------------------------------------------------------------- unpacked trees

# tree_list REF OUT [SKOPEO COPY ARGS...]: unpack image REF (oci:DIR:TAG, docker://...) with umoci
# (clients.sh umoci_rootfs; ARGS e.g. --src-creds U:P, --override-arch arm64) in a scratch directory
# and write its rootfs_list listing (path type mode uid gid size nlink sha256|target xattrs) to OUT.
# Fails, with umoci's or skopeo's complaint on stderr, when it cannot.
tree_list() {
	local ref=$1 out=$2 d rc=0
	shift 2
	d=$(mktemp -d "$REGSLIM_LAB/tmp/tree.XXXXXX") || return 1
	umoci_rootfs "$ref" "$d/b" "$@" && rootfs_list "$d/b/rootfs" > "$out" || rc=1
	rm -rf "$d"
	return $rc
}

# tree_diff_minus ORIG_LIST OPT_LIST DROP_ERE: the diff (stdout) of two tree_list listings after
# dropping from both every entry whose whole path matches the ERE DROP_ERE (the paths an optimizer
# strips, and their directories); status 0 when the rest is identical.
tree_diff_minus() {
	diff <(grep -v -E "^($3)[[:space:]]" "$1") <(grep -v -E "^($3)[[:space:]]" "$2")
}

# expect_tree_minus NAME ORIG_REF OPT_REF DROP_ERE GONE_ERE OUT [SKOPEO COPY ARGS...]: unpack both
# images (tree_list, ARGS for both: skopeo ignores --src-creds for oci:) into the listings OUT.orig
# and OUT.opt; PASS NAME when they are identical apart from the paths matching DROP_ERE and
# OPT_REF has no path matching GONE_ERE (what must have been stripped), else FAIL with the diff.
expect_tree_minus() {
	local n=$1 orig=$2 opt=$3 drop=$4 gone=$5 out=$6
	shift 6
	if ! tree_list "$orig" "$out.orig" "$@" 2> "$out.orig.err" || ! tree_list "$opt" "$out.opt" "$@" 2> "$out.opt.err"; then
		fail "$n" "umoci: $(tail -n 3 "$out.orig.err" "$out.opt.err" 2> /dev/null | tr '\n' ' ')"
	elif [ ! -s "$out.orig" ]; then
		fail "$n" "$orig unpacked to an empty tree"
	elif ! tree_diff_minus "$out.orig" "$out.opt" "$drop" > "$out.diff"; then
		fail "$n" "trees differ: $(head -n 5 "$out.diff" | tr '\n' ' ')"
	elif grep -q -E "^($gone)[[:space:]]" "$out.opt"; then
		fail "$n" "not stripped: $(grep -E "^($gone)[[:space:]]" "$out.opt" | cut -f1 | head -n 3 | tr '\n' ' ')"
	else
		pass "$n"
	fi
}

# ---------------------------------------------------------------- clients

# client_usable CLIENT: whether CLIENT (skopeo|podman|ctr|docker) can pull at all on this machine,
# checked once per test by pulling lab/tiny:latest DIRECTLY from the plain registry (no regslim
# involved). Sets RS_CLIENT_WHY to the reason (the end of the client's log) when it cannot. A test
# then prints SKIP for that client's checks; failures through regslim are never skipped.
# Call it first while the upstream is healthy (the answer is cached for the rest of the test).
declare -A RS_CLIENT_STATE=()
client_usable() {
	local c=$1 out=$LOGS/usable-$1.log rc=0 d
	RS_CLIENT_WHY=
	if [ -n "${RS_CLIENT_STATE[$c]:-}" ]; then
		[ "${RS_CLIENT_STATE[$c]}" = ok ] && return 0
		RS_CLIENT_WHY=${RS_CLIENT_STATE[$c]}
		return 1
	fi
	case $c in
		skopeo)
			d=$REGSLIM_LAB/pulls/usable-skopeo
			skopeo_pull "docker://$REG_PLAIN/lab/tiny:latest" "dir:$d" > "$out" 2>&1 || rc=$?
			rm -rf "$d" ;;
		podman) podman_pull -q "$REG_PLAIN/lab/tiny:latest" > "$out" 2>&1 || rc=$?
			[ $rc -ne 0 ] || lpodman rmi -f "$REG_PLAIN/lab/tiny:latest" >> "$out" 2>&1 ;;
		ctr) { containerd_start && ctr_pull "$REG_PLAIN/lab/tiny:latest" --plain-http; } > "$out" 2>&1 || rc=$?
			[ $rc -ne 0 ] || lctr images rm --sync "$REG_PLAIN/lab/tiny:latest" >> "$out" 2>&1 ;;
		docker) { dockerd_start && docker_pull "$REG_PLAIN/lab/tiny:latest"; } > "$out" 2>&1 || rc=$?
			if [ $rc -ne 0 ] && [ -f "$LOGS/dockerd.log" ]; then
				echo "--- dockerd.log:" >> "$out"
				grep -Ei 'level=(error|fatal)|failed' "$LOGS/dockerd.log" | tail -n 2 >> "$out"
			fi
			[ $rc -ne 0 ] || ldocker rmi -f "$REG_PLAIN/lab/tiny:latest" >> "$out" 2>&1 ;;
		*) RS_CLIENT_WHY="unknown client $c"; return 1 ;;
	esac
	if [ $rc -eq 0 ]; then
		RS_CLIENT_STATE[$c]=ok
		return 0
	fi
	RS_CLIENT_WHY="$c cannot pull directly from the upstream here (exit $rc): $(grep -v '^\s*$' "$out" | tail -n 2 | tr '\n' ' ' | cut -c1-300)"
	RS_CLIENT_STATE[$c]=$RS_CLIENT_WHY
	return 1
}
