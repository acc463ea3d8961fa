#!/bin/bash
# bench/codec.sh: gzip inflate, zlib vs isa-l, on the big fixture's layers,
# through regslim's own decoder stage (optimizer/decompress.c), with the
# igzip and gzip CLIs as reference; then gzip -> zstd -3 recompression through
# regslim's stages vs `igzip -d | zstd -3 -T2` (the codec floor).
# Usage: bench/codec.sh   (env: REGSLIM_LAB, ROUNDS=3, THREADS=2)
# Needs the big fixture (built by tests/lab/fixtures.sh big if missing).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
T=$ROOT/tests/lab
export REGSLIM_LAB=${REGSLIM_LAB:-${TMPDIR:-/tmp}/regslim-lab}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rs-codec-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ ! -f "$REGSLIM_LAB/fixtures/oci/big/index.json" ]; then
	echo "building the big fixture (fixtures.sh big)..." >&2
	timeout 3600 "$T/fixtures.sh" big >&2
fi

cc -O2 -std=c11 -D_GNU_SOURCE -DREGSLIM_HAVE_ISAL=1 -I"$ROOT/config" -I"$ROOT/optimizer" \
	-o "$WORK/codec_bench" "$HERE/codec_bench.c" "$ROOT/optimizer/stream.c" \
	"$ROOT/optimizer/decompress.c" "$ROOT/optimizer/compress.c" "$ROOT/optimizer/digest.c" \
	"$ROOT/optimizer/tar_read.c" \
	"$ROOT/config/errors.c" -lisal -lz -lzstd -lcrypto -lpthread

LAYERS=()
for n in 0 1 2 3; do
	p=$(timeout 60 "$T/fixtures.sh" layer big "$n" 2>/dev/null) || break
	LAYERS+=("$p")
done
[ ${#LAYERS[@]} -gt 0 ] || { echo "no layers found" >&2; exit 1; }

# best of ROUNDS wall seconds for a shell command
best() {
	local b=""
	for _ in $(seq "$ROUNDS"); do
		local s e
		s=$(date +%s.%N)
		bash -c "$1" >/dev/null
		e=$(date +%s.%N)
		b=$(echo "$s $e $b" | awk '{d=$2-$1; if ($3=="" || d<$3) print d; else print $3}')
	done
	echo "$b"
}
# best of ROUNDS seconds reported by codec_bench
bestc() {
	local b=""
	for _ in $(seq "$ROUNDS"); do
		local line
		line=$("$WORK/codec_bench" "$@")
		b=$(echo "$line $b" | awk '{if ($5=="" || $4<$5) print $4; else print $5}')
		echo "$line" >"$WORK/last"
	done
	echo "$b"
}

tot_in=0; tot_out=0
declare -A SUM
printf "%-8s %10s %10s | %9s %9s %9s %9s | MB/s of decompressed output\n" layer gzip_MB tar_MB zlib isa-l igzip-cli gzip-cli
for i in "${!LAYERS[@]}"; do
	f=${LAYERS[$i]}
	tz=$(bestc inflate zlib "$f"); read -r cin dout _ _ <"$WORK/last"
	ti=$(bestc inflate isal "$f")
	tic=$(best "igzip -d -c '$f'")
	tgc=$(best "gzip -d -c '$f'")
	mb=$(awk -v b="$dout" 'BEGIN{print b/1e6}')
	printf "%-8s %10.1f %10.1f | %9.0f %9.0f %9.0f %9.0f\n" "$i" "$(awk -v b="$cin" 'BEGIN{print b/1e6}')" "$mb" \
		"$(awk -v m="$mb" -v t="$tz" 'BEGIN{print m/t}')" "$(awk -v m="$mb" -v t="$ti" 'BEGIN{print m/t}')" \
		"$(awk -v m="$mb" -v t="$tic" 'BEGIN{print m/t}')" "$(awk -v m="$mb" -v t="$tgc" 'BEGIN{print m/t}')"
	tot_in=$((tot_in + cin)); tot_out=$((tot_out + dout))
	for k in tz ti tic tgc; do SUM[$k]=$(awk -v a="${SUM[$k]:-0}" -v b="${!k}" 'BEGIN{print a+b}'); done
done
mb=$(awk -v b="$tot_out" 'BEGIN{print b/1e6}')
printf "%-8s %10.1f %10.1f | %9.0f %9.0f %9.0f %9.0f\n" all "$(awk -v b="$tot_in" 'BEGIN{print b/1e6}')" "$mb" \
	"$(awk -v m="$mb" -v t="${SUM[tz]}" 'BEGIN{print m/t}')" "$(awk -v m="$mb" -v t="${SUM[ti]}" 'BEGIN{print m/t}')" \
	"$(awk -v m="$mb" -v t="${SUM[tic]}" 'BEGIN{print m/t}')" "$(awk -v m="$mb" -v t="${SUM[tgc]}" 'BEGIN{print m/t}')"
echo "isa-l / zlib inflate speed: $(awk -v a="${SUM[tz]}" -v b="${SUM[ti]}" 'BEGIN{printf "%.2fx", a/b}')"

echo
tt=0
for f in "${LAYERS[@]}"; do
	t=$(bestc tar isal "$f"); tt=$(awk -v a=$tt -v b="$t" 'BEGIN{print a+b}')
done
printf "gzip (isa-l) -> tar reader, every entry kept and copied: %.2f s, %.0f MB/s of tar\n" "$tt" \
	"$(awk -v m="$mb" -v t="$tt" 'BEGIN{print m/t}')"

echo
echo "gzip -> zstd -3 (T=$THREADS), all layers: seconds and output MB"
rz=0; ri=0; rf=0; oz=0; of=0
for f in "${LAYERS[@]}"; do
	t=$(bestc recompress zlib 3 "$THREADS" "$f"); rz=$(awk -v a=$rz -v b="$t" 'BEGIN{print a+b}')
	t=$(bestc recompress isal 3 "$THREADS" "$f"); ri=$(awk -v a=$ri -v b="$t" 'BEGIN{print a+b}')
	read -r _ _ o _ <"$WORK/last"; oz=$((oz + o))
	t=$(best "igzip -d -c '$f' | zstd -3 -T$THREADS -q -c > '$WORK/floor.zst'"); rf=$(awk -v a=$rf -v b="$t" 'BEGIN{print a+b}')
	of=$((of + $(stat -c %s "$WORK/floor.zst")))
done
printf "regslim stages (zlib inflate):  %6.2f s\n" "$rz"
printf "regslim stages (isa-l inflate): %6.2f s  %7.1f MB\n" "$ri" "$(awk -v b=$oz 'BEGIN{print b/1e6}')"
printf "igzip -d | zstd -3 -T%s:        %6.2f s  %7.1f MB\n" "$THREADS" "$rf" "$(awk -v b=$of 'BEGIN{print b/1e6}')"
