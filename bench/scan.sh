#!/bin/bash
# bench/scan.sh: the push gate's secret scanner (optimizer/scan.c) on the big
# fixture's four layers, this tree's scan.c against another revision's
# (BASE, default HEAD~1... any git revision that has optimizer/scan.c with the
# same API), with `igzip -d` of the same layers as the inflate floor:
#   raw     the content scanner alone over the uncompressed layers (one
#           stream, all detectors on), best of ROUNDS, MB/s;
#   layers  scan_layer_fd as the gate runs it (inflate + digest + tar walk +
#           scanner, ELF exemption on) and without the secret scan, seconds;
#           the findings of the default policy are printed (none expected).
# Usage: bench/scan.sh   (env: BASE=<git rev>, REGSLIM_LAB, ROUNDS=3; the lab: tests/lab).
#        Prints only; the numbers go into docs/performance.md by hand.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
T=$ROOT/tests/lab
export REGSLIM_LAB=${REGSLIM_LAB:-${TMPDIR:-/tmp}/regslim-lab}
ROUNDS=${ROUNDS:-3}
BASE=${BASE:-HEAD~1}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rs-scan-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ ! -f "$REGSLIM_LAB/fixtures/oci/big/index.json" ]; then
	echo "building the big fixture (fixtures.sh big)..." >&2
	timeout 3600 "$T/fixtures.sh" big >&2
fi

SRCS=(optimizer/stream.c optimizer/decompress.c optimizer/compress.c optimizer/digest.c optimizer/tar_read.c
	optimizer/tar_sparse.c optimizer/strip.c optimizer/handoff.c optimizer/pgzip.c config/errors.c)
build() { # $1: output, $2: scan.c
	(cd "$ROOT" && cc -O2 -std=c11 -D_GNU_SOURCE -DREGSLIM_HAVE_ISAL=1 -Iconfig -Ioptimizer -o "$1" \
		bench/scan_bench.c "$2" "${SRCS[@]}" -lisal -lz -lzstd -ldeflate -lcrypto -lpthread)
}
git -C "$ROOT" show "$BASE:optimizer/scan.c" > "$WORK/scan_base.c"
build "$WORK/new" "$ROOT/optimizer/scan.c"
build "$WORK/base" "$WORK/scan_base.c"

LAYERS=()
TARS=()
for n in 1 2 3 4; do
	p=$(timeout 60 "$T/fixtures.sh" layer big "$n" 2>/dev/null) || break
	LAYERS+=("$p")
	igzip -dc "$p" > "$WORK/layer$n.tar"
	TARS+=("$WORK/layer$n.tar")
done
[ ${#LAYERS[@]} -gt 0 ] || { echo "no layers found" >&2; exit 1; }
bytes=$(cat "${TARS[@]}" | wc -c)

best_igzip=""
for _ in $(seq "$ROUNDS"); do
	s=$(date +%s.%N)
	for l in "${LAYERS[@]}"; do igzip -dc "$l" > /dev/null; done
	e=$(date +%s.%N)
	best_igzip=$(echo "$s $e $best_igzip" | awk '{d=$2-$1; if ($3=="" || d<$3) print d; else print $3}')
done
echo "uncompressed bytes: $bytes in ${#LAYERS[@]} layers"
echo "igzip -d (inflate floor): $best_igzip s, $(echo "$bytes $best_igzip" | awk '{printf "%.0f", $1/1e6/$2}') MB/s"
for v in base new; do
	echo "== $v ($([ $v = base ] && echo "$BASE" || echo "this tree"))"
	"$WORK/$v" raw "$ROUNDS" "${TARS[@]}" | awk '{printf "raw scanner: %.3f s, %.1f MB/s, %d findings\n", $4, $5, $3}'
	"$WORK/$v" layers "${LAYERS[@]}" | awk '/^total/ {printf "layers: with secrets %.3f s, without %.3f s, scanner %.3f s = %.0f MB/s, %d findings\n", $5, $6, $5-$6, $2/1e6/($5-$6), $4} /^finding/'
done
