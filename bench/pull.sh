#!/usr/bin/env bash
# pull.sh: pulls of the big fixture (library/big:latest, docker v2s2, 4 gzip layers, ~226 MB) by
# real clients (skopeo copy to dir:, podman, containerd's ctr, dockerd 20.10), in one run, each
# measured three ways:
#   direct  the client's docker.io mirror is Debian's docker-registry itself (no regslim);
#   cold    the mirror is a fresh regslim (empty data dir, optimization on, its default): the
#           first pull, upstream fetch and optimization included;
#   warm    the same regslim again after the client's local image store was emptied: the cached
#           optimization result and blobs are served.
# Per pull: wall time, bytes sent to the client (direct: the registry's access log; through
# regslim: deltas of regslim_client_bytes_total), the variant served (regslim's
# regslim_variant_served_total / regslim_optimize_fallbacks_total deltas), the optimization time
# (regslim_optimization_seconds_sum delta) and the bytes regslim fetched from the upstream. After
# the warm pull, the same manifest and blobs are fetched with curl (the client's User-Agent,
# sequentially) from regslim and from the registry: the transfer alone, so that
# pull - transfer approximates the client's own work (decompress, unpack, store).
# Prints a table, the ratios regslim / direct and the targets of issue 4 and of issue 16 (the gzip
# variant's cold optimization, served to docker 20.10, at most 1.5x the zstd variant's) (met / not met), and
# adds them with the date, machine and versions at the end of the section "Pulls of optimized
# images (bench/pull.sh)" of docs/performance.md (BENCH_NO_DOC=1: don't).
# It never fails on timing: it exits non-zero only when something does not work (a server does
# not start, a pull fails).
#
# Env: REGSLIM_BIN (default build/proxy/regslim), LAB_PORT_BASE (21000; registry BASE+0, regslim
#      BASE+50), CLIENTS ("skopeo podman ctr docker"), PULL_TIMEOUT (600 s per pull),
#      FIXTURES_FROM (a lab directory whose fixtures/oci/{big,big-zstd} layouts are copied instead
#      of building them; default: build with tests/lab/fixtures.sh, ~2-3 min, root),
#      BENCH_NO_DOC=1, KEEP_LAB=1 (keep the lab directory).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T=$top/tests/lab
REGSLIM_BIN=${REGSLIM_BIN:-$top/build/proxy/regslim}
export LAB_PORT_BASE=${LAB_PORT_BASE:-21000}
export PULL_TIMEOUT=${PULL_TIMEOUT:-600}
CLIENTS=${CLIENTS:-skopeo podman ctr docker}
DOC=$top/docs/performance.md
SECTION="## Pulls of optimized images (bench/pull.sh)"
# shellcheck source=lib.sh
. "$top/bench/lib.sh"
IMG=library/big:latest
ACCEPTS=(-H 'Accept: application/vnd.oci.image.manifest.v1+json'
	-H 'Accept: application/vnd.docker.distribution.manifest.v2+json'
	-H 'Accept: application/vnd.oci.image.index.v1+json'
	-H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json')

die() { echo "pull.sh: $*" >&2; exit 1; }
[ -x "$REGSLIM_BIN" ] || die "REGSLIM_BIN=$REGSLIM_BIN is not executable (build it first: cmake --build build --target regslim)"
[ -f "$T/clients.sh" ] || die "no clients.sh in $T (the test lab is part of the checkout)"
for c in $CLIENTS; do
	case $c in skopeo | podman | ctr | docker) ;; *) die "unknown client '$c' in CLIENTS (skopeo podman ctr docker)" ;; esac
done
command -v jq > /dev/null || die "jq is missing (Debian package jq)"

REGSLIM_LAB=$(mktemp -d /tmp/rs-pb-XXXXXX)
export REGSLIM_LAB
touch "$REGSLIM_LAB/.regslim-lab"
LOGS=$REGSLIM_LAB/logs
mkdir -p "$LOGS" "$REGSLIM_LAB/pulls"
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
cleanup() {
	stop_regslim
	if [ "${KEEP_LAB:-0}" = 1 ]; then
		timeout 120 bash "$T/clients.sh" stop_all > /dev/null 2>&1 || true
		timeout 60 bash "$T/registry.sh" stop all > /dev/null 2>&1 || true
		echo "kept $REGSLIM_LAB"
	else
		timeout 180 bash "$T/clients.sh" teardown > /dev/null 2>&1 || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

REG=127.0.0.1:$LAB_PORT_BASE
RS=127.0.0.1:$((LAB_PORT_BASE + 50))
REGLOG=$LOGS/registry-$LAB_PORT_BASE.log
cl() { timeout "$((PULL_TIMEOUT + 60))" bash "$T/clients.sh" "$@"; }

echo "== set-up (lab $REGSLIM_LAB)"
timeout 120 bash "$T/registry.sh" start plain > "$LOGS/registry-start.log" 2>&1 || { cat "$LOGS/registry-start.log"; die "registry did not start"; }
if [ -n "${FIXTURES_FROM:-}" ]; then
	mkdir -p "$REGSLIM_LAB/fixtures/oci"
	for l in big big-zstd; do
		[ -f "$FIXTURES_FROM/fixtures/oci/$l/index.json" ] || die "no $FIXTURES_FROM/fixtures/oci/$l layout (FIXTURES_FROM)"
		cp -al "$FIXTURES_FROM/fixtures/oci/$l" "$REGSLIM_LAB/fixtures/oci/" 2> /dev/null ||
			cp -a "$FIXTURES_FROM/fixtures/oci/$l" "$REGSLIM_LAB/fixtures/oci/"
	done
fi
timeout 1800 bash "$T/fixtures.sh" big > "$LOGS/fixtures-build.log" 2>&1 || { tail "$LOGS/fixtures-build.log"; die "building the big fixture failed"; }
timeout 900 bash "$T/fixtures.sh" push big > "$LOGS/fixtures-push.log" 2>&1 || { tail "$LOGS/fixtures-push.log"; die "pushing the big fixture failed"; }
up_digest=$(curl -sI --max-time 30 -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
	"http://$REG/v2/library/big/manifests/latest" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
up_size=$(curl -s --max-time 30 -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
	"http://$REG/v2/library/big/manifests/latest" | jq '[.layers[].size] | add')
if [ -z "$up_digest" ] || [ -z "$up_size" ]; then die "the registry does not serve $IMG"; fi
echo "   $IMG = $up_digest, layers $up_size bytes (gzip)"
for c in $CLIENTS; do
	case $c in
	ctr) cl containerd_start > "$LOGS/containerd-start.log" 2>&1 || { cat "$LOGS/containerd-start.log"; die "containerd did not start"; } ;;
	docker) MIRROR=$REG cl dockerd_start > "$LOGS/dockerd-start.log" 2>&1 || { cat "$LOGS/dockerd-start.log"; die "dockerd did not start"; } ;;
	esac
done

start_regslim() { # DATA_DIR: a fresh regslim on $RS, default configuration (optimization on)
	rm -rf "$1"
	"$REGSLIM_BIN" serve --listen "$RS" --upstream "http://$REG" --data-dir "$1" >> "$LOGS/regslim.log" 2>&1 < /dev/null &
	RS_PID=$!
	local i
	for ((i = 0; i < 100; i++)); do
		[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$RS/healthz" || true)" = 200 ] && return 0
		kill -0 "$RS_PID" 2> /dev/null || break
		sleep 0.2
	done
	tail "$LOGS/regslim.log"
	die "regslim did not start"
}
metrics() { curl -s --max-time 10 "http://$RS/metrics" | grep -v '^#' || true; }
# mdelta BEFORE AFTER NAME_REGEX: sum over the matching series of (after - before)
mdelta() {
	awk -v re="$3" 'NR==FNR { if ($1 ~ re) b[$1] = $2; next } $1 ~ re { d += $2 - b[$1] } END { printf "%.6f", d + 0 }' "$1" "$2"
}
# variant BEFORE AFTER: the variants served (regslim_variant_served_total grew), as "zstd (containers)",
# plus the original when a fallback was counted
variant() {
	local v fb
	v=$(mchanged "$1" "$2" regslim_variant_served_total | sed -E 's/family=([^,;]*),variant=([^;]*)/\2 (\1)/g')
	fb=$(mchanged "$1" "$2" regslim_optimize_fallbacks_total | sed 's/reason=//g')
	[ -z "$fb" ] || v="${v:+$v; }original (fallback: $fb)"
	echo "${v:-?}"
}
# mchanged BEFORE AFTER PREFIX: the series with PREFIX that grew, as label sets, comma-joined
mchanged() {
	awk -v p="$3" 'NR==FNR { b[$1] = $2; next } index($1, p) == 1 && $2 > b[$1] {
		s = substr($1, length(p) + 1); gsub(/[{}"]/, "", s); out = out (out ? "; " : "") s } END { print out }' "$1" "$2"
}
reglines() { wc -l < "$REGLOG"; }
# regbytes FROM_LINE: body bytes the registry sent (access log lines after FROM_LINE)
regbytes() { tail -n "+$(($1 + 1))" "$REGLOG" | awk '$1 ~ /^[0-9.]+$/ && $10 ~ /^[0-9]+$/ { s += $10 } END { print s + 0 }'; }
# reg_ua FROM_LINE: the User-Agent of the last access log line after FROM_LINE
reg_ua() { tail -n "+$(($1 + 1))" "$REGLOG" | awk -F'"' '$0 ~ /^[0-9.]+ - / { ua = $(NF - 1) } END { print ua }'; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# clean CLIENT: empty the client's local store (and its dir: destination)
clean() {
	case $1 in
	skopeo) rm -rf "$REGSLIM_LAB/pulls/skopeo" ;;
	podman) cl podman_clean ;;
	ctr)
		cl ctr_clean || return 1
		if [ -n "$(cl lctr content ls -q)" ]; then echo "containerd's content store is not empty after ctr_clean" >&2; return 1; fi ;;
	docker) cl docker_clean ;;
	esac
}
# pull CLIENT MIRROR NAME: the timed pull; sets P_MS (or empty on failure)
pull() {
	local c=$1 m=$2 name=$3 t0 rc=0
	[ "$c" != docker ] || MIRROR=$m cl dockerd_start > /dev/null 2>&1 || die "dockerd did not restart with MIRROR=$m"
	clean "$c" > "$LOGS/clean-$name.log" 2>&1 || die "cleaning $c's store failed (log $LOGS/clean-$name.log)"
	sync
	t0=$(now_ms)
	case $c in
	skopeo) MIRROR=$m cl skopeo_pull "docker://$m/$IMG" "dir:$REGSLIM_LAB/pulls/skopeo" > "$LOGS/pull-$name.log" 2>&1 || rc=$? ;;
	podman) MIRROR=$m cl podman_pull "docker.io/$IMG" > "$LOGS/pull-$name.log" 2>&1 || rc=$? ;;
	ctr) MIRROR=$m cl ctr_pull "docker.io/$IMG" > "$LOGS/pull-$name.log" 2>&1 || rc=$? ;;
	docker) MIRROR=$m cl docker_pull "$IMG" > "$LOGS/pull-$name.log" 2>&1 || rc=$? ;;
	esac
	P_MS=$(($(now_ms) - t0))
	if [ $rc -ne 0 ]; then
		echo "   $name: FAILED (exit $rc), log $LOGS/pull-$name.log:" >&2
		tail -n 5 "$LOGS/pull-$name.log" | sed 's/^/      /' >&2
		P_MS=
		FAILED="$FAILED $name"
	fi
	sleep 0.5 # let the access log and counters settle
}
# fetch HOST UA: GET the tag's manifest as a client with UA would, then its config and layers
# (sequentially, to /dev/null); sets F_MS and F_BYTES
fetch() {
	local host=$1 ua=$2 man=$REGSLIM_LAB/fetch-manifest.json t0 d n b
	t0=$(now_ms)
	curl -s -f --max-time 60 -A "$ua" "${ACCEPTS[@]}" -o "$man" "http://$host/v2/library/big/manifests/latest" || { F_MS='' F_BYTES=''; return 0; }
	b=$(stat -c %s "$man")
	for d in $(jq -r '.config.digest, .layers[].digest' "$man"); do
		n=$(curl -s -f --max-time "$PULL_TIMEOUT" -A "$ua" -o /dev/null -w '%{size_download}' "http://$host/v2/library/big/blobs/$d") || { F_MS='' F_BYTES=''; return 0; }
		b=$((b + n))
	done
	F_MS=$(($(now_ms) - t0)) F_BYTES=$b
}
sec() { [ -n "$1" ] && awk -v m="$1" 'BEGIN{printf "%.1f", m / 1000}' || echo failed; }
mb() { [ -n "$1" ] && awk -v b="$1" 'BEGIN{printf "%.1f", b / 1e6}' || echo -; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (a != "" && b > 0) printf "%.2f", a / b; else print "n/a"}'; }
# met VALUE LIMIT: "met" when VALUE <= LIMIT
met() { awk -v v="$1" -v l="$2" 'BEGIN{if (v == "n/a" || v == "") print "n/a"; else if (v + 0 <= l + 0) print "met"; else print "**not met**"}'; }

FAILED='' REPORTS=''
declare -A D_MS D_B C_MS C_B C_UP C_OPT C_VAR W_MS W_B W_VAR W_UP FD_MS FD_B FW_MS FW_B UA
for c in $CLIENTS; do
	echo "== $c: direct from docker-registry"
	l0=$(reglines)
	pull "$c" "$REG" "$c-direct"
	D_MS[$c]=$P_MS D_B[$c]=$(regbytes "$l0") UA[$c]=$(reg_ua "$l0")
	echo "   $(sec "${D_MS[$c]}") s, $(mb "${D_B[$c]}") MB (UA: ${UA[$c]})"

	echo "== $c: through a fresh regslim (cold, optimization included)"
	stop_regslim
	start_regslim "$REGSLIM_LAB/rs-$c"
	metrics > "$LOGS/m-$c-0"
	l0=$(reglines)
	pull "$c" "$RS" "$c-cold"
	metrics > "$LOGS/m-$c-1"
	C_MS[$c]=$P_MS C_UP[$c]=$(regbytes "$l0")
	C_B[$c]=$(mdelta "$LOGS/m-$c-0" "$LOGS/m-$c-1" '^regslim_client_bytes_total$')
	C_OPT[$c]=$(mdelta "$LOGS/m-$c-0" "$LOGS/m-$c-1" '^regslim_optimization_seconds_sum$')
	C_VAR[$c]=$(variant "$LOGS/m-$c-0" "$LOGS/m-$c-1")
	echo "   $(sec "${C_MS[$c]}") s, $(mb "${C_B[$c]%.*}") MB, optimization $(printf '%.1f' "${C_OPT[$c]}") s, served: ${C_VAR[$c]}"

	echo "== $c: through the same regslim again (warm)"
	l0=$(reglines)
	pull "$c" "$RS" "$c-warm"
	metrics > "$LOGS/m-$c-2"
	W_MS[$c]=$P_MS W_UP[$c]=$(regbytes "$l0")
	W_B[$c]=$(mdelta "$LOGS/m-$c-1" "$LOGS/m-$c-2" '^regslim_client_bytes_total$')
	W_VAR[$c]=$(variant "$LOGS/m-$c-1" "$LOGS/m-$c-2")
	echo "   $(sec "${W_MS[$c]}") s, $(mb "${W_B[$c]%.*}") MB, served: ${W_VAR[$c]}"

	echo "== $c: transfer only (curl with the client's User-Agent: manifest, config, layers, sequentially)"
	fetch "$REG" "${UA[$c]:-curl}"
	FD_MS[$c]=$F_MS FD_B[$c]=$F_BYTES
	fetch "$RS" "${UA[$c]:-curl}"
	FW_MS[$c]=$F_MS FW_B[$c]=$F_BYTES
	# what the client got, from the optimization report of the manifest regslim served
	od=sha256:$(sha256sum < "$REGSLIM_LAB/fetch-manifest.json" | cut -d' ' -f1)
	if curl -s -f --max-time 30 -o "$LOGS/report-$c.json" "http://$RS/regslim/v1/reports/library/big/$od"; then
		rep=$(jq -r '"\(.policy.compression): squash \(.policy.squash), \(.images[0].layers | map(.output_layer) | unique | length) layer(s), \(.totals.size_after / 1e6 * 10 | round / 10) MB compressed, \(.totals.uncompressed_after / 1e6 * 10 | round / 10) MB uncompressed (original \(.totals.uncompressed_before / 1e6 * 10 | round / 10) MB)"' "$LOGS/report-$c.json" 2> /dev/null) || rep=
		[ -z "$rep" ] || REPORTS="$REPORTS${REPORTS:+; }$rep"
	fi
	echo "   registry $(sec "${FD_MS[$c]}") s $(mb "${FD_B[$c]}") MB; regslim $(sec "${FW_MS[$c]}") s $(mb "${FW_B[$c]}") MB"
	stop_regslim
	clean "$c" > /dev/null 2>&1 || true
done

# client-side work: pull minus transfer alone (approximate: the client overlaps both)
client_s() { [ -n "$1" ] && [ -n "$2" ] && awk -v p="$1" -v f="$2" 'BEGIN{printf "%.1f", (p - f) / 1000}' || echo -; }
table=$(
	printf '| client | pull | variant served | wall s | to client MB | time / direct | bytes / direct | regslim fetched from upstream MB | optimization s | transfer alone (curl) s | pull - transfer s |\n'
	printf '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
	for c in $CLIENTS; do
		cb=${C_B[$c]%.*} wb=${W_B[$c]%.*}
		printf '| %s | direct | original (gzip) | %s | %s | | | | | %s | %s |\n' "$c" "$(sec "${D_MS[$c]}")" "$(mb "${D_B[$c]}")" \
			"$(sec "${FD_MS[$c]}")" "$(client_s "${D_MS[$c]}" "${FD_MS[$c]}")"
		printf '| %s | regslim cold | %s | %s | %s | %s | %s | %s | %.1f | | |\n' "$c" "${C_VAR[$c]}" "$(sec "${C_MS[$c]}")" "$(mb "$cb")" \
			"$(ratio "${C_MS[$c]}" "${D_MS[$c]}")" "$(ratio "$cb" "${D_B[$c]}")" "$(mb "${C_UP[$c]}")" "${C_OPT[$c]}"
		printf '| %s | regslim warm | %s | %s | %s | %s | %s | %s | | %s | %s |\n' "$c" "${W_VAR[$c]}" "$(sec "${W_MS[$c]}")" "$(mb "$wb")" \
			"$(ratio "${W_MS[$c]}" "${D_MS[$c]}")" "$(ratio "$wb" "${D_B[$c]}")" "$(mb "${W_UP[$c]}")" \
			"$(sec "${FW_MS[$c]}")" "$(client_s "${W_MS[$c]}" "${FW_MS[$c]}")"
	done
)
targets=$(
	printf '| target | client | value | |\n| --- | --- | ---: | --- |\n'
	for c in $CLIENTS; do
		[ "$c" != skopeo ] || continue
		r=$(ratio "${W_MS[$c]}" "${D_MS[$c]}")
		printf '| warm time <= 0.7x direct (issue 4) | %s | %s | %s |\n' "$c" "$r" "$(met "$r" 0.7)"
		r=$(ratio "${W_B[$c]%.*}" "${D_B[$c]}")
		printf '| warm bytes <= 50%% of direct (issue 4) | %s | %s | %s |\n' "$c" "$r" "$(met "$r" 0.5)"
	done
	case " $CLIENTS " in *" docker "*)
		r=$(ratio "${C_MS[docker]}" "${D_MS[docker]}")
		printf '| cold time <= 1.3x direct (issue 4) | docker | %s | %s |\n' "$r" "$(met "$r" 1.3)" ;;
	esac
	# the gzip variant's cold optimization against the zstd variant's (the quickest zstd client's)
	gz= gzc= zs= zsc=
	for c in $CLIENTS; do
		case ${C_VAR[$c]} in
			*gzip*) gz=${C_OPT[$c]} gzc=$c ;;
			*zstd*) if [ -z "$zs" ] || awk -v a="${C_OPT[$c]}" -v b="$zs" 'BEGIN{exit !(a < b)}'; then zs=${C_OPT[$c]} zsc=$c; fi ;;
		esac
	done
	if [ -n "$gz" ] && [ -n "$zs" ]; then
		r=$(ratio "$gz" "$zs")
		printf '| gzip variant optimization <= 1.5x the zstd variant'"'"'s (issue 16) | %s vs %s | %s | %s |\n' "$gzc" "$zsc" "$r" "$(met "$r" 1.5)"
	fi
)
# shellcheck disable=SC2016 # the backquotes are Markdown
notes="Image: $IMG = $up_digest, 4 gzip layers of $(mb "$up_size") MB. MB = 10^6 bytes. Bytes to the client: direct from the registry's access log, through regslim from regslim_client_bytes_total (manifests included). Optimization s: regslim_optimization_seconds_sum during the cold pull. Optimized images (reports): $(printf '%s\n' "$REPORTS" | tr ';' '\n' | sed 's/^ //' | sort -u | paste -sd';' | sed 's/;/; /g'). User-Agents: $(for c in $CLIENTS; do printf '%s `%s`\n' "$c" "${UA[$c]}"; done | paste -sd';' | sed 's/;/; /g')."
[ -z "$FAILED" ] || notes="$notes FAILED pulls:$FAILED (logs kept only with KEEP_LAB=1)."
machine="$(nproc) cores, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), $(awk '/^MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
v_rs=$("$REGSLIM_BIN" version 2> /dev/null | awk '{print $2}') || true
v_reg=$(docker-registry --version 2> /dev/null | awk '{print $3}') || true
v_sk=$(skopeo --version 2> /dev/null | awk '{print $3}') || true
v_pm=$(podman --version 2> /dev/null | awk '{print $3}') || true
v_ct=$(containerd --version 2> /dev/null | awk '{print $3}') || true
v_dk=$(dockerd --version 2> /dev/null | awk '{print $3}' | tr -d ,) || true
versions="regslim ${v_rs:-?}, docker-registry ${v_reg:-?}, skopeo ${v_sk:-?}, podman ${v_pm:-?} (vfs), containerd ${v_ct:-?} (native snapshotter), dockerd ${v_dk:-?} (vfs)"
echo
echo "$table"
echo
echo "$targets"
echo
echo "$notes"
echo "machine: $machine"
echo "versions: $versions"
# the run goes at the end of the section "## Pulls of optimized images (bench/pull.sh)" (before the
# next "## " heading); without that section, the section and the run are appended to the file
if [ "${BENCH_NO_DOC:-0}" != 1 ]; then
	run=$REGSLIM_LAB/doc-run.md
	{
		echo "#### $(date -u '+%Y-%m-%d %H:%M UTC') (bench/pull.sh)"
		echo
		echo "Machine: $machine. Versions: $versions."
		echo
		echo "$table"
		echo
		echo "$targets"
		echo
		echo "$notes"
		echo
	} > "$run"
	bench_doc_append "$DOC" "$SECTION" "$run"
	echo "added to $DOC (section \"$SECTION\")"
fi
[ -z "$FAILED" ] || die "pulls failed:$FAILED"
