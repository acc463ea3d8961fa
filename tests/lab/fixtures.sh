#!/usr/bin/env bash
# fixtures.sh - the lab's test images: built without a Docker engine, pushed into the registries
# that registry.sh runs, under the tags and formats the tests pull.
#
# Images (OCI layouts under $REGSLIM_LAB/fixtures/oci):
#   tiny, tiny-zstd   two small layers holding every layer edge case (imagegen.py; reproducible)
#   multi             tiny's layers for linux/amd64 and linux/arm64/v8, with an OCI index
#   edge              the optimizer's edge cases: devices, fifo, long names, xattrs, hard links
#   big, big-zstd     a sloppy 4-layer Debian + Node image: debootstrap, buildah bud, npm install
#
# Commands:
#   fixtures.sh [all]              build big, tiny, multi; push every tag; sizes; list
#   fixtures.sh tiny-only          build and push tiny and multi only (seconds, no root)
#   fixtures.sh big|tiny|multi     build one image's layouts
#   fixtures.sh edge [DIR]         build the edge-case layout (in DIR instead of oci/edge)
#   fixtures.sh base|app           big's inputs: the debootstrap rootfs tar, the npm app tree
#   fixtures.sh push [big|tiny|multi|auth]...   push (default: every image built, then auth)
#   fixtures.sh sizes              per-layer sizes read back from the registry -> sizes.tsv
#   fixtures.sh list               repositories and tags in the registry
#   fixtures.sh layer IMAGE N [TAG]   path of layer N's blob in layout IMAGE (big, tiny-zstd, ...)
#
# Environment (besides lab.sh's REGSLIM_LAB, LAB_PORT_BASE, LAB_USER, LAB_PASS):
#   REG             push target (default 127.0.0.1:BASE, the plain registry)
#   FORCE=1         rebuild what exists
#   KEEP_BUILD=1    keep big's build inputs ($REGSLIM_LAB/build/big) after the build
#   DEBIAN_MIRROR   where debootstrap and apt inside big fetch from (default: the first apt
#                   source of this machine that serves bookworm)
# A build is skipped when its layout exists; pushes are always redone (idempotent, seconds).
set -euo pipefail

RL_ME=fixtures.sh
# shellcheck source=lab.sh
. "$(dirname "${BASH_SOURCE[0]}")/lab.sh"

FX_OUT=$RL_LAB/fixtures
FX_OCI=$FX_OUT/oci
FX_RAW=$FX_OUT/dir-tiny-raw
FX_BUILD=$RL_LAB/build
FX_TMP=$RL_LAB/tmp
FX_REG=${REG:-127.0.0.1:$RL_BASE}
FX_REG_AUTH=127.0.0.1:$((RL_BASE + 1))
FX_REG_TOKEN=127.0.0.1:$((RL_BASE + 2))
FX_FORCE=${FORCE:-0}
FX_SUITE=bookworm
FX_EPOCH=2025-05-20T00:00:00Z
FX_ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'
MT_V2S2=application/vnd.docker.distribution.manifest.v2+json
MT_V2S2_LAYER=application/vnd.docker.image.rootfs.diff.tar.gzip
MT_OCI=application/vnd.oci.image.manifest.v1+json
MT_LIST=application/vnd.docker.distribution.manifest.list.v2+json
MT_INDEX=application/vnd.oci.image.index.v1+json
mkdir -p "$FX_OCI" "$FX_BUILD"

fx_say() { echo "[fixtures $(date -u +%T)] $*" >&2; }

# fx_step_failed LOG WHAT: WHAT failed; show the end of LOG and stop.
fx_step_failed() {
	echo "$RL_ME: $2 failed (log: $1):" >&2
	rl_log_tail "$1" 8
	exit 1
}

# fx_built LAYOUT: LAYOUT exists and FORCE does not ask for a rebuild.
fx_built() { [ "$FX_FORCE" != 1 ] && [ -f "$1/index.json" ]; }

fx_skopeo() { timeout 900 skopeo --insecure-policy --tmpdir "$FX_TMP" "$@"; }

fx_buildah() {
	TMPDIR=$FX_TMP timeout 1200 buildah --storage-driver vfs \
		--root "$FX_BUILD/buildah/root" --runroot "$FX_BUILD/buildah/run" "$@"
}

# fx_remove PATH...: delete trees the lab wrote, never across a mount point: a rootfs that
# is still mounted (a failed buildah run) must not take the host's files with it.
fx_remove() {
	local p real mp rest
	for p in "$@"; do
		[ -e "$p" ] || [ -L "$p" ] || continue
		real=$(realpath -m "$p")
		while read -r _ mp rest; do
			if [ "$mp" = "$real" ] || [[ $mp == "$real"/* ]]; then
				rl_fail "$p has a mount point at or below it ($mp); unmount it first"
			fi
		done < /proc/self/mounts
		rm -rf --one-file-system "$p"
	done
}

# fx_generate KIND LAYOUT: write an imagegen.py layout, replacing LAYOUT.
fx_generate() {
	rl_need python3
	fx_remove "$2"
	timeout 120 "$(rl_python)" "$RL_HERE/imagegen.py" "$1" "$2" || rl_fail "imagegen.py $1 $2 failed"
}

# fx_zstd IMAGE: IMAGE-zstd, IMAGE's layout with every layer recompressed to zstd by skopeo.
# A layout-to-layout copy: pushing IMAGE with --dest-compress-format zstd straight into a
# registry that already has the gzip blobs makes skopeo 1.9 reuse them (the manifest keeps
# tar+gzip), so the zstd blobs are made here and pushed as they are.
fx_zstd() {
	fx_built "$FX_OCI/$1-zstd" && return 0
	rl_need skopeo
	fx_remove "$FX_OCI/$1-zstd"
	fx_skopeo copy --dest-compress-format zstd "oci:$FX_OCI/$1:latest" "oci:$FX_OCI/$1-zstd:latest" \
		> "$RL_LOGS/zstd-$1.log" 2>&1 || fx_step_failed "$RL_LOGS/zstd-$1.log" "recompressing $1 to zstd"
}

# ---------------------------------------------------------------- tiny, multi, edge

build_tiny() {
	if fx_built "$FX_OCI/tiny"; then
		fx_say "tiny is built"
	else
		fx_generate tiny "$FX_OCI/tiny"
		fx_remove "$FX_OCI/tiny-zstd" "$FX_RAW"
	fi
	fx_zstd tiny
	# uncompressed layers: an oci: destination ignores --dest-decompress and a docker://
	# destination always compresses; a dir: copy keeps them raw, and is pushed with
	# --preserve-digests
	if [ "$FX_FORCE" = 1 ] || [ ! -f "$FX_RAW/manifest.json" ]; then
		fx_remove "$FX_RAW"
		fx_skopeo copy --format oci --dest-decompress "oci:$FX_OCI/tiny:latest" "dir:$FX_RAW" \
			> "$RL_LOGS/raw-tiny.log" 2>&1 || fx_step_failed "$RL_LOGS/raw-tiny.log" "the uncompressed copy of tiny"
	fi
}

build_multi() {
	if fx_built "$FX_OCI/multi"; then fx_say "multi is built"; else fx_generate multi "$FX_OCI/multi"; fi
}

# build_edge [DIR]: DIR is written from scratch every time; oci/edge only when missing.
build_edge() {
	if [ -n "${1:-}" ]; then
		fx_generate edge "$1"
	elif fx_built "$FX_OCI/edge"; then
		fx_say "edge is built"
	else
		fx_generate edge "$FX_OCI/edge"
	fi
}

# ---------------------------------------------------------------- big

# debian_mirror: $DEBIAN_MIRROR, else the first http(s) or file URI of an enabled `deb` source
# of this machine (one-line .list or deb822 .sources) whose suites include bookworm.
debian_mirror() {
	if [ -n "${DEBIAN_MIRROR:-}" ]; then
		echo "$DEBIAN_MIRROR"
		return 0
	fi
	rl_need python3
	"$(rl_python)" - "$FX_SUITE" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
		/etc/apt/sources.list.d/*.sources << 'EOF' || rl_fail "no apt source serves $FX_SUITE; set DEBIAN_MIRROR=URL"
import re, sys
suite, files = sys.argv[1], sys.argv[2:]
def stanzas(path, text):
    if path.endswith(".sources"):
        for para in re.split(r"\n\s*\n", text):
            f = {}
            for line in para.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                f[k.strip().lower()] = v.split()
            if f.get("enabled", ["yes"])[0].lower() != "no":
                yield f.get("types", []), f.get("uris", []), f.get("suites", [])
    else:
        for line in text.splitlines():
            line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(line) >= 3:
                yield [line[0]], [line[1]], [line[2]]
for path in files:
    try:
        text = open(path).read()
    except OSError:
        continue
    for types, uris, suites in stanzas(path, text):
        good = [u for u in uris if re.match(r"(https?|file):", u)]
        if "deb" in types and suite in suites and good:
            print(good[0])
            sys.exit(0)
sys.exit(1)
EOF
}

fx_need_root() { [ "$(id -u)" -eq 0 ] || rl_fail "building big needs root (debootstrap, buildah)"; }

# build_base: $FX_BUILD/big/base.tar, a minbase bookworm without apt lists, package caches or
# device nodes (what Debian's official image leaves out).
build_base() {
	local tar=$FX_BUILD/big/base.tar root=$FX_BUILD/big/rootfs mirror
	if [ "$FX_FORCE" != 1 ] && [ -s "$tar" ]; then
		fx_say "base.tar is built"
		return 0
	fi
	fx_need_root
	rl_need debootstrap
	mirror=$(debian_mirror)
	fx_remove "$root"
	mkdir -p "$FX_BUILD/big"
	fx_say "debootstrap --variant=minbase $FX_SUITE $mirror"
	timeout 1200 debootstrap --variant=minbase "$FX_SUITE" "$root" "$mirror" > "$RL_LOGS/debootstrap.log" 2>&1 ||
		fx_step_failed "$RL_LOGS/debootstrap.log" debootstrap
	find "$root/var/lib/apt/lists" "$root/var/cache/apt/archives" -maxdepth 1 -type f -delete
	rm -f "$root"/var/cache/apt/*.bin
	find "$root/dev" "$root/proc" "$root/sys" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} +
	timeout 600 tar -C "$root" --numeric-owner --xattrs --sort=name --mtime="$FX_EPOCH" -cf "$tar.part" . ||
		rl_fail "packing $root failed"
	mv "$tar.part" "$tar"
	fx_remove "$root"
	fx_say "base.tar: $(stat -c %s "$tar") bytes"
}

# build_app: $FX_BUILD/big/app/{app,root/.npm}: a Node app as `RUN npm install` leaves it as
# root, node_modules next to the code and npm's cache in /root/.npm.
build_app() {
	local top=$FX_BUILD/big/app
	if [ "$FX_FORCE" != 1 ] && [ -d "$top/app/node_modules" ] && [ -d "$top/root/.npm/_cacache" ]; then
		fx_say "the npm app is built"
		return 0
	fi
	rl_need npm jq
	fx_remove "$top"
	mkdir -p "$top/app" "$top/root"
	jq -n '{name: "regslim-fixture-app", version: "1.0.0", private: true, main: "index.js",
		dependencies: {express: "4.21.2", lodash: "4.17.21", moment: "2.30.1", axios: "1.7.9",
			typescript: "5.7.3", rxjs: "7.8.1"}}' > "$top/app/package.json"
	cat > "$top/app/index.js" << 'EOF'
// regslim fixture: a small express server, only here to carry its dependencies
const express = require('express');
const { startCase } = require('lodash');
const server = express();
server.get('/', (req, res) => res.send(startCase('served by the big fixture')));
server.listen(Number(process.env.PORT) || 8080);
EOF
	fx_say "npm install (express lodash moment axios typescript rxjs)"
	(cd "$top/app" && timeout 600 npm install --no-audit --no-fund --cache "$top/root/.npm") \
		> "$RL_LOGS/npm.log" 2>&1 || fx_step_failed "$RL_LOGS/npm.log" "npm install"
}

fx_buildah_clean() {
	[ -d "$FX_BUILD/buildah" ] || return 0
	fx_buildah rm --all > /dev/null 2>&1 || true
	fx_buildah rmi --all --force > /dev/null 2>&1 || true
	fx_remove "$FX_BUILD/buildah"
}

# The Containerfile of big. Every RUN and COPY is one layer; the base image is the first.
fx_containerfile() {
	cat << 'EOF'
# regslim's big fixture: how an image should not be built.
FROM docker.io/library/debian:bookworm
ENV LANG=C.UTF-8
# layer 2: packages installed without cleaning up: apt lists, pkgcache.bin, the downloaded
# .debs, docs, man pages and __pycache__ all stay
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip curl ca-certificates nodejs
# layer 3: deleting files of layer 2 (whiteouts), rewriting binaries with the same bytes and
# touching sources (duplicates of layer 2's files), compiling again
RUN rm -rf /usr/share/doc/nodejs /usr/share/man/man1/node* /usr/share/locale/de /var/log/apt/term.log \
        /etc/apt/apt.conf.d/01autoremove /usr/lib/python3/dist-packages/pip/_vendor/rich \
 && find /usr/lib/python3.11 -path '*/email/*' -name '*.py' -exec touch {} + \
 && for f in /usr/bin/python3.11 /usr/lib/*-linux-gnu/libcrypto.so.3 /usr/lib/*-linux-gnu/libssl.so.3; do \
        cp -p "$f" "$f.new" && cat "$f" > "$f.new" && mv "$f.new" "$f"; done \
 && python3 -m compileall -q /usr/lib/python3/dist-packages > /dev/null
# layer 4: the app with node_modules and the npm cache npm install left in /root/.npm
COPY app/ /
WORKDIR /app
CMD ["node", "/app/index.js"]
EOF
}

# build_big: the base image committed locally as docker.io/library/debian:bookworm (no registry
# is reachable), then `buildah bud` without pulling; the result goes to oci/big.
build_big() {
	local ctx=$FX_BUILD/big c mnt log=$RL_LOGS/buildah-big.log
	if fx_built "$FX_OCI/big"; then
		fx_say "big is built"
	else
		fx_need_root
		rl_need buildah skopeo jq
		build_base
		build_app
		fx_buildah_clean
		: > "$log"
		fx_say "base image from base.tar"
		c=$(fx_buildah from scratch 2>> "$log") || fx_step_failed "$log" "buildah from scratch"
		mnt=$(fx_buildah mount "$c" 2>> "$log") || fx_step_failed "$log" "buildah mount"
		timeout 600 tar -C "$mnt" --numeric-owner --xattrs --xattrs-include='*' -xpf "$ctx/base.tar" 2>> "$log" ||
			fx_step_failed "$log" "unpacking base.tar"
		fx_buildah umount "$c" >> "$log" 2>&1 || fx_step_failed "$log" "buildah umount"
		fx_buildah config --os linux --arch amd64 --cmd bash --created-by "debootstrap --variant=minbase $FX_SUITE" \
			--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c" >> "$log" 2>&1 ||
			fx_step_failed "$log" "configuring the base image"
		fx_buildah commit --format docker --rm "$c" docker.io/library/debian:bookworm >> "$log" 2>&1 ||
			fx_step_failed "$log" "committing the base image"
		fx_containerfile > "$ctx/Containerfile"
		fx_say "buildah bud (vfs, chroot isolation)"
		(cd "$ctx" && fx_buildah bud --isolation chroot --pull=never --layers --format docker \
			-t localhost/lab/big:latest -f Containerfile .) >> "$log" 2>&1 || fx_step_failed "$log" "buildah bud"
		fx_remove "$FX_OCI/big" "$FX_OCI/big-zstd"
		fx_buildah push --format oci localhost/lab/big:latest "oci:$FX_OCI/big:latest" >> "$log" 2>&1 ||
			fx_step_failed "$log" "writing oci/big"
		fx_buildah_clean
		[ "${KEEP_BUILD:-0}" = 1 ] || fx_remove "$ctx"
		fx_say "big: $(jq '.layers | length' "$(fx_manifest_file "$FX_OCI/big" latest)") layers"
	fi
	fx_zstd big
}

# ---------------------------------------------------------------- push

# fx_up HOST:PORT: a registry answers /v2/ there (200, or 401 for the auth registries).
fx_up() {
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$1/v2/") || true
	[ "$code" = 200 ] || [ "$code" = 401 ]
}

# fx_copy REGISTRY SRC REPO:TAG [skopeo args...]: one push, logged per destination.
fx_copy() {
	local reg=$1 src=$2 dst=$3 log
	shift 3
	log=$RL_LOGS/push-${reg//[.:]/_}-${dst//[\/:]/_}.log
	fx_say "push $src to $reg/$dst"
	fx_skopeo copy --dest-tls-verify=false "$@" "$src" "docker://$reg/$dst" > "$log" 2>&1 ||
		fx_step_failed "$log" "pushing $dst to $reg"
}

# fx_expect REPO:TAG MANIFEST_TYPE LAYER_TYPE: the plain registry serves REPO:TAG as a manifest of
# MANIFEST_TYPE whose layers all have LAYER_TYPE. skopeo may swap a layer for a twin with another
# compression that its blob-info cache knows; this catches it.
fx_expect() {
	local repo=${1%:*} tag=${1##*:} ctype
	ctype=$(curl -sfI --max-time 10 -H "Accept: $FX_ACCEPT" "http://$FX_REG/v2/$repo/manifests/$tag" |
		tr -d '\r' | sed -n 's/^[Cc]ontent-[Tt]ype: *//p')
	[ "$ctype" = "$2" ] || rl_fail "$FX_REG/$1 is served as '$ctype', not $2"
	curl -sf --max-time 10 -H "Accept: $FX_ACCEPT" "http://$FX_REG/v2/$repo/manifests/$tag" |
		jq -e --arg t "$3" '.layers | length > 0 and all(.mediaType == $t)' > /dev/null ||
		rl_fail "$FX_REG/$1: not every layer is $3"
}

push_single() { # big|tiny
	local img=$1
	{ fx_built_any "$FX_OCI/$img" && fx_built_any "$FX_OCI/$img-zstd"; } || rl_fail "$img is not built (fixtures.sh $img)"
	fx_copy "$FX_REG" "oci:$FX_OCI/$img:latest" "lab/$img:latest" --format v2s2
	fx_copy "$FX_REG" "oci:$FX_OCI/$img:latest" "library/$img:latest" --format v2s2
	fx_copy "$FX_REG" "oci:$FX_OCI/$img:latest" "lab/$img:oci" --format oci
	# --preserve-digests, or skopeo may push the gzip twin of a layer instead of the zstd blob
	fx_copy "$FX_REG" "oci:$FX_OCI/$img-zstd:latest" "lab/$img:zstd" --preserve-digests
	fx_expect "lab/$img:latest" "$MT_V2S2" "$MT_V2S2_LAYER"
	fx_expect "library/$img:latest" "$MT_V2S2" "$MT_V2S2_LAYER"
	fx_expect "lab/$img:oci" "$MT_OCI" application/vnd.oci.image.layer.v1.tar+gzip
	fx_expect "lab/$img:zstd" "$MT_OCI" application/vnd.oci.image.layer.v1.tar+zstd
	[ "$img" = tiny ] || return 0
	[ -f "$FX_RAW/manifest.json" ] || rl_fail "tiny's uncompressed copy is missing (fixtures.sh tiny)"
	fx_copy "$FX_REG" "dir:$FX_RAW" lab/tiny:raw --preserve-digests
	fx_expect lab/tiny:raw "$MT_OCI" application/vnd.oci.image.layer.v1.tar
}

push_multi() {
	fx_built_any "$FX_OCI/multi" || rl_fail "multi is not built (fixtures.sh multi)"
	fx_copy "$FX_REG" "oci:$FX_OCI/multi:index" lab/multi:latest --all --format oci
	fx_copy "$FX_REG" "oci:$FX_OCI/multi:index" lab/multi:v2s2 --all --format v2s2
	fx_copy "$FX_REG" "oci:$FX_OCI/multi:index" library/multi:latest --all --format v2s2
	fx_expect_list lab/multi:latest "$MT_INDEX"
	fx_expect_list lab/multi:v2s2 "$MT_LIST"
	fx_expect_list library/multi:latest "$MT_LIST"
}

# fx_expect_list REPO:TAG TYPE: REPO:TAG is served as TYPE (an index or manifest list).
fx_expect_list() {
	local ctype
	ctype=$(curl -sfI --max-time 10 -H "Accept: $MT_INDEX, $MT_LIST" "http://$FX_REG/v2/${1%:*}/manifests/${1##*:}" |
		tr -d '\r' | sed -n 's/^[Cc]ontent-[Tt]ype: *//p')
	[ "$ctype" = "$2" ] || rl_fail "$FX_REG/$1 is served as '$ctype', not $2"
}

# push_auth: tiny and multi into the htpasswd and token registries, those that run.
push_auth() {
	local reg creds=$RL_USER:$RL_PASS
	{ fx_built_any "$FX_OCI/tiny" && fx_built_any "$FX_OCI/multi"; } || rl_fail "tiny and multi are not built"
	for reg in "$FX_REG_AUTH" "$FX_REG_TOKEN"; do
		if ! fx_up "$reg"; then
			fx_say "nothing answers on $reg, not pushing there"
			continue
		fi
		fx_copy "$reg" "oci:$FX_OCI/tiny:latest" lab/tiny:latest --format v2s2 --dest-creds "$creds"
		fx_copy "$reg" "oci:$FX_OCI/tiny:latest" library/tiny:latest --format v2s2 --dest-creds "$creds"
		fx_copy "$reg" "oci:$FX_OCI/multi:index" lab/multi:latest --all --format oci --dest-creds "$creds"
	done
}

# fx_built_any LAYOUT: LAYOUT exists (whatever FORCE says).
fx_built_any() { [ -f "$1/index.json" ]; }

cmd_push() {
	local what=("$@") w
	rl_need skopeo jq curl
	fx_up "$FX_REG" || rl_fail "no registry answers on $FX_REG (registry.sh start)"
	if [ ${#what[@]} -eq 0 ]; then
		for w in big tiny multi; do fx_built_any "$FX_OCI/$w" && what+=("$w"); done
		what+=(auth)
	fi
	for w in "${what[@]}"; do
		case $w in
		big | tiny) push_single "$w" ;;
		multi) push_multi ;;
		auth) push_auth ;;
		*) rl_fail "push: no image '$w' (big, tiny, multi, auth)" ;;
		esac
	done
}

# ---------------------------------------------------------------- sizes, list, layer

# cmd_sizes: one row per layer of each single-platform tag, compressed and uncompressed sizes
# as the registry serves them, in sizes.tsv; a blob shared by several tags is read once.
cmd_sizes() {
	local tsv=$FX_OUT/sizes.tsv ref repo tag ctype body n mt dg sz
	local -A raw=()
	rl_need jq curl zstd gzip column=bsdextrautils
	fx_up "$FX_REG" || rl_fail "no registry answers on $FX_REG (registry.sh start)"
	printf 'repo:tag\tcontent_type\tlayer\tlayer_mediatype\tdigest\tcompressed\tuncompressed\n' > "$tsv.part"
	for ref in lab/big:latest lab/big:oci lab/big:zstd lab/tiny:latest lab/tiny:oci lab/tiny:zstd lab/tiny:raw; do
		repo=${ref%:*} tag=${ref##*:}
		ctype=$(curl -sfI --max-time 10 -H "Accept: $FX_ACCEPT" "http://$FX_REG/v2/$repo/manifests/$tag" |
			tr -d '\r' | sed -n 's/^[Cc]ontent-[Tt]ype: *//p') || continue
		[ -n "$ctype" ] || continue
		body=$(curl -sf --max-time 10 -H "Accept: $FX_ACCEPT" "http://$FX_REG/v2/$repo/manifests/$tag")
		n=0
		while read -r mt dg sz; do
			n=$((n + 1))
			if [ -z "${raw[$dg]:-}" ]; then
				case $mt in
				*+zstd) raw[$dg]=$(fx_blob "$repo" "$dg" | zstd -dc | wc -c) ;;
				*gzip) raw[$dg]=$(fx_blob "$repo" "$dg" | gzip -dc | wc -c) ;;
				*) raw[$dg]=$sz ;;
				esac
			fi
			printf '%s\t%s\t%d\t%s\t%s\t%s\t%s\n' "$ref" "$ctype" "$n" "$mt" "$dg" "$sz" "${raw[$dg]}" >> "$tsv.part"
		done < <(jq -r '.layers[] | "\(.mediaType) \(.digest) \(.size)"' <<< "$body")
	done
	mv "$tsv.part" "$tsv"
	column -t -s $'\t' "$tsv"
}

fx_blob() { curl -sf --max-time 300 "http://$FX_REG/v2/$1/blobs/$2" || rl_fail "reading blob $2 of $FX_REG/$1 failed"; }

cmd_list() {
	local repo
	rl_need jq curl
	fx_up "$FX_REG" || rl_fail "no registry answers on $FX_REG (registry.sh start)"
	for repo in $(curl -sf --max-time 10 "http://$FX_REG/v2/_catalog?n=1000" | jq -r '.repositories[]'); do
		printf '%s: %s\n' "$repo" "$(curl -sf --max-time 10 "http://$FX_REG/v2/$repo/tags/list" | jq -c .tags)"
	done
}

# fx_manifest_file LAYOUT TAG: the manifest blob that TAG names in LAYOUT.
fx_manifest_file() {
	local d
	d=$(jq -r --arg t "$2" '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)][0].digest // empty' \
		"$1/index.json")
	[ -n "$d" ] || rl_fail "$1 has no tag $2"
	echo "$1/blobs/sha256/${d#sha256:}"
}

cmd_layer() {
	local lay=$FX_OCI/${1:?usage: fixtures.sh layer IMAGE N [TAG]} n=${2:?usage: fixtures.sh layer IMAGE N [TAG]} man d
	rl_need jq
	[[ $n =~ ^[1-9][0-9]*$ ]] || rl_fail "layer: N counts from 1, not '$n'"
	fx_built_any "$lay" || rl_fail "no layout $lay (fixtures.sh ${1%-zstd})"
	man=$(fx_manifest_file "$lay" "${3:-latest}")
	d=$(jq -r --argjson i "$((n - 1))" '.layers[$i].digest // empty' "$man")
	[ -n "$d" ] || rl_fail "$1 has no layer $n"
	echo "$lay/blobs/sha256/${d#sha256:}"
}

fx_usage() {
	echo "usage: $RL_ME [all | tiny-only | big | tiny | multi | edge [DIR] | base | app" \
		"| push [big|tiny|multi|auth]... | sizes | list | layer IMAGE N [TAG]]" >&2
	exit 2
}

case ${1:-all} in
all) build_big && build_tiny && build_multi && cmd_push big tiny multi auth && cmd_sizes && cmd_list ;;
tiny-only) build_tiny && build_multi && cmd_push tiny multi auth && cmd_sizes && cmd_list ;;
big) build_big ;;
tiny) build_tiny ;;
multi) build_multi ;;
edge) build_edge "${2:-}" ;;
base) build_base ;;
app) build_app ;;
push) cmd_push "${@:2}" ;;
sizes) cmd_sizes ;;
list) cmd_list ;;
layer) cmd_layer "${@:2}" ;;
*) fx_usage ;;
esac
