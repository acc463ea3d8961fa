#!/bin/bash
# test_optimize: `regslim optimize` checked against an independent unpacker.
#
# For tiny, every platform of multi, a docker-archive of tiny and (when the
# big fixture is available) big: `umoci unpack` of the input and of the output
# must give the same tree (clients.sh rootfs_list: paths, types, modes,
# owners, sizes, content hashes, link targets, link counts, xattrs, device
# numbers) except exactly the paths the policy strips. The expected stripped
# set is computed here, independently of regslim, by applying the default
# rules' globs (docs/optimizer.md) to the input listing; it must also equal
# the report's list. Also: determinism (two runs, --threads 1 vs 2), squash
# none / keep-base, and bad input (non-zero exit, message naming the layer,
# DST untouched).
#
# The big image comes from the lab RS_FIXTURE_LAB (default
# ${TMPDIR:-/tmp}/regslim-fixtures), built there on first use (fixtures.sh big:
# 2-3 minutes, root, the Debian mirror and npm registry) and reused by later
# runs. RS_SKIP_BIG=1 skips the big checks.
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-600}
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
lab_setup

T=$RS_LAB_DIR
W=$REGSLIM_LAB/opt
mkdir -p "$W"
OCI=$REGSLIM_LAB/fixtures/oci

# ---------------------------------------------------------------- helpers

optimize() { timeout 300 "$REGSLIM_BIN" optimize --quiet "$@"; }

# unpack LAYOUT:TAG DIR [skopeo args]: gzip copy (umoci 0.4.7 cannot read zstd), then umoci unpack.
unpack() {
	local src=$1 dir=$2 tmp
	shift 2
	tmp=$(mktemp -d "$W/u.XXXXXX")
	timeout 300 skopeo copy -q --dest-compress --dest-compress-format gzip "$@" "oci:$src" "oci:$tmp:x" &&
		timeout 300 umoci unpack --image "$tmp:x" "$dir" > /dev/null
	local rc=$?
	rm -rf "$tmp"
	return $rc
}

# listing LAYOUT:TAG OUT [skopeo args]
listing() {
	local d
	d=$(mktemp -d "$W/r.XXXXXX") && rmdir "$d" || return 1
	unpack "$1" "$d" "${@:3}" || return 1
	rootfs_list "$d/rootfs" > "$2"
	local rc=$?
	rm -rf "$d"
	return $rc
}

# expected_stripped LISTING [LOCALES_KEEP...]: the paths the default policy strips,
# computed from the globs in docs/optimizer.md (not from regslim).
expected_stripped() {
	python3 - "$1" << 'EOF'
import fnmatch, sys
rules = [  # name, include globs, keep globs (the defaults; "locales" is off)
    ("apt-lists", ["var/lib/apt/lists/*"], []),
    ("apt-cache", ["var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/cache/apt/archives/partial/*"], []),
    ("apt-dpkg-logs", ["var/log/apt/*", "var/log/dpkg.log*", "var/log/alternatives.log*"], []),
    ("docs", ["usr/share/doc/*"], ["usr/share/doc/**/copyright", "usr/share/doc/**/COPYING*",
                                  "usr/share/doc/**/LICEN[CS]E*", "usr/share/doc/**/NOTICE*"]),
    ("man-pages", ["usr/share/man/*"], []),
    ("info-pages", ["usr/share/info/*"], []),
    ("pip-cache", ["**/.cache/pip"], []),
    ("npm-cache", ["**/.npm/_cacache", "**/.npm/_logs"], []),
    ("yarn-cache", ["**/.cache/yarn", "**/.yarn-cache", "usr/local/share/.cache/yarn"], []),
    ("go-cache", ["**/.cache/go-build", "**/go/pkg/mod/cache"], []),
    ("tmp", ["tmp/*", "var/tmp/*"], []),
    ("pycache", ["**/__pycache__"], []),
]
def match(g, p):
    if not g:
        return not p
    if g[0] == "**":
        return any(match(g[1:], p[i:]) for i in range(len(p) + 1))
    return bool(p) and fnmatch.fnmatchcase(p[0], g[0]) and match(g[1:], p[1:])
def hit(globs, comps):
    # the path or one of its ancestors matches
    return any(match(g.split("/"), comps[:n]) for g in globs for n in range(1, len(comps) + 1))
paths = [l.split("\t")[0] for l in open(sys.argv[1]) if l.strip()]
strip = set()
for p in paths:
    c = p.split("/")
    if any(hit(inc, c) and not hit(keep, c) for _, inc, keep in rules):
        strip.add(p)
# a stripped directory stays when something below it stays
kept_below = set()
for p in paths:
    if p not in strip:
        c = p.split("/")
        for n in range(1, len(c)):
            kept_below.add("/".join(c[:n]))
for p in sorted(strip - kept_below):
    print(p)
EOF
}

# compare IN_LIST OUT_LIST EXPECTED_REMOVED [REPORT_JSON IMAGE_INDEX]
compare() {
	local in=$1 out=$2 exp=$3 rep=${4:-} idx=${5:-0}
	local added removed
	added=$(diff "$in" "$out" | grep -c '^>')
	if [ "$added" -ne 0 ]; then
		echo "output has $added entries the input lacks or changed:"
		diff "$in" "$out" | grep '^[<>]' | head -20
		return 1
	fi
	diff "$in" "$out" | sed -n 's/^< //p' | cut -f1 | sort > "$out.removed"
	sort "$exp" > "$out.expected"
	if ! diff "$out.expected" "$out.removed" > "$out.rdiff"; then
		echo "removed paths differ from the expected stripped set (< expected, > removed):"
		head -20 "$out.rdiff"
		return 1
	fi
	if [ -n "$rep" ]; then
		jq -r ".images[$idx].stripped_paths[][0]" "$rep" | sort > "$out.reported"
		if ! diff "$out.expected" "$out.reported" > "$out.pdiff"; then
			echo "the report's stripped paths differ (< expected, > reported):"
			head -20 "$out.pdiff"
			return 1
		fi
	fi
	echo "$(wc -l < "$in") entries in, $(wc -l < "$out") out, $(wc -l < "$out.removed") stripped"
}

root_digest() { jq -r '.manifests[-1].digest' "$1/index.json"; }

manifest_of() { # LAYOUT [index entry digest] -> manifest JSON on stdout
	local d=${2:-$(root_digest "$1")}
	cat "$1/blobs/sha256/${d#sha256:}"
}

check_oci_manifest() { # LAYOUT MANIFEST_DIGEST NLAYERS
	local m
	m=$(manifest_of "$1" "$2") || return 1
	echo "$m" | jq -e --argjson n "$3" '
		.mediaType == "application/vnd.oci.image.manifest.v1+json" and
		.config.mediaType == "application/vnd.oci.image.config.v1+json" and
		(.layers | length) == $n and
		(.annotations["io.regslim.source.digest"] | startswith("sha256:")) and
		(.annotations["io.regslim.policy.digest"] | startswith("sha256:"))' > /dev/null || {
		echo "unexpected manifest: $m"
		return 1
	}
	# config: diff_ids match the layers, non-empty history entries match the layer count
	local c
	c=$(cat "$1/blobs/sha256/$(echo "$m" | jq -r '.config.digest | ltrimstr("sha256:")')") || return 1
	echo "$c" | jq -e --argjson n "$3" '(.rootfs.diff_ids | length) == $n and
		([.history[]? | select(.empty_layer != true)] | length) == $n' > /dev/null || {
		echo "config does not match the layers: $c"
		return 1
	}
	# every blob exists with its digest
	local d
	for d in $(echo "$m" | jq -r '.config.digest, .layers[].digest'); do
		[ "$(sha256sum < "$1/blobs/sha256/${d#sha256:}" | cut -d' ' -f1)" = "${d#sha256:}" ] || {
			echo "blob $d is missing or corrupt"
			return 1
		}
	done
}

# layout_of DIR TAR...: an OCI layout (tag "latest") whose layers are the given
# tars, bottom first: uncompressed, or gzip'ed (level 6, mtime 0) for gz:TAR.
layout_of() {
	python3 - "$@" << 'PYEOF'
import gzip, hashlib, json, os, sys
out, tars = sys.argv[1], sys.argv[2:]
os.makedirs(out + "/blobs/sha256", exist_ok=True)
def blob(b):
    d = hashlib.sha256(b).hexdigest()
    open("%s/blobs/sha256/%s" % (out, d), "wb").write(b)
    return "sha256:" + d, len(b)
ls, ids = [], []
for t in tars:
    raw = open(t[3:] if t.startswith("gz:") else t, "rb").read()
    if t.startswith("gz:"):
        d, n = blob(gzip.compress(raw, compresslevel=6, mtime=0))
        mt = "application/vnd.oci.image.layer.v1.tar+gzip"
    else:
        d, n = blob(raw)
        mt = "application/vnd.oci.image.layer.v1.tar"
    ls.append({"mediaType": mt, "digest": d, "size": n})
    ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
cfg = {"architecture": "amd64", "os": "linux", "created": "2025-05-20T00:00:00Z", "config": {"Cmd": ["/bin/sh"]},
       "rootfs": {"type": "layers", "diff_ids": ids},
       "history": [{"created": "2025-05-20T00:00:00Z", "created_by": "layer %d" % i} for i in range(len(ids))]}
cd, cs = blob(json.dumps(cfg).encode())
man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": ls}
md, ms = blob(json.dumps(man).encode())
open(out + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
open(out + "/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
     "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
PYEOF
}

# gen_sparse DIR: layers 1-4 each hold a sparse file written by GNU tar in one
# sparse format (old GNU, pax 0.0, 0.1, 1.0) and a hard link to it; layer 5
# rewrites the sparse files, so every link keeps the old inode and must be
# rebuilt from the sparse data. DIR/all holds the five layers, DIR/pax the
# pax ones (2-5): umoci 0.4.7 cannot unpack old GNU 'S' entries, so DIR/all
# is checked against GNU tar's extraction of its layers (DIR/ref).
gen_sparse() {
	local d=$1 i=0 f fmt v args
	mkdir -p "$d/t" "$d/ref"
	for f in gnu:gnu posix:0.0 posix:0.1 posix:1.0; do
		fmt=${f%%:*} v=${f#*:} i=$((i + 1))
		rm -rf "$d/src" && mkdir -p "$d/src/sp" "$d/src/l"
		truncate -s $((300000 + i * 70000)) "$d/src/sp/$v"
		printf 'data in the middle %d' $i | dd of="$d/src/sp/$v" bs=1 seek=$((100000 + i)) conv=notrunc 2> /dev/null
		head -c 20000 /dev/zero | tr '\0' "$i" | dd of="$d/src/sp/$v" bs=1 seek=$((200000 + i * 999)) conv=notrunc 2> /dev/null
		ln "$d/src/sp/$v" "$d/src/l/$v"
		args=(--format="$fmt")
		[ "$fmt" = posix ] && args+=(--sparse-version="$v")
		tar -C "$d/src" -cf "$d/t/$i.tar" --sparse "${args[@]}" --numeric-owner --owner=0 --group=0 \
			--mtime=@1700000000 --no-recursion sp "sp/$v" l "l/$v" || return 1
	done
	python3 - "$d/t/5.tar" << 'PYEOF'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    for v in ("gnu", "0.0", "0.1", "1.0"):
        ti = tarfile.TarInfo("sp/" + v); ti.size = 4; ti.mtime = 1700000000
        t.addfile(ti, io.BytesIO(b"new\n"))
PYEOF
	for i in 1 2 3 4 5; do
		tar -C "$d/ref" -xpf "$d/t/$i.tar" --numeric-owner || return 1
	done
	layout_of "$d/all" "$d"/t/{1,2,3,4,5}.tar && layout_of "$d/pax" "$d"/t/{2,3,4,5}.tar
}

# gen_global DIR: DIR/in, an image whose first layer has a pax global header
# (uid, gid, uname, mtime, an xattr, a comment) half-way and whose second
# layer has none, and DIR/ref, the same image with every layer rewritten by
# Python's tarfile, which applies a global header to the rest of its own
# archive (POSIX pax) and writes plain per-entry pax records. umoci 0.4.7
# cannot unpack a 'g' entry at all, so the output is checked against DIR/ref.
gen_global() {
	python3 - "$1" << 'PYEOF' && layout_of "$1/in" "$1/1.tar" "$1/2.tar" && layout_of "$1/ref" "$1/r1.tar" "$1/r2.tar"
import io, os, sys, tarfile
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
def f(name, data, **kw):
    ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = 1700000000
    for k, v in kw.items(): setattr(ti, k, v)
    return ti, io.BytesIO(data)
bio = io.BytesIO()
t = tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT)
t.addfile(*f("g/before", b"before\n"))
g = tarfile.TarInfo.create_pax_global_header({
    "comment": "a global header", "uid": "1234", "gid": "2345", "uname": "gl", "mtime": "1000.5",
    "SCHILY.xattr.user.global": "from-global"})
t.fileobj.write(g)  # half-way through the archive
t.offset += len(g)
t.addfile(*f("g/after", b"after\n"))
ti, data = f("g/own", b"own\n"); ti.pax_headers = {"uid": "42", "mtime": "1700000000.25"}
t.addfile(ti, data)
t.close()
open(d + "/1.tar", "wb").write(bio.getvalue())
bio = io.BytesIO()
t = tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT)
t.addfile(*f("u/upper", b"upper\n"))
ti, data = f("u/upper-pax", b"upper pax\n"); ti.pax_headers = {"mtime": "1700000001.5"}
t.addfile(ti, data)
t.close()
open(d + "/2.tar", "wb").write(bio.getvalue())
for i in (1, 2):
    src = tarfile.open(d + "/%d.tar" % i)
    out = tarfile.open(d + "/r%d.tar" % i, "w", format=tarfile.PAX_FORMAT)
    for m in src:
        m.pax_headers = {k: v for k, v in m.pax_headers.items() if k != "comment"}
        out.addfile(m, src.extractfile(m) if m.isreg() else None)
    out.close()
PYEOF
}

# listing_mt LAYOUT:TAG OUT: listing plus the mtime (ns) of every regular file
listing_mt() {
	local d
	d=$(mktemp -d "$W/r.XXXXXX") && rmdir "$d" || return 1
	unpack "$1" "$d" || return 1
	{ rootfs_list "$d/rootfs" && (cd "$d/rootfs" && find . -type f -printf 'mtime %P %T@\n' | sort); } > "$2"
	local rc=$?
	rm -rf "$d"
	return $rc
}

# compare_links IN_LIST OUT_LIST EXPECTED_REMOVED: like compare, but a file whose
# hard-link group lost stripped members shows a link count smaller by exactly
# that many; every other difference fails.
compare_links() {
	python3 - "$1" "$2" "$3" << 'PYEOF'
import sys
def load(p):
    return {l.split("\t")[0]: l.rstrip("\n").split("\t") for l in open(p) if l.strip()}
a, b = load(sys.argv[1]), load(sys.argv[2])
exp = set(l.strip() for l in open(sys.argv[3]) if l.strip())
removed = set(a) - set(b)
if removed != exp:
    print("removed %s, expected %s" % (sorted(removed), sorted(exp))); sys.exit(1)
if set(b) - set(a):
    print("new paths: %s" % sorted(set(b) - set(a))); sys.exit(1)
lost = {}  # content hash of a stripped multi-link file -> links removed
for p in removed:
    f = a[p]
    if f[1] == "f" and int(f[6]) > 1:
        lost[f[7]] = lost.get(f[7], 0) + 1
bad = 0
for p in b:
    x, y = a[p], b[p]
    if x == y:
        continue
    if x[:6] == y[:6] and x[7:] == y[7:] and x[1] == "f" and int(y[6]) == int(x[6]) - lost.get(x[7], 0):
        continue
    print("differs:\n  in  %s\n  out %s" % ("\t".join(x), "\t".join(y))); bad += 1
print("%d in, %d out, %d stripped, link groups shrunk by %s" % (len(a), len(b), len(removed), lost))
sys.exit(1 if bad else 0)
PYEOF
}

# ---------------------------------------------------------------- fixtures

if ! timeout 300 bash "$T/fixtures.sh" tiny > "$LOGS/fixtures.log" 2>&1 ||
	! timeout 300 bash "$T/fixtures.sh" multi >> "$LOGS/fixtures.log" 2>&1; then
	fail fixtures "fixtures.sh tiny/multi failed: $(tail -3 "$LOGS/fixtures.log" | tr '\n' ' ')"
	finish
fi

# ---------------------------------------------------------------- tiny

check "tiny: optimize exits 0 with a JSON report" \
	bash -c "$(declare -f optimize); REGSLIM_BIN=$REGSLIM_BIN optimize --json oci:$OCI/tiny:latest oci:$W/tiny:opt > $W/tiny.json && jq -e '.images[0].digest' $W/tiny.json"
check "tiny: one zstd layer, OCI manifest, annotations, config rewritten" \
	bash -c "$(declare -f manifest_of root_digest check_oci_manifest); check_oci_manifest $W/tiny \$(root_digest $W/tiny) 1 &&
		manifest_of $W/tiny | jq -e '.layers[0].mediaType == \"application/vnd.oci.image.layer.v1.tar+zstd\"'"
listing "$OCI/tiny:latest" "$W/tiny-in.lst" || fail "tiny: unpack input" "umoci/skopeo failed"
expected_stripped "$W/tiny-in.lst" > "$W/tiny-exp.lst"
check "tiny: expected stripped set is docs and apt cache" \
	bash -c "[ \"\$(tr '\n' ' ' < $W/tiny-exp.lst)\" = 'usr/share/doc/tiny usr/share/doc/tiny/README var/cache/apt/pkgcache.bin ' ]"
if listing "$W/tiny:opt" "$W/tiny-out.lst"; then
	check "tiny: umoci trees equal except the stripped paths" compare "$W/tiny-in.lst" "$W/tiny-out.lst" "$W/tiny-exp.lst" "$W/tiny.json"
else
	fail "tiny: unpack output" "umoci/skopeo failed"
fi
check "tiny: report counts whiteouts and the identical rewrite" \
	jq -e '.images[0].whiteouts_applied == 2 and .images[0].duplicates_dropped >= 1 and
		(.images[0].rules[] | select(.name == "docs") | .entries) >= 1' "$W/tiny.json"

# determinism: a second run and runs with 1 and 2 threads give the same digests
optimize oci:"$OCI/tiny:latest" oci:"$W/tiny2:opt" > /dev/null 2>&1
optimize --threads 1 oci:"$OCI/tiny:latest" oci:"$W/tiny-t1:opt" > /dev/null 2>&1
optimize --threads 2 oci:"$OCI/tiny:latest" oci:"$W/tiny-t2:opt" > /dev/null 2>&1
check "tiny: deterministic across runs and thread counts" bash -c "
	a=\$(jq -r .manifests[0].digest $W/tiny/index.json); b=\$(jq -r .manifests[0].digest $W/tiny2/index.json)
	c=\$(jq -r .manifests[0].digest $W/tiny-t1/index.json); d=\$(jq -r .manifests[0].digest $W/tiny-t2/index.json)
	echo \$a \$b \$c \$d; [ -n \"\$a\" ] && [ \$a = \$b ] && [ \$a = \$c ] && [ \$a = \$d ]"

# squash none: two layers, same tree minus the stripped paths
cat > "$W/none.json" << 'EOF'
{"squash": "none"}
EOF
if optimize --policy "$W/none.json" --json oci:"$OCI/tiny:latest" oci:"$W/tiny-none:opt" > "$W/tiny-none.json" 2> "$W/tiny-none.err" &&
	listing "$W/tiny-none:opt" "$W/tiny-none.lst"; then
	check "tiny squash none: two layers, trees equal except stripped" bash -c "
		$(declare -f manifest_of root_digest check_oci_manifest compare)
		check_oci_manifest $W/tiny-none \$(root_digest $W/tiny-none) 2 &&
		compare $W/tiny-in.lst $W/tiny-none.lst $W/tiny-exp.lst $W/tiny-none.json"
else
	fail "tiny squash none" "$(cat "$W/tiny-none.err")"
fi

# keep-base with the first layer named: it is copied untouched (same digest, not stripped)
L1=$(manifest_of "$OCI/tiny" | jq -r '.layers[0].digest')
echo "{\"squash\": \"keep-base\", \"base_layers\": [\"$L1\"]}" > "$W/base.json"
if optimize --policy "$W/base.json" --json oci:"$OCI/tiny:latest" oci:"$W/tiny-base:opt" > "$W/tiny-base.json" 2> "$W/tiny-base.err" &&
	listing "$W/tiny-base:opt" "$W/tiny-base.lst"; then
	check "tiny keep-base: base layer copied byte-for-byte" bash -c "
		$(declare -f manifest_of root_digest)
		[ \"\$(manifest_of $W/tiny-base | jq -r '.layers[0].digest')\" = $L1 ] &&
		[ \"\$(manifest_of $W/tiny-base | jq -r '.layers | length')\" = 2 ]"
	# tiny's strippable paths are all in the base layer, so nothing is stripped
	: > "$W/none-stripped.lst"
	check "tiny keep-base: trees equal (base content is never stripped)" compare "$W/tiny-in.lst" "$W/tiny-base.lst" "$W/none-stripped.lst"
else
	fail "tiny keep-base" "$(cat "$W/tiny-base.err")"
fi

# docker-archive source
if timeout 120 skopeo copy -q "oci:$OCI/tiny:latest" "docker-archive:$W/tiny.tar:lab/tiny:latest" > "$LOGS/archive.log" 2>&1; then
	if optimize --json "docker-archive:$W/tiny.tar" oci:"$W/tiny-arch:opt" > "$W/tiny-arch.json" 2> "$W/tiny-arch.err" &&
		listing "$W/tiny-arch:opt" "$W/tiny-arch.lst"; then
		check "docker-archive: trees equal except stripped" compare "$W/tiny-in.lst" "$W/tiny-arch.lst" "$W/tiny-exp.lst" "$W/tiny-arch.json"
	else
		fail "docker-archive: optimize" "$(cat "$W/tiny-arch.err")"
	fi
else
	fail "docker-archive: skopeo" "$(tail -3 "$LOGS/archive.log")"
fi

# ---------------------------------------------------------------- generated edge cases

# the edge-case image (hard links to a stripped target and to an overwritten file,
# whiteouts, an opaque directory, a file over a directory, devices, a fifo, xattrs,
# sub-second mtimes, long GNU names, owners; layer 2 uncompressed): tests/lab/imagegen.py
if ! timeout 120 bash "$T/fixtures.sh" edge "$W/edge" > "$LOGS/fixtures-edge.log" 2>&1; then
	fail "edge: fixture" "fixtures.sh edge failed: $(tail -3 "$LOGS/fixtures-edge.log" | tr '\n' ' ')"
fi
if listing "$W/edge:latest" "$W/edge-in.lst"; then
	expected_stripped "$W/edge-in.lst" > "$W/edge-exp.lst"
	check "edge: expected stripped set" bash -c "cat $W/edge-exp.lst; grep -qx usr/share/doc/p/README $W/edge-exp.lst &&
		grep -qx var/tmp/junk $W/edge-exp.lst && grep -qx usr/lib/x/__pycache__ $W/edge-exp.lst"
	for mode in all none; do
		echo "{\"squash\": \"$mode\"}" > "$W/edge-$mode.json"
		if optimize --policy "$W/edge-$mode.json" --json oci:"$W/edge:latest" oci:"$W/edge-$mode:x" > "$W/edge-$mode.rep" 2> "$W/edge-$mode.err" &&
			listing "$W/edge-$mode:x" "$W/edge-$mode.lst"; then
			check "edge squash $mode: umoci trees equal except stripped (links repaired)" \
				compare_links "$W/edge-in.lst" "$W/edge-$mode.lst" "$W/edge-exp.lst"
		else
			fail "edge squash $mode" "$(cat "$W/edge-$mode.err")"
		fi
	done
	check "edge: hard links were materialized and relinked" \
		jq -e '.images[0].hardlinks_materialized >= 2 and .images[0].hardlinks_relinked >= 1' "$W/edge-all.rep"
else
	fail "edge: unpack input" "umoci/skopeo failed"
fi

# ---------------------------------------------------------------- sparse hard-link sources

if gen_sparse "$W/sparse"; then
	: > "$W/sparse-exp.lst"
	rootfs_list "$W/sparse/ref" > "$W/sparse-ref.lst"
	if optimize --json oci:"$W/sparse/all:latest" oci:"$W/sparse-out:x" > "$W/sparse.rep" 2> "$W/sparse.err" &&
		listing "$W/sparse-out:x" "$W/sparse-out.lst"; then
		check "sparse: links rebuilt from old GNU / pax 0.0 / 0.1 / 1.0 sparse files (umoci output == GNU tar input)" \
			compare "$W/sparse-ref.lst" "$W/sparse-out.lst" "$W/sparse-exp.lst"
		check "sparse: four links materialized" jq -e '.images[0].hardlinks_materialized == 4' "$W/sparse.rep"
	else
		fail "sparse: optimize" "$(cat "$W/sparse.err")"
	fi
	if listing "$W/sparse/pax:latest" "$W/sparse-pax-in.lst" &&
		optimize oci:"$W/sparse/pax:latest" oci:"$W/sparse-pax-out:x" > /dev/null 2> "$W/sparse-pax.err" &&
		listing "$W/sparse-pax-out:x" "$W/sparse-pax-out.lst"; then
		check "sparse: pax 0.0 / 0.1 / 1.0 sources, umoci trees equal" \
			compare "$W/sparse-pax-in.lst" "$W/sparse-pax-out.lst" "$W/sparse-exp.lst"
	else
		fail "sparse pax: optimize or unpack" "$(cat "$W/sparse-pax.err")"
	fi
else
	fail "sparse: fixture" "GNU tar or python failed"
fi

# ---------------------------------------------------------------- pax global headers

if gen_global "$W/global" && listing_mt "$W/global/ref:latest" "$W/global-ref.lst"; then
	: > "$W/global-exp.lst"
	check "global: reference keeps the global owner, mtime and xattr on layer 1's later entries" \
		bash -c "grep -q \$'^g/after\tf\t0644\t1234\t2345' $W/global-ref.lst && grep -q '^mtime g/after 1000.5' $W/global-ref.lst &&
			grep -q \$'^u/upper\tf\t0644\t0\t0' $W/global-ref.lst"
	if optimize oci:"$W/global/in:latest" oci:"$W/global-out:x" > /dev/null 2> "$W/global.err" &&
		listing_mt "$W/global-out:x" "$W/global-out.lst"; then
		check "global: squashed, each layer's entries keep their attributes (owners, mtimes, xattrs; umoci)" \
			compare "$W/global-ref.lst" "$W/global-out.lst" "$W/global-exp.lst"
	else
		fail "global: optimize or unpack" "$(cat "$W/global.err")"
	fi
else
	fail "global: fixture" "python or umoci failed"
fi

# ---------------------------------------------------------------- multi (every platform)

if optimize --json oci:"$OCI/multi:index" oci:"$W/multi:opt" > "$W/multi.json" 2> "$W/multi.err"; then
	check "multi: output is an OCI index with both platforms" bash -c "
		$(declare -f manifest_of root_digest)
		manifest_of $W/multi | jq -e '.mediaType == \"application/vnd.oci.image.index.v1+json\" and
			([.manifests[].platform.architecture] | sort) == [\"amd64\", \"arm64\"] and
			(.annotations[\"io.regslim.source.digest\"] | startswith(\"sha256:\"))'"
	for plat in amd64:: arm64:v8:; do
		arch=${plat%%:*}
		var=$(echo "$plat" | cut -d: -f2)
		args=(--override-os linux --override-arch "$arch")
		[ -n "$var" ] && args+=(--override-variant "$var")
		if listing "$OCI/multi:$arch" "$W/multi-$arch-in.lst" && listing "$W/multi:opt" "$W/multi-$arch-out.lst" "${args[@]}"; then
			expected_stripped "$W/multi-$arch-in.lst" > "$W/multi-$arch-exp.lst"
			idx=$(jq --arg a "$arch" '[.images[].platform] | map(startswith("linux/" + $a)) | index(true)' "$W/multi.json")
			check "multi $arch: trees equal except stripped" compare "$W/multi-$arch-in.lst" "$W/multi-$arch-out.lst" "$W/multi-$arch-exp.lst" "$W/multi.json" "$idx"
			mdig=$(manifest_of "$W/multi" | jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture == $a) | .digest')
			check "multi $arch: OCI manifest with one zstd layer" check_oci_manifest "$W/multi" "$mdig" 1
		else
			fail "multi $arch: unpack" "umoci/skopeo failed"
		fi
	done
	check "multi: arm64 config kept its label" bash -c "
		$(declare -f manifest_of root_digest)
		m=\$(manifest_of $W/multi | jq -r '.manifests[] | select(.platform.architecture == \"arm64\") | .digest')
		c=\$(manifest_of $W/multi \$m | jq -r .config.digest)
		jq -e '.architecture == \"arm64\" and .config.Labels[\"org.example.arch\"] == \"arm64\"' $W/multi/blobs/sha256/\${c#sha256:}"
else
	fail "multi: optimize" "$(cat "$W/multi.err")"
fi

# ---------------------------------------------------------------- bad input

bad_layout() { # NAME: a copy of tiny whose second layer is cut short (manifest kept)
	rm -rf "$W/$1"
	cp -r "$OCI/tiny" "$W/$1"
	local d
	d=$(manifest_of "$W/$1" | jq -r '.layers[1].digest')
	chmod u+w "$W/$1/blobs/sha256/${d#sha256:}"
	truncate -s 100 "$W/$1/blobs/sha256/${d#sha256:}"
}
bad_layout tiny-trunc
"$REGSLIM_BIN" optimize --quiet oci:"$W/tiny-trunc:latest" oci:"$W/never:x" > "$W/trunc.out" 2>&1
rc=$?
check "bad input: truncated layer fails naming the layer" bash -c "cat $W/trunc.out; [ $rc -ne 0 ] && grep -q 'layer 2/2' $W/trunc.out"
check "bad input: DST not created, no staging left" bash -c "[ ! -e $W/never ] && ! ls -a $W | grep -q regslim"

# an unknown layer media type, with a manifest that is otherwise consistent
rm -rf "$W/tiny-mt" && cp -r "$OCI/tiny" "$W/tiny-mt"
m=$(manifest_of "$W/tiny-mt" | jq -c '.layers[1].mediaType = "application/x-unknown"')
h=$(printf '%s' "$m" | sha256sum | cut -d' ' -f1)
printf '%s' "$m" > "$W/tiny-mt/blobs/sha256/$h"
jq -c --arg d "sha256:$h" --argjson s "$(printf '%s' "$m" | wc -c)" '.manifests[0].digest = $d | .manifests[0].size = $s' \
	"$OCI/tiny/index.json" > "$W/tiny-mt/index.json"
# DST exists already: it must stay byte-for-byte the same after the failure
before=$(cd "$W/tiny" && find . -type f | sort | xargs sha256sum | sha256sum)
"$REGSLIM_BIN" optimize --quiet oci:"$W/tiny-mt:latest" oci:"$W/tiny:other" > "$W/mt.out" 2>&1
rc=$?
after=$(cd "$W/tiny" && find . -type f | sort | xargs sha256sum | sha256sum)
check "bad input: unknown media type is refused by name" bash -c "cat $W/mt.out; [ $rc -ne 0 ] && grep -q 'application/x-unknown' $W/mt.out"
check "bad input: existing DST untouched" bash -c "[ '$before' = '$after' ] && ! ls -a $W | grep -q regslim"

# a second, good image goes into the existing layout next to the first
check "existing DST: a second tag is added" bash -c "
	$(declare -f optimize); REGSLIM_BIN=$REGSLIM_BIN optimize --policy $W/none.json oci:$OCI/tiny:latest oci:$W/tiny:second > /dev/null &&
	jq -e '[.manifests[].annotations[\"org.opencontainers.image.ref.name\"]] | sort == [\"opt\", \"second\"]' $W/tiny/index.json"

# ---------------------------------------------------------------- big

# big lives in a lab that outlives the test (built once, 2-3 minutes, reused)
BIGLAB=${RS_FIXTURE_LAB:-${TMPDIR:-/tmp}/regslim-fixtures}
if [ ! -f "$BIGLAB/fixtures/oci/big/index.json" ] && [ "${RS_SKIP_BIG:-0}" != 1 ] && [ "$(id -u)" = 0 ]; then
	mkdir -p "$BIGLAB" && touch "$BIGLAB/.regslim-lab"
	echo "# building the big fixture in $BIGLAB (once; 2-3 minutes)"
	REGSLIM_LAB=$BIGLAB timeout 900 bash "$T/fixtures.sh" big > "$LOGS/fixtures-big.log" 2>&1 ||
		fail "big: build" "$(tail -3 "$LOGS/fixtures-big.log" | tr '\n' ' ')"
fi
if [ -f "$BIGLAB/fixtures/oci/big/index.json" ]; then
	BIG=$BIGLAB/fixtures/oci/big
	if optimize --json oci:"$BIG:latest" oci:"$W/big:opt" > "$W/big.json" 2> "$W/big.err"; then
		check "big: OCI manifest with one zstd layer" bash -c "$(declare -f manifest_of root_digest check_oci_manifest); check_oci_manifest $W/big \$(root_digest $W/big) 1"
		if listing "$BIG:latest" "$W/big-in.lst" && listing "$W/big:opt" "$W/big-out.lst"; then
			expected_stripped "$W/big-in.lst" > "$W/big-exp.lst"
			check "big: umoci trees equal except the stripped paths" compare "$W/big-in.lst" "$W/big-out.lst" "$W/big-exp.lst" "$W/big.json"
		else
			fail "big: unpack" "umoci/skopeo failed"
		fi
		check "big: output at most 50% of the input's compressed size" \
			jq -e '.totals.size_after * 2 <= .totals.size_before' "$W/big.json"
		optimize --threads 1 oci:"$BIG:latest" oci:"$W/big-t1:opt" > /dev/null 2>&1
		check "big: --threads 1 gives the same digest" bash -c "[ \"\$(jq -r .manifests[0].digest $W/big/index.json)\" = \"\$(jq -r .manifests[0].digest $W/big-t1/index.json)\" ]"
	else
		fail "big: optimize" "$(cat "$W/big.err")"
	fi
else
	skip big "no big fixture in $BIGLAB (needs root to build; RS_SKIP_BIG=1 skips it)"
fi

finish
