#!/usr/bin/env bash
# deps.sh [build|test|all]: install the Debian packages regslim needs, if missing.
#   build: compiler, CMake and the libraries the proxy links against (libgpgme-dev: GPG simple
#          signing of optimized images and verification of originals, proxy/sign/; libhiredis-dev: the
#          Redis client of the cluster coordination, proxy/cluster/)
#   test:  build + Check, clang (fuzz targets), and the real registry and clients the
#          integration tests start (docker-registry, skopeo, podman, containerd, docker.io, umoci;
#          buildah, debootstrap and python3-yaml for test_deploy: it builds deploy/Dockerfile;
#          nginx-light: bench/serve.sh's nginx peer; ceph-mon, ceph-osd, radosgw, ceph-common and
#          uuid-runtime: the lab's one-node Ceph RGW, tests/lab/s3.sh, for the s3 store's tests;
#          redis-server, redis-tools and haproxy: the lab's Redis and load balancer, tests/lab/redis.sh and
#          haproxy.sh, for the cluster's tests)
# Needs root (or sudo) only when something is missing.
set -euo pipefail
what=${1:-build}
BUILD_PKGS=(build-essential cmake pkg-config libmicrohttpd-dev libgnutls28-dev libcurl4-openssl-dev libssl-dev
  libzstd-dev libjansson-dev zlib1g-dev libisal-dev libdeflate-dev libcrypt-dev libgpgme-dev libhiredis-dev ca-certificates curl)
TEST_PKGS=(check libsubunit-dev clang libclang-rt-14-dev docker-registry skopeo podman containerd
  docker.io umoci jq python3 apache2-utils openssl zstd isal wrk bsdextrautils
  buildah debootstrap debian-archive-keyring python3-yaml nginx-light
  ceph-mon ceph-osd radosgw ceph-common uuid-runtime redis-server redis-tools haproxy)
pkgs=("${BUILD_PKGS[@]}")
case $what in
  build) ;;
  test | all) pkgs+=("${TEST_PKGS[@]}") ;;
  *) echo "usage: deps.sh [build|test|all]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo > /dev/null || { echo "deps.sh: missing packages (run as root): ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "deps.sh: installing ${missing[*]}" >&2
# keep package scripts from starting system services (dockerd, containerd) while installing
prc=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  prc=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$prc" > /dev/null; $SUDO chmod 755 "$prc"
fi
trap '[ -z "$prc" ] || $SUDO rm -f "$prc"' EXIT
$SUDO timeout 600 apt-get update -q > /dev/null
DEBIAN_FRONTEND=noninteractive $SUDO timeout 1200 apt-get install -y -q --no-install-recommends \
  -o DPkg::Lock::Timeout=300 "${missing[@]}" > /dev/null
export REGSLIM_APT_UPDATED=1
