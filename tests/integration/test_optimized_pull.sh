#!/usr/bin/env bash
# test_optimized_pull.sh - the optimized pull path (DESIGN.md "The pull path" points 3-5) with
# real clients.
#
# Upstream: Debian's docker-registry with the tiny and multi fixtures; regslim in front of it as
# the docker.io mirror with its default optimization (docker.io, every repository, default policy,
# compression auto). Checks:
#   - a tag GET answers an optimized OCI manifest (zstd layers for skopeo's UA) carrying the
#     source-digest annotation; HEAD on the tag gives the digest the GET by digest serves
#   - a GET by the upstream digest returns the upstream's bytes
#   - GET /regslim/v1/reports/<name>/<digest> returns the report
#   - skopeo + umoci: the unpacked optimized tree == the original's minus exactly the stripped
#     paths listed in the report
#   - podman pulls (zstd variant), dockerd 20.10 pulls (gzip variant), ctr --platform arm64 on
#     multi gets the optimized arm64 manifest of the optimized index
#   - with the upstream stopped the optimized images still pull
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

export RS_OPTIMIZE=1
lab_setup
upstream_start
start_regslim
U=$REG_PLAIN
OCI_MT=application/vnd.oci.image.manifest.v1+json
ZSTD_MT=application/vnd.oci.image.layer.v1.tar+zstd
GZIP_MT=application/vnd.oci.image.layer.v1.tar+gzip

# rs_manifest UA REPO REF: the manifest regslim serves for a tag to a client with User-Agent UA
rs_manifest() { manifest_get "$MIRROR" "$2" "$3" -A "$1"; }

# ---------------------------------------------------------------- manifests over HTTP
up_tiny=$(manifest_digest "$U" library/tiny latest)
rs_manifest skopeo/1.9.3 library/tiny latest > "$LOGS/opt-tiny.json" || fail "tag GET" "regslim answered an error"
opt_tiny=$(sha256_of "$LOGS/opt-tiny.json")
expect_ne "tag GET answers a manifest other than the upstream's" "$opt_tiny" "$up_tiny"
expect_eq "optimized manifest is OCI" "$(jq -r .mediaType "$LOGS/opt-tiny.json")" "$OCI_MT"
expect_eq "optimized manifest names its source digest" \
	"$(jq -r '.annotations["io.regslim.source.digest"]' "$LOGS/opt-tiny.json")" "$up_tiny"
expect_eq "zstd layers for skopeo" "$(jq -r '[.layers[].mediaType] | unique | join(",")' "$LOGS/opt-tiny.json")" "$ZSTD_MT"
head_d=$(manifest_digest "$MIRROR" library/tiny latest -A "containerd/1.6.20~ds1")
head_body=$(http_get "http://$MIRROR/v2/library/tiny/manifests/$head_d" -A "containerd/1.6.20~ds1" -H "Accept: $OCI_MT")
expect_eq "HEAD on the tag gives the digest the GET by digest serves" \
	"$(printf '%s' "$head_body" | sha256sum | cut -d' ' -f1)" "${head_d#sha256:}"
expect_eq "containerd 1.6 gets the zstd variant (same as skopeo)" "$head_d" "$opt_tiny"
legacy=$(manifest_digest "$MIRROR" library/tiny latest -A "docker/20.10.24+dfsg1 go/go1.19.8")
legacy_layers=$(http_get "http://$MIRROR/v2/library/tiny/manifests/$legacy" "${RS_ACCEPT_ALL[@]}" | jq -r '[.layers[].mediaType] | unique | join(",")')
expect_eq "docker 20.10 gets gzip layers" "$legacy_layers" "$GZIP_MT"
http_get "http://$MIRROR/v2/library/tiny/manifests/$up_tiny" "${RS_ACCEPT_ALL[@]}" > "$LOGS/orig-tiny.json" || true
expect_eq "GET by the upstream digest returns the original bytes" "$(sha256_of "$LOGS/orig-tiny.json")" "$up_tiny"
http_get "$RS_URL/regslim/v1/reports/library/tiny/$opt_tiny" > "$LOGS/report-tiny.json" || true
expect_eq "report names the source digest" "$(jq -r '.images[0].source_digest' "$LOGS/report-tiny.json" 2> /dev/null)" "$up_tiny"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time "$HTTP_TIMEOUT" "$RS_URL/regslim/v1/reports/library/tiny/$up_tiny")
expect_eq "no report for an upstream digest: 404" "$code" 404

# ---------------------------------------------------------------- skopeo + umoci: stripped paths
if client_usable skopeo; then
	if umoci_rootfs "docker://$U/library/tiny:latest" "$REGSLIM_LAB/pulls/u-orig" > "$LOGS/umoci-orig.log" 2>&1 \
		&& umoci_rootfs "docker://$MIRROR/library/tiny:latest" "$REGSLIM_LAB/pulls/u-opt" > "$LOGS/umoci-opt.log" 2>&1; then
		pass "skopeo pull of the optimized tiny + umoci unpack"
		rootfs_list "$REGSLIM_LAB/pulls/u-orig/rootfs" > "$LOGS/tree-orig"
		rootfs_list "$REGSLIM_LAB/pulls/u-opt/rootfs" > "$LOGS/tree-opt"
		# entries only in the original, by path (first field), vs the report's stripped paths
		comm -23 "$LOGS/tree-orig" "$LOGS/tree-opt" | awk '{print $1}' | sed 's|^\./||; s|^/||' | sort > "$LOGS/only-orig"
		comm -13 "$LOGS/tree-orig" "$LOGS/tree-opt" > "$LOGS/only-opt"
		jq -r '.images[0].stripped_paths[][0]' "$LOGS/report-tiny.json" | sed 's|^\./||; s|^/||; s|/$||' | sort > "$LOGS/stripped"
		expect_eq "optimized tree adds or changes nothing" "$(wc -l < "$LOGS/only-opt")" 0
		expect_eq "optimized tree == original minus exactly the reported stripped paths" \
			"$(tr '\n' ' ' < "$LOGS/only-orig")" "$(tr '\n' ' ' < "$LOGS/stripped")"
		expect_ge "the default policy stripped something from tiny" "$(wc -l < "$LOGS/stripped")" 1
	else
		fail "skopeo pull of the optimized tiny + umoci unpack" "$(tail -n 2 "$LOGS/umoci-opt.log" "$LOGS/umoci-orig.log" | tr '\n' ' ')"
	fi
else
	skip skopeo "$RS_CLIENT_WHY"
fi

# ---------------------------------------------------------------- podman (zstd)
if client_usable podman; then
	z0=$(metric regslim_variant_served_total 'family="containers",variant="zstd"')
	check "podman pulls the optimized tiny" podman_pull -q docker.io/library/tiny:latest
	expect_ge "podman was served the zstd variant" "$(metric regslim_variant_served_total 'family="containers",variant="zstd"')" $((z0 + 1))
	podman_clean
else
	skip podman "$RS_CLIENT_WHY"
fi

# ---------------------------------------------------------------- dockerd 20.10 (gzip)
if client_usable docker; then
	g0=$(metric regslim_variant_served_total 'family="docker-legacy",variant="gzip"')
	check "dockerd 20.10 pulls the optimized tiny" docker_pull tiny
	expect_ge "dockerd was served the gzip variant" "$(metric regslim_variant_served_total 'family="docker-legacy",variant="gzip"')" $((g0 + 1))
	id=$(ldocker image inspect tiny --format '{{join .RepoDigests ","}}' 2> /dev/null)
	case $id in *"$legacy"*) pass "dockerd recorded the optimized gzip digest" ;; *) fail "dockerd recorded the optimized gzip digest" "got '$id', expected $legacy" ;; esac
	docker_clean
	# A layer over 1 MiB: the gzip variant is several gzip members (optimizer/pgzip.h), which
	# Docker 20.10 (Go's compress/gzip) and Python's gzip must read as one stream.
	if timeout 120 python3 "$RS_LAB_DIR/imagegen.py" soak "$LOGS/soak-layout" 1 3000 > /dev/null &&
		timeout 120 skopeo copy -q --dest-tls-verify=false "oci:$LOGS/soak-layout:s0" "docker://$U/library/soak:latest" \
			> "$LOGS/soak-push.log" 2>&1; then
		rs_manifest docker/20.10.24 library/soak latest > "$LOGS/soak-gz.json" || true
		big_layer=$(jq -r '[.layers[] | select(.size > 1048576)][0].digest // empty' "$LOGS/soak-gz.json")
		if [ -n "$big_layer" ]; then
			curl -sS --max-time 60 -A docker/20.10.24 -o "$LOGS/soak-layer.gz" "$RS_URL/v2/library/soak/blobs/$big_layer"
			members=$(python3 -c 'import sys,zlib
d=open(sys.argv[1],"rb").read(); n=0
while d:
    o=zlib.decompressobj(31); o.decompress(d); d=o.unused_data; n+=1
print(n)' "$LOGS/soak-layer.gz" 2> /dev/null || echo 0)
			expect_ge "the gzip variant of a 3 MiB layer is several gzip members" "$members" 3
			expect "Python's gzip reads them as one tar" \
				"python3 -c 'import gzip,sys,tarfile,io; tarfile.open(fileobj=io.BytesIO(gzip.decompress(open(sys.argv[1],\"rb\").read()))).getmembers()' '$LOGS/soak-layer.gz'" \
				"not a gzip'd tar"
		else
			fail "the optimized soak image has a layer over 1 MiB" "$(head -c 300 "$LOGS/soak-gz.json")"
		fi
		check "dockerd 20.10 pulls and unpacks a multi-member gzip layer" docker_pull soak
		rm -rf "$LOGS/soak-save" && mkdir -p "$LOGS/soak-save"
		ldocker save -o "$LOGS/soak-save.tar" soak > /dev/null 2>&1 && tar -xf "$LOGS/soak-save.tar" -C "$LOGS/soak-save" 2> /dev/null
		expect "dockerd's unpacked layer holds the 3000 KiB payload" \
			"for l in \$(find '$LOGS/soak-save' -name layer.tar); do tar -tvf \$l; done | grep -q ' 3072000 .*data/payload.bin'" \
			"no data/payload.bin of 3072000 bytes in docker save's layers"
		docker_clean
	else
		fail "soak image for the multi-member check" "$(tail -n 2 "$LOGS/soak-push.log")"
	fi
else
	skip docker "$RS_CLIENT_WHY"
fi

# ---------------------------------------------------------------- ctr --platform arm64 on multi
up_multi=$(manifest_digest "$U" library/multi latest)
rs_manifest "containerd/1.6.20~ds1" library/multi latest > "$LOGS/opt-multi.json" || true
opt_multi=$(sha256_of "$LOGS/opt-multi.json")
expect_eq "optimized multi is an OCI index naming its source" \
	"$(jq -r '.mediaType + " " + .annotations["io.regslim.source.digest"]' "$LOGS/opt-multi.json")" \
	"application/vnd.oci.image.index.v1+json $up_multi"
arm=$(jq -r '.manifests[] | select(.platform.architecture == "arm64") | .digest' "$LOGS/opt-multi.json")
rs_manifest skopeo/1.9.3 library/multi latest > "$LOGS/opt-multi-2.json" || true
expect_eq "the optimized index is stable (same digest on a second pull)" "$(sha256_of "$LOGS/opt-multi-2.json")" "$opt_multi"
if client_usable ctr; then
	check "ctr pulls the optimized multi for linux/arm64" ctr_pull docker.io/library/multi:latest --platform linux/arm64
	got=$(lctr images ls 2> /dev/null | awk '$1 == "docker.io/library/multi:latest" {print $3}')
	expect_eq "ctr's image is the optimized index" "$got" "$opt_multi"
	if lctr content get "$arm" > "$LOGS/ctr-arm.json" 2> /dev/null; then
		expect_eq "ctr fetched the optimized arm64 manifest" "$(sha256_of "$LOGS/ctr-arm.json")" "$arm"
	else
		fail "ctr fetched the optimized arm64 manifest" "$arm is not in containerd's content store"
	fi
	ctr_clean
else
	skip ctr "$RS_CLIENT_WHY"
fi

# ---------------------------------------------------------------- metrics
expect_ge "optimizations counted" "$(metric regslim_optimizations_total 'result="ok"')" 3
expect_ge "bytes saved counted" "$(metric regslim_bytes_saved_total 'kind="stored"')" 1

# ---------------------------------------------------------------- upstream stopped
upstream_stop plain
if client_usable skopeo; then
	check "upstream down: skopeo still pulls the optimized tiny" \
		skopeo_pull "docker://$MIRROR/library/tiny:latest" "dir:$REGSLIM_LAB/pulls/down-tiny"
	check "upstream down: skopeo still pulls the optimized multi (arm64)" \
		skopeo_pull "docker://$MIRROR/library/multi:latest" "dir:$REGSLIM_LAB/pulls/down-multi" --override-arch arm64
fi
if client_usable podman; then
	check "upstream down: podman still pulls the optimized tiny" podman_pull -q docker.io/library/tiny:latest
	podman_clean
fi
if client_usable docker; then
	check "upstream down: dockerd still pulls the optimized tiny" docker_pull tiny
	docker_clean
fi
finish
