#!/usr/bin/env bash
# test_concurrent_pull.sh - 20 concurrent pulls of a cold image cause ONE upstream fetch per blob.
#
# The test builds an image with a 40 MiB layer of seeded random bytes (so its download takes long
# enough for the clients' requests to overlap) plus a small layer, pushes it to the plain
# registry with skopeo (--preserve-digests), starts a cold regslim, and runs 20 `skopeo copy
# docker://MIRROR/lab/bigish:latest dir:...` at once. Checks: all 20 succeed with the right
# manifest and layer bytes; the upstream's access log shows exactly one GET per blob digest
# (config and each layer) after the pulls started; regslim_upstream_blob_fetches_total equals
# the number of distinct blobs; the blobs are in regslim's store, verified.
# Then a download shared by 10 concurrent GETs fails half-way (faultproxy.py truncates it): all
# 10 end with an error and nothing is stored; once healed, 10 concurrent GETs cause one fetch.
# Last, a client hangs up after 1 MiB of a cold download: regslim stays healthy, leaves no temp
# file and serves the whole blob to the next client. Finally skopeo, podman, ctr and docker pull
# one multi-platform image through a cold regslim at the same time: one upstream GET per blob.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

N=${CONCURRENT_PULLS:-20}
BIG_MIB=${BIG_LAYER_MIB:-40}

lab_setup
upstream_start
U=$REG_PLAIN

# ---------------------------------------------------------------- build and push lab/bigish
IMG=$REGSLIM_LAB/build/bigish
mkdir -p "$IMG"
if ! timeout 120 python3 - "$IMG" "$BIG_MIB" > "$LOGS/build-bigish.log" 2>&1 << 'EOF'; then
# writes a skopeo dir: layout: OCI manifest, config, 2 gzip layers (seeded, reproducible)
import gzip, hashlib, io, json, os, random, sys, tarfile
out, mib = sys.argv[1], int(sys.argv[2])
MT = 1747699200  # 2025-05-20

def put(data_path, digest):
    os.rename(data_path, os.path.join(out, digest.split(":")[1]))

class Tee:
    """file object: gzip-compresses what tarfile writes and hashes both streams"""
    def __init__(self, path):
        self.raw = open(path, "wb")
        self.h_gz = hashlib.sha256()
        self.h_tar = hashlib.sha256()
        self.gz = gzip.GzipFile(fileobj=self, mode="wb", compresslevel=1, mtime=0, filename="")
    def write(self, b):  # called by GzipFile with compressed bytes
        self.h_gz.update(b)
        self.raw.write(b)
        return len(b)
    def flush(self):
        pass

class TarSink:
    def __init__(self, tee):
        self.tee = tee
    def write(self, b):
        self.tee.h_tar.update(b)
        self.tee.gz.write(b)
        return len(b)

class RandomFile(io.RawIOBase):
    def __init__(self, n, seed):
        self.left, self.r = n, random.Random(seed)
    def readable(self):
        return True
    def readinto(self, buf):
        k = min(len(buf), self.left, 1 << 20)
        if k <= 0:
            return 0
        buf[:k] = self.r.randbytes(k)
        self.left -= k
        return k

def layer(name, files):
    tee = Tee(os.path.join(out, name))
    with tarfile.open(fileobj=TarSink(tee), mode="w|", format=tarfile.PAX_FORMAT) as t:
        for path, size, src in files:
            ti = tarfile.TarInfo(path)
            ti.size, ti.mtime, ti.mode, ti.uname, ti.gname = size, MT, 0o644, "root", "root"
            t.addfile(ti, src)
    tee.gz.close()
    tee.raw.close()
    size = os.path.getsize(os.path.join(out, name))
    gd, td = "sha256:" + tee.h_gz.hexdigest(), "sha256:" + tee.h_tar.hexdigest()
    put(os.path.join(out, name), gd)
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": gd, "size": size}, td

big, big_diff = layer("l1", [("data/random.bin", mib << 20, RandomFile(mib << 20, 20261126))])
small_data = b"regslim concurrent pull fixture\n" * 64
small, small_diff = layer("l2", [("etc/fixture.txt", len(small_data), io.BytesIO(small_data))])
cfg = json.dumps({"architecture": "amd64", "os": "linux", "created": "2025-05-20T00:00:00Z",
                  "config": {"Cmd": ["/bin/true"], "Labels": {"org.example.fixture": "bigish"}},
                  "rootfs": {"type": "layers", "diff_ids": [big_diff, small_diff]},
                  "history": [{"created": "2025-05-20T00:00:00Z", "created_by": "random layer"},
                              {"created": "2025-05-20T00:00:00Z", "created_by": "small layer"}]},
                 sort_keys=True).encode()
cd = "sha256:" + hashlib.sha256(cfg).hexdigest()
with open(os.path.join(out, cd.split(":")[1]), "wb") as f:
    f.write(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)},
                  "layers": [big, small]}, indent=2).encode()
with open(os.path.join(out, "manifest.json"), "wb") as f:
    f.write(man)
with open(os.path.join(out, "version"), "w") as f:
    f.write("Directory Transport Version: 1.1\n")
print("built", cd, big["digest"], big["size"], small["digest"])
EOF
	fail "build lab/bigish" "$(tail -n 3 "$LOGS/build-bigish.log" | tr '\n' ' ')"
	finish
fi
if ! timeout 300 skopeo --insecure-policy --tmpdir "$REGSLIM_LAB/tmp" copy --dest-tls-verify=false --preserve-digests \
	"dir:$IMG" "docker://$U/lab/bigish:latest" > "$LOGS/push-bigish.log" 2>&1; then
	fail "push lab/bigish" "$(tail -n 2 "$LOGS/push-bigish.log" | tr '\n' ' ')"
	finish
fi
MAN=$(sha256_of "$IMG/manifest.json")
BLOBS=$(manifest_blobs "$IMG/manifest.json")
BIG=$(jq -r '.layers[0].digest' "$IMG/manifest.json")
expect_eq "lab/bigish pushed as built (upstream digest == built manifest)" "$(manifest_digest "$U" lab/bigish latest)" "$MAN"
echo "# lab/bigish: manifest $MAN, $(echo "$BLOBS" | wc -l) blobs, big layer $(jq '.layers[0].size' "$IMG/manifest.json") bytes"

# ---------------------------------------------------------------- cold regslim, N pulls at once
start_regslim
if ! client_usable skopeo; then
	skip "concurrent skopeo pulls" "$RS_CLIENT_WHY"
	finish
fi
upstream_mark
fetch0=$(metric regslim_upstream_blob_fetches_total)
expect_eq "regslim starts cold (no upstream blob fetch yet)" "$fetch0" 0
pids=()
for ((i = 1; i <= N; i++)); do
	skopeo_pull "docker://$MIRROR/lab/bigish:latest" "dir:$REGSLIM_LAB/pulls/c$i" > "$LOGS/pull-c$i.log" 2>&1 &
	pids+=($!)
done
ok=0
failed=
for ((i = 1; i <= N; i++)); do
	if wait "${pids[i - 1]}"; then ok=$((ok + 1)); else failed="$failed c$i"; fi
done
if [ "$ok" = "$N" ]; then
	pass "$N concurrent skopeo pulls through a cold regslim succeed"
else
	fail "$N concurrent pulls" "$ok of $N succeeded; failed:$failed; e.g. $(tail -n 1 "$LOGS/pull-${failed# }.log" 2> /dev/null | cut -c1-200)"
fi

# every pull got the same manifest and the right layer bytes
bad=
for ((i = 1; i <= N; i++)); do
	d=$REGSLIM_LAB/pulls/c$i
	[ -f "$d/manifest.json" ] || continue
	[ "$(sha256_of "$d/manifest.json")" = "$MAN" ] || bad="$bad c$i:manifest"
	for b in $BLOBS; do [ "$(sha256_of "$d/${b#sha256:}" 2> /dev/null)" = "$b" ] || bad="$bad c$i:${b:7:12}"; done
	rm -rf "$d"
done
if [ -z "$bad" ]; then pass "every pull got the upstream's manifest and blob bytes"; else fail "pulled bytes" "wrong:$bad"; fi

# one upstream GET per blob
counts=
one=1
for b in $BLOBS; do
	c=$(upstream_count GET "/blobs/$b([?].*)?\$")
	counts="$counts ${b:7:12}=$c"
	[ "$c" = 1 ] || one=0
done
if [ $one = 1 ]; then
	pass "upstream access log: exactly one GET per blob ($counts )"
else
	fail "upstream access log: exactly one GET per blob" "GETs per blob:$counts"
fi
expect_eq "regslim_upstream_blob_fetches_total == distinct blobs" \
	"$(metric regslim_upstream_blob_fetches_total)" "$(echo "$BLOBS" | wc -l)"
missing=
for b in $BLOBS; do store_has_blob "$b" || missing="$missing $b"; done
if [ -z "$missing" ]; then pass "regslim's store holds every blob, verified"; else fail "store" "missing or wrong:$missing"; fi
expect_eq "no download still in flight" "$(metric regslim_inflight_downloads)" 0
echo "# big-layer requests seen by regslim, by cache field: $(grep -F "/blobs/$BIG" "$RS_LOG" | grep -oE '"cache": ?"[a-z-]+"' | sort | uniq -c | tr '\n' ' ')"
echo "# upstream manifest GETs during the pulls: $(upstream_count GET '/manifests/')"

# ---------------------------------------------------------------- a shared download that fails
# A second cold regslim behind faultproxy.py, which sends the right Content-Length but only half
# of the big layer and then closes: every one of M concurrent GETs of that blob (those sharing
# the failed download included) must end with an error, never as a complete body; nothing enters
# the store. Then the fault is switched off: M concurrent GETs all get the right bytes, from one
# upstream GET.
M=${CONCURRENT_GETS:-10}
FP_PORT=$((LAB_PORT_BASE + 60))
RS2_PORT=$((LAB_PORT_BASE + 51))
RS2_DATA=$REGSLIM_LAB/rs2
touch "$REGSLIM_LAB/fault-on"
if ! lab_spawn aux-faultproxy "$LOGS/faultproxy.err" python3 "$RS_LAB_DIR/faultproxy.py" --listen "127.0.0.1:$FP_PORT" \
	--upstream "$U" --digest "$BIG" --mode truncate --while-exists "$REGSLIM_LAB/fault-on" \
	--log "$LOGS/faultproxy.log" || ! wait_port "$FP_PORT" 10; then
	fail "faultproxy start" "$(tail -n 2 "$LOGS/faultproxy.err")"
	finish
fi
if ! regslim_spawn second "$RS2_PORT" "http://127.0.0.1:$FP_PORT" "$RS2_DATA" 2> "$LOGS/rs2-start.err"; then
	fail "second regslim start" "$(head -n 1 "$LOGS/rs2-start.err")"
	finish
fi
BIG_URL=http://127.0.0.1:$RS2_PORT/v2/lab/bigish/blobs/$BIG

# get_all TAG: M concurrent curl GETs of BIG_URL; sets OKS (exit 0 and right bytes), ERRS (curl
# failed), WRONG (curl exit 0 but wrong bytes: a truncated body presented as complete)
get_all() {
	local i p=()
	for ((i = 1; i <= M; i++)); do
		curl -sS --max-time 120 -o "$REGSLIM_LAB/pulls/$1-$i" "$BIG_URL" 2> "$LOGS/get-$1-$i.err" &
		p+=($!)
	done
	OKS=0 ERRS=0 WRONG=0
	for ((i = 1; i <= M; i++)); do
		if wait "${p[i - 1]}"; then
			if [ "$(sha256_of "$REGSLIM_LAB/pulls/$1-$i")" = "$BIG" ]; then OKS=$((OKS + 1)); else WRONG=$((WRONG + 1)); fi
		else
			ERRS=$((ERRS + 1))
		fi
		rm -f "$REGSLIM_LAB/pulls/$1-$i"
	done
}

get_all cut
expect_eq "truncated upstream: all $M concurrent GETs end with an error (ok/error/complete-but-wrong)" \
	"$OKS/$ERRS/$WRONG" "0/$M/0"
echo "# truncated upstream: $(grep -c 'FAULT truncate' "$LOGS/faultproxy.log") upstream GET(s) of the blob, all cut, for $M clients"
expect_ge "truncated upstream: faultproxy really cut the body" "$(grep -c 'FAULT truncate' "$LOGS/faultproxy.log")" 1
left=$(store_find_blob "$BIG" "$RS2_DATA")
if [ -z "$left" ]; then pass "truncated upstream: the blob is not in regslim's store"; else fail "truncated upstream: store" "found $left"; fi
for ((i = 0; i < 50; i++)); do [ -z "$(store_tmp_files "$RS2_DATA")" ] && break; sleep 0.2; done
expect_eq "truncated upstream: no temp file left in tmp/" "$(store_tmp_files "$RS2_DATA" | head -n 3 | tr '\n' ' ')" ""

rm -f "$REGSLIM_LAB/fault-on"
n0=$(grep -c "^GET [^ ]*/blobs/$BIG " "$LOGS/faultproxy.log")
get_all healed
expect_eq "healed: all $M concurrent GETs get the right bytes (ok/error/complete-but-wrong)" "$OKS/$ERRS/$WRONG" "$M/0/0"
expect_eq "healed: one upstream GET of the blob for the $M clients" \
	"$(($(grep -c "^GET [^ ]*/blobs/$BIG " "$LOGS/faultproxy.log") - n0))" 1
if store_has_blob "$BIG" "$RS2_DATA"; then pass "healed: the blob is in regslim's store, verified"; else fail "healed: store" "blob missing or wrong"; fi

# ---------------------------------------------------------------- a client that leaves mid-download
# A third cold regslim (upstream: the registry). A client reads 1 MiB of the big layer and hangs
# up. regslim may finish or drop the download, but must stay healthy, leave no temp file, keep
# nothing but verified bytes, and serve the blob completely to the next client.
RS3_PORT=$((LAB_PORT_BASE + 52))
RS3_DATA=$REGSLIM_LAB/rs3
if regslim_spawn third "$RS3_PORT" "http://$U" "$RS3_DATA" 2> "$LOGS/rs3-start.err"; then
	URL3=http://127.0.0.1:$RS3_PORT/v2/lab/bigish/blobs/$BIG
	got=$(curl -sS --max-time 60 "$URL3" 2> /dev/null | head -c 1048576 | wc -c)
	expect_eq "client hang-up: the client read 1 MiB, then left" "$got" 1048576
	expect_eq "client hang-up: the next GET gets the whole blob, right" \
		"$(curl -sS --max-time 120 "$URL3" | sha256sum | cut -d' ' -f1)" "${BIG#sha256:}"
	for ((i = 0; i < 50; i++)); do [ -z "$(store_tmp_files "$RS3_DATA")" ] && break; sleep 0.2; done
	expect_eq "client hang-up: no temp file left in tmp/" "$(store_tmp_files "$RS3_DATA" | head -n 3 | tr '\n' ' ')" ""
	if store_has_blob "$BIG" "$RS3_DATA"; then
		pass "client hang-up: the blob is in regslim's store, verified"
	else
		fail "client hang-up: store" "blob missing or wrong: $(store_find_blob "$BIG" "$RS3_DATA" | tr '\n' ' ')"
	fi
	expect_eq "client hang-up: regslim still healthy" "$(http_code "http://127.0.0.1:$RS3_PORT/healthz")" 200
else
	fail "third regslim start" "$(head -n 1 "$LOGS/rs3-start.err")"
fi

# ---------------------------------------------------------------- every client at once
# A fourth cold regslim; skopeo (3 copies), podman, ctr (linux/arm64) and docker pull
# docker.io/library/multi:latest through it at the same time, with their different Accept headers
# and HEAD/GET habits. All succeed with the upstream's digests, and the upstream sees one GET per
# blob (both platforms' configs and the shared layers).
RS4_PORT=$((LAB_PORT_BASE + 53))
MULTI=$(manifest_digest "$U" library/multi latest)
MULTI_AMD=$(image_blobs "$U" library/multi latest linux/amd64 | sed -n 2p)
for c in podman ctr docker; do client_usable "$c" || skip "every client at once: $c" "$RS_CLIENT_WHY"; done
if regslim_spawn fourth "$RS4_PORT" "http://$U" "$REGSLIM_LAB/rs4" 2> "$LOGS/rs4-start.err"; then
	MIRROR=127.0.0.1:$RS4_PORT
	[ "${RS_CLIENT_STATE[docker]:-}" != ok ] || dockerd_start > "$LOGS/dockerd-restart.log" 2>&1 # reads MIRROR at start
	podman_clean
	ctr_clean > /dev/null 2>&1
	docker_clean > /dev/null 2>&1
	upstream_mark
	declare -A mpid=()
	for i in 1 2 3; do
		skopeo_pull "docker://$MIRROR/library/multi:latest" "dir:$REGSLIM_LAB/pulls/mix$i" > "$LOGS/mix-skopeo$i.log" 2>&1 &
		mpid[skopeo$i]=$!
	done
	if [ "${RS_CLIENT_STATE[podman]:-}" = ok ]; then
		podman_pull -q docker.io/library/multi:latest > "$LOGS/mix-podman.log" 2>&1 &
		mpid[podman]=$!
	fi
	if [ "${RS_CLIENT_STATE[ctr]:-}" = ok ]; then
		ctr_pull docker.io/library/multi:latest --platform linux/arm64 > "$LOGS/mix-ctr.log" 2>&1 &
		mpid[ctr]=$!
	fi
	if [ "${RS_CLIENT_STATE[docker]:-}" = ok ]; then
		docker_pull library/multi > "$LOGS/mix-docker.log" 2>&1 &
		mpid[docker]=$!
	fi
	for c in skopeo1 skopeo2 skopeo3 podman ctr docker; do
		[ -n "${mpid[$c]:-}" ] || continue
		if wait "${mpid[$c]}"; then
			pass "every client at once: $c pull succeeds"
		else
			fail "every client at once: $c pull succeeds" "$(tail -n 2 "$LOGS/mix-${c}.log" | tr '\n' ' ' | cut -c1-300)"
		fi
	done
	bad=
	for i in 1 2 3; do
		[ "$(sha256_of "$REGSLIM_LAB/pulls/mix$i/manifest.json" 2> /dev/null)" = "$MULTI_AMD" ] || bad="$bad skopeo$i"
	done
	if [ -n "${mpid[podman]:-}" ]; then
		[[ $(lpodman image inspect docker.io/library/multi:latest --format '{{json .RepoDigests}}' 2>&1) == *"@$MULTI"* ]] || bad="$bad podman"
	fi
	if [ -n "${mpid[ctr]:-}" ]; then
		[ "$(lctr images ls 2> /dev/null | awk '$1 == "docker.io/library/multi:latest" { print $3 }')" = "$MULTI" ] || bad="$bad ctr"
	fi
	if [ -n "${mpid[docker]:-}" ]; then
		[[ $(ldocker image inspect library/multi --format '{{json .RepoDigests}}' 2>&1) == *"multi@$MULTI"* ]] || bad="$bad docker"
	fi
	if [ -z "$bad" ]; then pass "every client at once: all got the upstream's digests"; else fail "every client at once: digests" "wrong for:$bad"; fi
	counts=
	one=1
	for b in $(image_blobs "$U" library/multi latest linux/amd64 | tail -n +3) \
		$(image_blobs "$U" library/multi latest linux/arm64 | sed -n 3p); do
		c=$(upstream_count GET "/blobs/$b([?].*)?\$")
		counts="$counts ${b:7:12}=$c"
		[ "$c" = 1 ] || one=0
	done
	if [ $one = 1 ]; then
		pass "every client at once: one upstream GET per blob ($counts )"
	else
		fail "every client at once: one upstream GET per blob" "GETs per blob:$counts"
	fi
else
	fail "fourth regslim start" "$(head -n 1 "$LOGS/rs4-start.err")"
fi

finish
