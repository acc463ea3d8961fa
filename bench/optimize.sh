#!/bin/bash
# bench/optimize.sh: `regslim optimize` on the big fixture against its peer and
# the codec floor, in one run, then its memory on a generated 2 GiB layer.
#
#   regslim  regslim optimize (default policy: squash all, strip, zstd -3)  oci: -> oci:
#   gzip     the same with "compression": "gzip", "level": 3: the gzip variant optimized pulls
#            make for clients without zstd (parallel deflate per 1 MiB chunk, libdeflate)
#   skopeo   skopeo copy --dest-compress-format zstd                         oci: -> oci:
#            (the peer: recompression only)
#   floor    igzip -d | zstd -3 -T2 over the same layers (no tar work at all)
#
# For each: wall seconds (best of ROUNDS, the tools' rounds interleaved), MB/s
# of uncompressed input, peak RSS (/usr/bin/time -v, max over the rounds),
# output size; then the ratios the issue targets. Then peak RSS of regslim on a generated image with one
# 256 MiB and one 2 GiB layer (seeded, compressible), which must not grow.
# gzip inflate zlib vs isa-l is measured by bench/codec.sh (the decoder's).
#
# Usage: bench/optimize.sh   env: REGSLIM_LAB (with fixtures/oci/big; built if
#   missing), REGSLIM_BIN, ROUNDS=3, THREADS=2, BIG_LAYER_MIB=2048
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
T=$ROOT/tests/lab
export REGSLIM_LAB=${REGSLIM_LAB:-${TMPDIR:-/tmp}/regslim-lab}
BIN=${REGSLIM_BIN:-$(ls -t "$ROOT"/build*/proxy/regslim 2> /dev/null | head -n 1)}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
BIG_LAYER_MIB=${BIG_LAYER_MIB:-2048}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rs-opt-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
[ -x "$BIN" ] || { echo "no regslim binary (set REGSLIM_BIN)" >&2; exit 1; }
for c in skopeo igzip zstd jq python3 /usr/bin/time; do
	command -v "$c" > /dev/null || { echo "missing $c" >&2; exit 1; }
done
if [ ! -f "$REGSLIM_LAB/fixtures/oci/big/index.json" ]; then
	echo "building the big fixture (fixtures.sh big, 2-3 minutes)..." >&2
	timeout 3600 "$T/fixtures.sh" big >&2
fi
BIG=$REGSLIM_LAB/fixtures/oci/big
MAN=$(jq -r '.manifests[0].digest' "$BIG/index.json")
MAN=$BIG/blobs/sha256/${MAN#sha256:}
LAYERS=()
for d in $(jq -r '.layers[].digest' "$MAN"); do LAYERS+=("$BIG/blobs/sha256/${d#sha256:}"); done
IN_GZ=$(jq '[.layers[].size] | add' "$MAN")
CFG=$(jq -r '.config.digest' "$MAN")
IN_TAR=$(for f in "${LAYERS[@]}"; do igzip -dc < "$f"; done | wc -c)

# run NAME CMD...: one round; keeps the best wall and the max RSS per NAME; the
# output stays in $WORK/NAME. Rounds of the three tools are interleaved so that
# load from other processes hits them alike.
declare -A WALL RSS
run() {
	local name=$1
	shift
	rm -rf "${WORK:?}/$name"
	/usr/bin/time -v -o "$WORK/time.txt" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" || {
		echo "$name failed:" >&2
		tail -5 "$WORK/$name.err" >&2
		exit 1
	}
	local w r
	w=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; print s }' "$WORK/time.txt")
	r=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time.txt")
	if [ -z "${WALL[$name]:-}" ] || awk -v a="$w" -v b="${WALL[$name]}" 'BEGIN { exit !(a < b) }'; then WALL[$name]=$w; fi
	if [ -z "${RSS[$name]:-}" ] || [ "$r" -gt "${RSS[$name]}" ]; then RSS[$name]=$r; fi
}

layout_layers_size() { # LAYOUT -> summed layer sizes of its (single) image manifest
	local m
	m=$(jq -r '.manifests[0].digest' "$1/index.json")
	jq '[.layers[].size] | add' "$1/blobs/sha256/${m#sha256:}"
}

floor() {
	local f
	for f in "${LAYERS[@]}"; do igzip -dc < "$f" | zstd -3 -T"$THREADS" -q -c; done > "$WORK/floor.zst"
}

echo "# big: ${#LAYERS[@]} layers, $IN_TAR bytes uncompressed, $IN_GZ bytes gzip; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# regslim $BIN, threads $THREADS, best of $ROUNDS"
echo '{"compression": "gzip", "level": 3}' > "$WORK/gzip-policy.json"
for _ in $(seq "$ROUNDS"); do
	run regslim "$BIN" optimize --quiet --json --threads "$THREADS" "oci:$BIG:latest" "oci:$WORK/regslim:opt"
	run gzip "$BIN" optimize --quiet --json --threads "$THREADS" --policy "$WORK/gzip-policy.json" \
		"oci:$BIG:latest" "oci:$WORK/gzip:opt"
	run skopeo skopeo copy -q --dest-compress-format zstd "oci:$BIG:latest" "oci:$WORK/skopeo:x"
	run floor bash -c "$(declare -p LAYERS); THREADS=$THREADS WORK=$WORK; $(declare -f floor); floor"
done
OUT_RS=$(jq '.totals.size_after' "$WORK/regslim.out")
OUT_GZ=$(jq '.totals.size_after' "$WORK/gzip.out")
OUT_SK=$(layout_layers_size "$WORK/skopeo")
OUT_FL=$(stat -c %s "$WORK/floor.zst")

mbs() { awk -v b="$IN_TAR" -v s="$1" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }
printf '%-8s %8s %9s %10s %14s\n' tool "wall s" "MB/s" "RSS MiB" "output bytes"
for n in regslim gzip skopeo floor; do
	case $n in regslim) o=$OUT_RS ;; gzip) o=$OUT_GZ ;; skopeo) o=$OUT_SK ;; floor) o=$OUT_FL ;; esac
	printf '%-8s %8.2f %9s %10.1f %14s\n' "$n" "${WALL[$n]}" "$(mbs "${WALL[$n]}")" \
		"$(awk -v k="${RSS[$n]}" 'BEGIN { print k / 1024 }')" "$o"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "speed vs skopeo:        $(ratio "${WALL[skopeo]}" "${WALL[regslim]}")x   (target >= 2.5x)"
echo "time vs codec floor:    $(ratio "${WALL[regslim]}" "${WALL[floor]}")x   (target <= 1.2x)"
echo "peak RSS:               $(awk -v k="${RSS[regslim]}" 'BEGIN { printf "%.1f", k / 1024 }') MiB (target < 128 MiB)"
echo "output vs input gzip:   $(ratio "$OUT_RS" "$IN_GZ")   (target <= 0.50)"
echo "output vs skopeo zstd:  $(ratio "$OUT_RS" "$OUT_SK")   (target <= 0.55)"
echo "gzip variant vs zstd:   $(ratio "${WALL[gzip]}" "${WALL[regslim]}")x time (target <= 1.5x), $(ratio "$OUT_GZ" "$OUT_RS")x size"
jq -r '.images[0] | "report: efficiency \(.efficiency_before) -> \(.efficiency_after), \(.duplicates_dropped) duplicates, \(.whiteouts_applied) whiteouts, \(.stripped_paths | length) paths stripped"' "$WORK/regslim.out"
rm -rf "$WORK/regslim" "$WORK/gzip" "$WORK/skopeo" "$WORK/floor.zst"

# ---------------------------------------------------------------- RSS vs layer size
# gen_layout DIR MIB: an OCI image with one layer of MIB MiB of seeded, compressible
# files (64 MiB each), gzip (igzip -1).
gen_layout() {
	local dir=$1 mib=$2
	mkdir -p "$dir/blobs/sha256"
	python3 - "$mib" << 'EOF' > "$dir/layer.tar"
import random, sys, tarfile, io
mib = int(sys.argv[1])
rng = random.Random(42)
words = [("w%05d" % i).encode() for i in range(5000)]
out = tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT)
chunk = 64 << 20
left = mib << 20
n = 0
while left > 0:
    size = min(chunk, left)
    # a 1 MiB block of words repeated with a per-file seed: compressible, not trivial
    block = b" ".join(rng.choice(words) for _ in range(150000))[: 1 << 20]
    data = (block * (size // len(block) + 1))[:size]
    ti = tarfile.TarInfo("data/file%04d.bin" % n)
    ti.size = size
    ti.mtime = 1700000000
    out.addfile(ti, io.BytesIO(data))
    left -= size
    n += 1
out.close()
EOF
	local diff
	diff=sha256:$(sha256sum < "$dir/layer.tar" | cut -d' ' -f1)
	igzip -1 -c < "$dir/layer.tar" > "$dir/layer.gz"
	rm -f "$dir/layer.tar"
	local ld ls cfg cd cs man md ms
	ld=$(sha256sum < "$dir/layer.gz" | cut -d' ' -f1)
	ls=$(stat -c %s "$dir/layer.gz")
	mv "$dir/layer.gz" "$dir/blobs/sha256/$ld"
	cfg="{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"$diff\"]}}"
	cd=$(printf '%s' "$cfg" | sha256sum | cut -d' ' -f1)
	cs=$(printf '%s' "$cfg" | wc -c)
	printf '%s' "$cfg" > "$dir/blobs/sha256/$cd"
	man="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd\",\"size\":$cs},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$ld\",\"size\":$ls}]}"
	md=$(printf '%s' "$man" | sha256sum | cut -d' ' -f1)
	ms=$(printf '%s' "$man" | wc -c)
	printf '%s' "$man" > "$dir/blobs/sha256/$md"
	echo '{"imageLayoutVersion":"1.0.0"}' > "$dir/oci-layout"
	echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$md\",\"size\":$ms,\"annotations\":{\"org.opencontainers.image.ref.name\":\"latest\"}}]}" > "$dir/index.json"
}

echo "# peak RSS against layer size (one gzip layer of seeded compressible files)"
printf '%-10s %8s %10s\n' "layer MiB" "wall s" "RSS MiB"
for mib in 256 "$BIG_LAYER_MIB"; do
	gen_layout "$WORK/layout$mib" "$mib"
	run "gen$mib" "$BIN" optimize --quiet --threads "$THREADS" "oci:$WORK/layout$mib:latest" "oci:$WORK/gen$mib:x"
	printf '%-10s %8.2f %10.1f\n' "$mib" "${WALL[gen$mib]}" "$(awk -v k="${RSS[gen$mib]}" 'BEGIN { print k / 1024 }')"
	rm -rf "$WORK/layout$mib" "$WORK/gen$mib"
done
