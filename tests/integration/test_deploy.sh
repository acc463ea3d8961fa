#!/usr/bin/env bash
# test_deploy.sh - deploy/ works: the image builds, starts and serves; compose and Kubernetes
# files agree with it.
#
# No container registry is reachable here and there is no Docker engine, so the test makes what
# the Dockerfile's FROM lines name itself and builds with Debian's buildah:
#  1. base images: `debootstrap --variant=minbase bookworm` from the machine's Debian mirror (the
#     first `deb` URI of /etc/apt/sources.list{,.d/*} serving bookworm), committed with buildah as
#     debian:bookworm, then the same rootfs slimmed the way Debian's -slim images are (dpkg
#     path-excludes for docs, man pages, locales; what is installed removed) as
#     debian:bookworm-slim. The bootstrapped rootfs is cached as a tarball in
#     ${TMPDIR:-/tmp}/regslim-deploy-cache (one per day and mirror; RS_DEPLOY_CACHE moves it): a
#     rerun skips debootstrap, a fresh machine runs it.
#  2. the build context filter: a FROM scratch / COPY . probe next to a copy of
#     deploy/Dockerfile.dockerignore sees only what the Dockerfile needs.
#  3. `buildah bud --isolation chroot --pull=never --layers=false --format docker` of
#     deploy/Dockerfile from the repository root as regslim:test (docker format, as `docker build`
#     makes: an OCI image config has no HEALTHCHECK).
#  4. the runtime image: its size (printed; bounded), no compiler, no -dev package, no apt caches,
#     every shared library of regslim resolved; binary and configuration not writable by uid 10001.
#  5. the image's ENTRYPOINT + CMD run with `buildah run --isolation chroot --user 10001:10001`
#     (chroot isolation shares the host network; podman/crun cannot start containers here) with a
#     lab configuration mounted at the path the CMD reads and a lab directory as the data volume:
#     /healthz, a skopeo pull of library/tiny:latest through it (digests == the upstream's, blobs in
#     the volume), uid/gid 10001 and no capabilities in /proc/<pid>/status, the image's HEALTHCHECK
#     command run inside the container (0 while serving, non-zero once stopped), a graceful stop on
#     SIGTERM, and nothing written to the image's root filesystem (what read_only: true /
#     readOnlyRootFilesystem need).
#  6. deploy/compose.yaml, deploy/kubernetes/*.yaml and deploy/kubernetes-cluster/*.yaml parsed
#     (deploy_manifests.py) and checked
#     against the image and the docs; both ConfigMaps pass check-config in the image;
#     deploy/haproxy/haproxy.cfg passes haproxy -c.
# Buildah's storage (vfs) lives in the lab directory and is deleted at exit, as are its containers.
# Needs root. Missing packages, an unreachable mirror or a failed build are failures, not skips.
#
# Env (set by ctest): REGSLIM_BIN, LAB_PORT_BASE. Optional: RS_DEPLOY_CACHE, RS_DEPLOY_MIRROR (the
# Debian mirror instead of the first one of the apt sources),
# RS_DEPLOY_MAX_MB (bound on the image size, default 120), RS_DEPLOY_LAYER_MAX_MB (bound on what
# the Dockerfile adds to bookworm-slim, default 30).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-840} # below ctest's 900 s
# shellcheck source=lib.sh
. "$HERE/lib.sh"

# the Debian release the Dockerfile builds on (its ARG DEBIAN_RELEASE)
SUITE=$(sed -n 's/^ARG DEBIAN_RELEASE=\([a-z]*\).*/\1/p' "$RS_TOP/deploy/Dockerfile" | head -n 1)
SUITE=${SUITE:-bookworm}
MAX_MB=${RS_DEPLOY_MAX_MB:-120}
LAYER_MAX_MB=${RS_DEPLOY_LAYER_MAX_MB:-30}
IMAGE=regslim:test
CACHE=${RS_DEPLOY_CACHE:-${TMPDIR:-/tmp}/regslim-deploy-cache}

# fatal NAME WHY: FAIL NAME and end the test (the rest depends on it).
fatal() {
	fail "$1" "$2"
	finish
}

lab_setup
W=$REGSLIM_LAB/deploy
mkdir -p "$W/tmp" "$W/storage"
[ "$(id -u)" = 0 ] || fatal setup "needs root (debootstrap, buildah's vfs storage, a chroot as uid 10001)"
# the images the FROM lines name are the two this test makes
froms=$(awk 'toupper($1) == "FROM" { print $2 }' "$RS_TOP/deploy/Dockerfile" | sed "s/\${DEBIAN_RELEASE}/$SUITE/g" | LC_ALL=C sort -u | tr '\n' ' ')
expect_eq "Dockerfile's FROM images are debian:$SUITE and debian:$SUITE-slim (what this test makes)" "$froms" "debian:$SUITE debian:$SUITE-slim "

# ---------------------------------------------------------------- packages
T0=$(date +%s)
if ! timeout 600 bash "$RS_TOP/scripts/deps.sh" test > "$LOGS/deps.log" 2>&1; then
	fatal deps "scripts/deps.sh test failed: $(tail -n 3 "$LOGS/deps.log" | tr '\n' ' ')"
fi
for c in buildah debootstrap skopeo jq curl; do
	command -v "$c" > /dev/null || fatal deps "$c not installed after scripts/deps.sh test"
done
"$PY" -c 'import yaml' 2> /dev/null || fatal deps "$PY cannot import yaml (python3-yaml)"
pass "deps: buildah $(buildah --version | awk '{print $3}'), debootstrap, python3-yaml"

# bh ARGS...: buildah on the lab's own storage (vfs), its temporary files in the lab too; 300 s at
# most unless BH_T says otherwise.
export CONTAINERS_REGISTRIES_CONF=$W/registries.conf
printf 'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n' > "$CONTAINERS_REGISTRIES_CONF"
BH=(buildah --root "$W/storage/root" --runroot "$W/storage/run" --storage-driver vfs)
bh() { TMPDIR=$W/tmp timeout "${BH_T:-300}" "${BH[@]}" "$@"; }

# deploy_cleanup: (exit hook) stop the image's regslim by its PID, remove the buildah containers,
# unmount whatever is left mounted under $W (a killed chroot run or debootstrap leaves bind mounts
# of /dev, /proc, /sys) and delete $W without crossing into any mount.
RSD_PID=
deploy_cleanup() {
	local i mp
	if [ -n "$RSD_PID" ] && kill -0 "$RSD_PID" 2> /dev/null; then
		kill -TERM "$RSD_PID"
		for ((i = 0; i < 100; i++)); do kill -0 "$RSD_PID" 2> /dev/null || break; sleep 0.1; done
		kill -KILL "$RSD_PID" 2> /dev/null
	fi
	lab_stop aux-image-run 10
	bh rm --all > /dev/null 2>&1
	awk -v w="$W/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r mp; do
		umount -l "$mp"
	done
	rm -rf --one-file-system "$W"
}
lab_on_exit deploy_cleanup

# ---------------------------------------------------------------- 1. base images
# deb_mirror SUITE: the first `deb` URI (http/https) of the apt sources that serves SUITE, in apt's
# order (sources.list, then sources.list.d/ by name; one-line .list and deb822 .sources files).
deb_mirror() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do
		[ -f "$f" ] || continue
		case $f in
			*.list)
				sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk -v s="$1" '$1 == "deb" && $3 == s { print $2 }' ;;
			*.sources)
				awk -v s="$1" 'BEGIN { RS = "" }
					{
						t = ""; u = ""; su = ""; en = "yes"; k = ""
						n = split($0, L, "\n")
						for (i = 1; i <= n; i++) {
							l = L[i]
							if (l ~ /^#/) continue
							if (l ~ /^[ \t]/) v = l
							else { k = tolower(substr(l, 1, index(l, ":") - 1)); v = substr(l, index(l, ":") + 1) }
							if (k == "types") t = t " " v
							else if (k == "uris") u = u " " v
							else if (k == "suites") su = su " " v
							else if (k == "enabled") en = v
						}
						if (en ~ /no/) next
						if ((t " ") !~ / deb / || (su " ") !~ (" " s " ")) next
						m = split(u, U, " ")
						for (j = 1; j <= m; j++) print U[j]
					}' "$f" ;;
		esac
	done | grep -E '^https?://' | sed 's,/*$,,' | head -n 1
}
MIRROR_URL=${RS_DEPLOY_MIRROR:-$(deb_mirror "$SUITE")}
[ -n "$MIRROR_URL" ] || fatal mirror "no deb URI serving $SUITE in /etc/apt/sources.list or sources.list.d/ (set RS_DEPLOY_MIRROR)"
if ! curl -sSf -o /dev/null --max-time 30 "$MIRROR_URL/dists/$SUITE/Release" 2> "$LOGS/mirror.err"; then
	fatal mirror "$MIRROR_URL/dists/$SUITE/Release not reachable: $(head -c 300 "$LOGS/mirror.err")"
fi
pass "mirror: $MIRROR_URL serves $SUITE"

# The bootstrapped minbase rootfs, as a tarball cached per day and mirror (older ones deleted):
# a rerun the same day skips debootstrap (download and dpkg), a fresh machine makes it.
mkdir -p "$CACHE"
TARBALL=$CACHE/$SUITE-minbase-$(date -u +%Y%m%d)-$(printf '%s' "$MIRROR_URL" | sha256sum | cut -c1-12).tar.gz
find "$CACHE" -maxdepth 1 -name "$SUITE-minbase-*.tar.gz" ! -path "$TARBALL" -mtime +0 -delete 2> /dev/null

# base_container [TARBALL]: a new scratch container, mounted; prints "ID MOUNTPOINT". With
# TARBALL, the tarball is unpacked into it.
base_container() {
	local c m
	c=$(bh from scratch) && m=$(bh mount "$c") || return 1
	[ -z "${1:-}" ] || timeout 300 tar -C "$m" --numeric-owner -xpzf "$1" || return 1
	echo "$c $m"
}
# base_commit ID NAME: commit a base container with Debian's image defaults (PATH, CMD bash).
base_commit() {
	bh umount "$1" > /dev/null
	bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash "$1" || return 1
	bh commit -q --rm "$1" "$2" > /dev/null
}

t=$(date +%s)
if [ -s "$TARBALL" ]; then
	echo "# debootstrap rootfs cached: $TARBALL"
	read -r c m < <(base_container "$TARBALL") || fatal base_image "unpack $TARBALL into a scratch container"
else
	# straight into the container's rootfs (no copy), then saved for the next run
	read -r c m < <(base_container) || fatal base_image "buildah from scratch"
	if ! timeout 600 debootstrap --variant=minbase "$SUITE" "$m" "$MIRROR_URL" > "$LOGS/debootstrap.log" 2>&1; then
		fatal debootstrap "debootstrap --variant=minbase $SUITE from $MIRROR_URL: $(grep -E '^[EW]:' "$LOGS/debootstrap.log" | tail -n 2 | tr '\n' ' ') (log $LOGS/debootstrap.log)"
	fi
	# as a container base: no downloaded packages or indexes, no host identity; dpkg without
	# fsync like in Debian's images (docker-apt-speedup; their apt hook that deletes caches is
	# left out on purpose: the Dockerfile must clean up after itself)
	rm -rf "$m"/var/cache/apt/archives/*.deb "$m"/var/cache/apt/*.bin "$m"/var/lib/apt/lists/*
	rm -f "$m/etc/hostname" && : > "$m/etc/resolv.conf"
	echo force-unsafe-io > "$m/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
	if ! timeout 300 tar -C "$m" --numeric-owner -czf "$CACHE/.partial-$$.tar.gz" . \
		|| ! mv -f "$CACHE/.partial-$$.tar.gz" "$TARBALL"; then
		rm -f "$CACHE/.partial-$$.tar.gz"
		fatal debootstrap_cache "could not write $TARBALL"
	fi
fi
t_db=$(($(date +%s) - t))
base_commit "$c" "debian:$SUITE" > "$LOGS/commit-base.log" 2>&1 || fatal base_image "commit debian:$SUITE: $(tail -n 2 "$LOGS/commit-base.log")"
# -slim: the same rootfs without what Debian's slim variant drops (docs but the copyright files,
# man and info pages, locales), and dpkg told not to install them again
read -r c m < <(base_container "$TARBALL") || fatal base_image "unpack $TARBALL into a scratch container"
cat > "$m/etc/dpkg/dpkg.cfg.d/docker" << 'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
find "$m/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$m/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$m"/usr/share/{groff,info,linda,lintian/overrides,locale,man}/*
base_commit "$c" "debian:$SUITE-slim" > "$LOGS/commit-slim.log" 2>&1 || fatal base_image "commit debian:$SUITE-slim: $(tail -n 2 "$LOGS/commit-slim.log")"
pass "base images debian:$SUITE and debian:$SUITE-slim ($(($(date +%s) - t)) s, debootstrap or cache $t_db s)"

# ---------------------------------------------------------------- 2. build context filter
mkdir -p "$W/probe"
printf 'FROM scratch\nCOPY . /ctx/\n' > "$W/probe/Dockerfile"
cp "$RS_TOP/deploy/Dockerfile.dockerignore" "$W/probe/Dockerfile.dockerignore"
ctx=
if (cd "$RS_TOP" && bh bud --isolation chroot --pull=never --layers=false -f "$W/probe/Dockerfile" -t probe:ctx .) > "$LOGS/probe.log" 2>&1 \
	&& c=$(bh from --pull=never probe:ctx) && m=$(bh mount "$c"); then
	ctx=$({ ls -A "$m/ctx"; ls -A "$m/ctx/deploy" 2> /dev/null | sed 's,^,deploy/,'; } | LC_ALL=C sort | tr '\n' ' ')
	bh rm "$c" > /dev/null 2>&1
	bh rmi probe:ctx > /dev/null 2>&1
fi
expect_eq "build context (Dockerfile.dockerignore): only what the Dockerfile copies" "$ctx" \
	"CMakeLists.txt config deploy deploy/regslim.json optimizer proxy "

# ---------------------------------------------------------------- 3. the build
t=$(date +%s)
if ! (cd "$RS_TOP" && BH_T=600 bh bud --isolation chroot --pull=never --layers=false --format docker \
	-f deploy/Dockerfile -t "$IMAGE" .) > "$LOGS/build.log" 2>&1; then
	fatal build "buildah bud deploy/Dockerfile: $(grep -E 'error|Error|ERROR' "$LOGS/build.log" | tail -n 2 | tr '\n' ' ') (log $LOGS/build.log)"
fi
pass "buildah bud deploy/Dockerfile ($(($(date +%s) - t)) s)"
bh inspect --type image "$IMAGE" > "$W/inspect.json" || fatal inspect "buildah inspect $IMAGE"

# ---------------------------------------------------------------- 4. the runtime image
# image_size NAME: the sum of NAME's layer sizes, uncompressed, from the records of buildah's vfs
# storage (`buildah images` only prints a rounded "93.6 MB"). The compressed size is what a
# push writes (gzip layers in an OCI layout).
image_size() {
	local top
	top=$(jq -r --arg n "$1" '.[] | select(.names[]? == $n) | .layer' "$W/storage/root/vfs-images/images.json")
	jq -r --arg t "$top" 'INDEX(.id) as $L
		| [$L[$t] | recurse(if .parent then $L[.parent] else empty end) | .["diff-size"]] | add // 0' \
		"$W/storage/root/vfs-layers/layers.json"
}
SIZE=$(image_size "localhost/$IMAGE")
LAST=$((SIZE - $(image_size "docker.io/library/debian:$SUITE-slim")))
ZSIZE=0
if bh push -q "$IMAGE" "oci:$W/oci:test" > "$LOGS/push.log" 2>&1; then
	mf=$(jq -r '.manifests[0].digest' "$W/oci/index.json")
	ZSIZE=$(jq '[.layers[].size] | add' "$W/oci/blobs/sha256/${mf#sha256:}")
fi
rm -rf "$W/oci"
echo "# image $IMAGE: $SIZE bytes ($((SIZE / 1000000)) MB) uncompressed, $ZSIZE bytes ($((ZSIZE / 1000000)) MB) gzip-compressed; added to debian:$SUITE-slim: $LAST bytes"
expect "image size ($((SIZE / 1000000)) MB) <= $MAX_MB MB" "[ '${SIZE:-x}' -gt 0 ] && [ '$SIZE' -le $((MAX_MB * 1000000)) ]" \
	"$SIZE bytes"
expect "added to debian:$SUITE-slim ($((LAST / 1000000)) MB) <= $LAYER_MAX_MB MB" "[ '${LAST:-x}' -gt 0 ] && [ '$LAST' -le $((LAYER_MAX_MB * 1000000)) ]" \
	"$LAST bytes"
expect "compressed size ($((ZSIZE / 1000000)) MB) measured" "[ '${ZSIZE:-0}' -gt 0 ]" "buildah push to an OCI layout: $(tail -n 1 "$LOGS/push.log")"

CTR=rsdeploy-$$
bh from --pull=never --name "$CTR" "$IMAGE" > /dev/null 2>&1 || fatal container "buildah from $IMAGE"
MNT=$(bh mount "$CTR") || fatal container "buildah mount $CTR"
dpkg-query --admindir="$MNT/var/lib/dpkg" -W -f '${Package} ${Status}\n' 2> /dev/null | awk '$NF == "installed" { print $1 }' > "$W/packages"
expect "runtime: dpkg database readable ($(wc -l < "$W/packages") packages)" "[ \$(wc -l < '$W/packages') -gt 50 ]" "dpkg-query on the image's rootfs"
devp=$(grep -E -- '-dev(:|$)' "$W/packages" | tr '\n' ' ')
expect_eq "runtime: no -dev packages" "$devp" ""
toolp=$(grep -xE 'gcc(-[0-9]+)?|cpp(-[0-9]+)?|g\+\+(-[0-9]+)?|clang(-[0-9]+)?|cmake|make|binutils|build-essential|pkg-config|pkgconf' "$W/packages" | tr '\n' ' ')
expect_eq "runtime: no compiler or build tool packages" "$toolp" ""
toolf=$(for f in cc gcc c++ g++ cpp clang cmake make ld as; do [ -e "$MNT/usr/bin/$f" ] || [ -e "$MNT/usr/local/bin/$f" ] && echo "$f"; done | tr '\n' ' ')
expect_eq "runtime: no compiler binaries (cc gcc cmake make ld as ...)" "$toolf" ""
caches=$(cd "$MNT" && { ls -d var/cache/apt/*.bin var/cache/apt/archives/*.deb 2> /dev/null; find var/lib/apt/lists -type f ! -name lock 2> /dev/null; } | head -n 5 | tr '\n' ' ')
expect_eq "runtime: no apt caches or package lists left" "$caches" ""
expect "runtime: regslim binary and configuration root-owned, not writable by uid 10001" \
	"[ \"\$(stat -c '%u %a' '$MNT/usr/local/bin/regslim')\" = '0 755' ] && [ \"\$(stat -c '%u' '$MNT/etc/regslim/regslim.json')\" = 0 ] && [ \"\$(stat -c '%a' '$MNT/etc/regslim/regslim.json')\" = 644 ]" \
	"$(stat -c '%n %u %a' "$MNT/usr/local/bin/regslim" "$MNT/etc/regslim/regslim.json" 2>&1 | tr '\n' ' ')"
expect "runtime: /var/lib/regslim owned by 10001:10001" "[ \"\$(stat -c '%u:%g' '$MNT/var/lib/regslim')\" = 10001:10001 ]" \
	"$(stat -c '%u:%g %a' "$MNT/var/lib/regslim" 2>&1)"
bh umount "$CTR" > /dev/null 2>&1

# the entrypoint and command the image runs; the HEALTHCHECK's command (docker format)
mapfile -t ENTRY < <(jq -r '.OCIv1.config.Entrypoint[]?' "$W/inspect.json")
mapfile -t CMD < <(jq -r '.OCIv1.config.Cmd[]?' "$W/inspect.json")
mapfile -t HC < <(jq -r '.Docker.config.Healthcheck.Test[]?' "$W/inspect.json")
expect "image: HEALTHCHECK kept (CMD form, asks /healthz)" "[ '${HC[0]:-}' = CMD ] && printf '%s ' \"\${HC[@]}\" | grep -q /healthz" \
	"Healthcheck.Test: $(jq -c '.Docker.config.Healthcheck' "$W/inspect.json")"
CONF=${CMD[2]:-/etc/regslim/regslim.json} # serve --config FILE
[ "${CMD[1]:-}" = --config ] || fail "image: CMD serve --config FILE" "CMD ${CMD[*]}"

# crun ARGS...: a command in the container as uid 10001, the lab configuration at the CMD's
# directory and the lab data directory as the volume
RSD_PORT=$((LAB_PORT_BASE + 50))
mkdir -p "$W/etc" "$W/data"
chown 10001:10001 "$W/data" && chmod 0750 "$W/data"
# as `docker run -v NAME:/var/lib/regslim` does, the lab's directory replaces the image's anonymous
# volume (buildah run would otherwise mount its own volume over the -v bind)
bh config --volume /var/lib/regslim- "$CTR" || fail "buildah config --volume /var/lib/regslim-" "failed"
RUN=(run --isolation chroot --user 10001:10001 -v "$W/etc:$(dirname "$CONF"):ro" -v "$W/data:/var/lib/regslim" "$CTR" --)
crun() { bh "${RUN[@]}" "$@"; }
rc=0
BH_T=60 crun ldd "${ENTRY[0]}" > "$W/ldd" 2>&1 || rc=$?
expect "runtime: every shared library of regslim resolves (ldd in the image)" \
	"[ $rc = 0 ] && grep -q libmicrohttpd '$W/ldd' && ! grep -q 'not found' '$W/ldd'" \
	"exit $rc: $(grep 'not found' "$W/ldd" | head -n 3 | tr '\n' ' ') $(tail -n 1 "$W/ldd")"

# ---------------------------------------------------------------- 5. run it
upstream_start
cat > "$W/etc/$(basename "$CONF")" << EOF
{
  "listen": "127.0.0.1:$RSD_PORT",
  "data_dir": "/var/lib/regslim",
  "shutdown_grace_s": 5,
  "optimize": {"enabled": false},
  "upstreams": [{"name": "docker.io", "url": "http://$REG_PLAIN", "default": true}]
}
EOF
chmod 0755 "$W/etc" && chmod 0644 "$W/etc/$(basename "$CONF")"
check "check-config in the image (uid 10001) accepts the lab configuration" crun "${ENTRY[0]}" check-config "$CONF"
touch "$W/before-serve"
sleep 1
echo "# $(date -u +%T) buildah run --user 10001:10001 $CTR -- ${ENTRY[*]} ${CMD[*]}" >> "$LOGS/regslim-image.log"
# the PID lab_spawn records is timeout's (env execs it); regslim is found below it
lab_spawn aux-image-run "$LOGS/regslim-image.log" env TMPDIR="$W/tmp" timeout 600 "${BH[@]}" "${RUN[@]}" "${ENTRY[@]}" "${CMD[@]}"
# descendants PID: every process below PID
descendants() {
	local c
	for c in $(cat /proc/"$1"/task/*/children 2> /dev/null); do
		echo "$c"
		descendants "$c"
	done
}
code=
for ((i = 0; i < 150; i++)); do
	lab_alive aux-image-run || break
	if [ -z "$RSD_PID" ]; then
		for p in $(descendants "$(lab_pid aux-image-run)"); do
			[ "$(cat /proc/"$p"/comm 2> /dev/null)" = regslim ] && RSD_PID=$p
		done
	fi
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$RSD_PORT/healthz") || true
	[ "$code" = 200 ] && [ -n "$RSD_PID" ] && break
	sleep 0.2
done
if [ "$code" != 200 ] || [ -z "$RSD_PID" ]; then
	fail "image's regslim serves /healthz" "code '$code', pid '$RSD_PID'"
	log_tail "$LOGS/regslim-image.log"
	finish
fi
pass "image's regslim (ENTRYPOINT + CMD, pid $RSD_PID) answers /healthz 200 on 127.0.0.1:$RSD_PORT"
st=$(grep -E '^(Uid|Gid|Groups|CapEff):' /proc/"$RSD_PID"/status | awk '{ $1 = $1; print }' | tr '\n' ';')
expect_eq "runs as uid/gid 10001 without capabilities (/proc/$RSD_PID/status)" "$st" \
	"Uid: 10001 10001 10001 10001;Gid: 10001 10001 10001 10001;Groups: 10001;CapEff: 0000000000000000;"
expect_eq "runs the image's entrypoint and command" "$(tr '\0' ' ' < /proc/"$RSD_PID"/cmdline)" "${ENTRY[*]} ${CMD[*]} "

MIRROR=127.0.0.1:$RSD_PORT
d=$REGSLIM_LAB/pulls/deploy-tiny
# the upstream's platform manifest, config and layers (an index's own digest left out: skopeo
# copies the linux/amd64 manifest)
exp=$(image_blobs "$REG_PLAIN" library/tiny latest)
manifest_get "$REG_PLAIN" library/tiny latest | jq -e .manifests > /dev/null 2>&1 && exp=$(echo "$exp" | tail -n +2)
exp=$(echo "$exp" | tr '\n' ' ')
if check "skopeo pull library/tiny:latest through the image's regslim" skopeo_pull "docker://$MIRROR/library/tiny:latest" "dir:$d"; then
	expect_eq "pulled manifest, config and layers == the upstream's digests" \
		"$(sha256_of "$d/manifest.json") $(manifest_blobs "$d/manifest.json" | tr '\n' ' ')" "$exp"
	bad=
	for f in $(manifest_blobs "$d/manifest.json"); do
		[ "$(sha256_of "$d/${f#sha256:}" 2> /dev/null)" = "$f" ] || bad="$bad $f"
		store_has_blob "$f" "$W/data" || bad="$bad not-in-volume:$f"
	done
	if [ -z "$bad" ]; then
		pass "every blob hashes to its digest and is stored in the data volume"
	else
		fail "every blob hashes to its digest and is stored in the data volume" "$bad; the volume holds: $(cd "$W/data" && find . -type f | head -n 8 | tr '\n' ' ')"
	fi
fi
# the HEALTHCHECK asks 127.0.0.1:5000 (the image's port); this lab's regslim listens on $RSD_PORT
HC_CMD=("${HC[@]:1}")
HC_CMD=("${HC_CMD[@]//\/dev\/tcp\/127.0.0.1\/5000/\/dev\/tcp\/127.0.0.1\/$RSD_PORT}")
expect "HEALTHCHECK command rewritten to this lab's port" "printf '%s' \"\${HC_CMD[*]}\" | grep -q '/dev/tcp/127.0.0.1/$RSD_PORT '" \
	"no /dev/tcp/127.0.0.1/5000 in: ${HC[*]}"
check "HEALTHCHECK command in the container: healthy while serving" crun "${HC_CMD[@]}"

# graceful stop by PID, then the same health check must report unhealthy
kill -TERM "$RSD_PID"
for ((i = 0; i < 200; i++)); do lab_alive aux-image-run || break; sleep 0.1; done
rc=0
lab_stop aux-image-run 5 || rc=$?
expect_eq "SIGTERM: regslim (and buildah run) exit 0" "$rc" 0
kill -0 "$RSD_PID" 2> /dev/null && fail "regslim $RSD_PID gone after SIGTERM" "still running"
RSD_PID=
expect_eq "the image's regslim logged no error-level line" "$(grep -cE '"level": ?"error"' "$LOGS/regslim-image.log")" 0
rc=0
BH_T=30 crun "${HC_CMD[@]}" > "$LOGS/hc-down.log" 2>&1 || rc=$?
expect "HEALTHCHECK command: unhealthy once regslim is stopped" "[ $rc -ne 0 ]" "exit 0 with nothing listening on 127.0.0.1:$RSD_PORT"
# nothing written to the image's filesystem while serving (run/.containerenv is buildah's own)
MNT=$(bh mount "$CTR")
written=$(cd "$MNT" && find . -newer "$W/before-serve" ! -path ./run ! -path ./run/.containerenv | head -n 5 | tr '\n' ' ')
expect_eq "serving wrote nothing to the image's root filesystem (read-only root is fine)" "$written" ""
bh umount "$CTR" > /dev/null 2>&1

# ---------------------------------------------------------------- 6. compose and Kubernetes
VERSION=$(sed -n 's/^project(regslim VERSION \([0-9.]*\).*/\1/p' "$RS_TOP/CMakeLists.txt")
"$PY" "$HERE/deploy_manifests.py" "$RS_TOP/deploy" "$W/inspect.json" "$VERSION" "$W/etc/configmap.json" "$W/cluster.json" > "$W/manifests.out" 2> "$W/manifests.err" \
	|| fail "deploy_manifests.py" "$(tail -n 2 "$W/manifests.err" | tr '\n' ' ')"
while IFS=$'\t' read -r res name why; do
	if [ "$res" = PASS ]; then pass "$name"; else fail "$name" "$why"; fi
done < "$W/manifests.out"
if [ -s "$W/etc/configmap.json" ]; then
	check "kubernetes ConfigMap's configuration passes check-config in the image" \
		crun "${ENTRY[0]}" check-config "$(dirname "$CONF")/configmap.json"
fi
# the cluster's ConfigMap (deploy/kubernetes-cluster/), with what the Deployment gives each replica:
# the S3 keys and its address in the environment, the peer secret as a file (here under /etc/regslim)
if [ -s "$W/cluster.json" ]; then
	head -c 32 /dev/urandom | base64 > "$W/etc/peer.key" && chmod 0644 "$W/etc/peer.key"
	jq --arg p "$(dirname "$CONF")/peer.key" '.cluster.peer_secret_file = $p' "$W/cluster.json" > "$W/etc/cluster.json"
	check "kubernetes-cluster ConfigMap's configuration passes check-config in the image" \
		crun env S3_ACCESS_KEY=a S3_SECRET_KEY=b REGSLIM_ADVERTISE_URL=http://10.0.0.5:5000 \
		"${ENTRY[0]}" check-config "$(dirname "$CONF")/cluster.json"
fi
check "deploy/haproxy/haproxy.cfg is a valid haproxy configuration" \
	timeout 10 haproxy -c -q -f "$RS_TOP/deploy/haproxy/haproxy.cfg"

echo "# test_deploy: $(($(date +%s) - T0)) s; image $((SIZE / 1000000)) MB uncompressed, $((${ZSIZE:-0} / 1000000)) MB compressed"
finish
