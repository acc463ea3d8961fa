#!/usr/bin/env bash
# test_lab_clients.sh - the lab's clients (tests/lab/clients.sh) do what the other tests assume,
# with no regslim in the way: when a pull through regslim fails, this test says whether the
# client set-up or regslim is to blame.
#
# Upstream: the lab's plain docker-registry with tiny and multi, and the same storage served over
# TLS by two more docker-registry processes (127.0.0.1:BASE+60 and [::1]:BASE+61) whose
# certificate comes from a CA made here. Checks:
#   - selftest: each of skopeo, podman, ctr, docker pulls tiny through the plain mirror;
#   - MIRROR_CA: each client pulls through the TLS mirror, its requests reach that registry, and
#     no configuration marks the mirror insecure; with a CA that did not sign the certificate
#     every client refuses the mirror (x509) - so nothing skips verification. dockerd verifies
#     only a mirror outside 127.0.0.0/8, hence DOCKER_MIRROR=[::1]:PORT for it; podman and ctr
#     also pull MIRROR/REPO:TAG directly over TLS;
#   - dockerd is restarted when the CA changes and left alone when nothing changed; its CA file
#     below /etc/docker/certs.d exists while it runs and is gone after dockerd_stop;
#   - rootfs_list: umoci's and podman's trees of the same image list identically, twice the same.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

lab_setup
upstream_start
T=$REGSLIM_LAB/tls
P4=$((LAB_PORT_BASE + 60))
P6=$((LAB_PORT_BASE + 61))
mkdir -p "$T"

# ---------------------------------------------------------------- certificates and TLS registries
# mkca NAME: a self-signed CA in $T/NAME.pem (+ .key)
mkca() {
	timeout 60 openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=regslim lab $1" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
		-keyout "$T/$1.key" -out "$T/$1.pem"
}
# server_cert: $T/srv.pem for 127.0.0.1 and ::1, signed by $T/ca.pem
server_cert() {
	printf 'subjectAltName=IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > "$T/ext.cnf"
	timeout 60 openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$T/srv.key" -out "$T/srv.csr" \
		&& timeout 60 openssl x509 -req -in "$T/srv.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
			-days 2 -extfile "$T/ext.cnf" -out "$T/srv.pem"
}
# tls_registry NAME ADDR: docker-registry serving the plain registry's storage over TLS on ADDR
tls_registry() {
	local i
	cat > "$T/$1.yml" <<- EOF
		version: 0.1
		log:
		  level: info
		  accesslog:
		    disabled: false
		storage:
		  filesystem:
		    rootdirectory: $REG_DATA
		  cache:
		    blobdescriptor: inmemory
		  maintenance:
		    uploadpurging:
		      enabled: false
		http:
		  addr: "$2"
		  secret: regslim-lab-tls
		  tls:
		    certificate: $T/srv.pem
		    key: $T/srv.key
	EOF
	lab_spawn "aux-$1" "$LOGS/$1.log" docker-registry serve "$T/$1.yml" || return 1
	for ((i = 0; i < 100; i++)); do
		[ "$(curl -s -g -o /dev/null -w '%{http_code}' --max-time 1 --cacert "$T/ca.pem" "https://$2/v2/")" = 200 ] && return 0
		lab_alive "aux-$1" || break
		sleep 0.2
	done
	tail -n 3 "$LOGS/$1.log"
	return 1
}

check "test CA, wrong CA and server certificate" eval 'mkca ca && mkca other && server_cert'
check "TLS registry on 127.0.0.1:$P4" tls_registry tls4 "127.0.0.1:$P4"
if check "TLS registry on [::1]:$P6" tls_registry tls6 "[::1]:$P6"; then
	V6=1
else
	V6=0
fi

# ---------------------------------------------------------------- plain mirror
CLIENTS=(skopeo podman ctr docker)
for c in "${CLIENTS[@]}"; do
	check "selftest $c through the plain mirror" env MIRROR="$REG_PLAIN" bash "$RS_LAB_DIR/clients.sh" selftest "$c"
done

# ---------------------------------------------------------------- TLS mirror, the right CA
export MIRROR=127.0.0.1:$P4 MIRROR_CA=$T/ca.pem
[ "$V6" = 0 ] || export DOCKER_MIRROR="[::1]:$P6"
declare -A UA=([skopeo]='^skopeo/' [podman]='^containers/' [ctr]='^containerd/' [docker]='^docker/')
for c in "${CLIENTS[@]}"; do
	log=$LOGS/tls4.log
	[ "$c" != docker ] || [ "$V6" = 0 ] || log=$LOGS/tls6.log
	upstream_mark "$log"
	check "selftest $c over TLS (MIRROR_CA)" selftest "$c"
	expect_ge "$c's manifest GETs reached the TLS registry" \
		"$(upstream_count GET '^/v2/library/tiny/manifests/' "${UA[$c]}" "$log")" 1
done
expect "registries.conf: the mirror entry has no insecure" \
	"awk '/registry.mirror/ { m = 1; next } /^\\[/ { m = 0 } m && /insecure/ { exit 1 }' '$PODMAN_DIR/registries.conf' && grep -q 'location = \"$MIRROR\"' '$PODMAN_DIR/registries.conf'" \
	"$(tr '\n' ' ' < "$PODMAN_DIR/registries.conf")"
expect "registries.conf: the mirror is not listed as an insecure registry" \
	"! grep -A1 -F 'location = \"$MIRROR\"' '$PODMAN_DIR/registries.conf' | grep -q insecure" \
	"$(tr '\n' ' ' < "$PODMAN_DIR/registries.conf")"
expect "hosts.toml: https mirror with the CA" \
	"grep -qF '[host.\"https://$MIRROR\"]' '$CTRD_DIR/certs.d/docker.io/hosts.toml' && grep -q '^ *ca = ' '$CTRD_DIR/certs.d/docker.io/hosts.toml'" \
	"$(tr '\n' ' ' < "$CTRD_DIR/certs.d/docker.io/hosts.toml")"
DM=${DOCKER_MIRROR:-$MIRROR}
expect_eq "daemon.json: registry-mirrors is https" "$(jq -c '."registry-mirrors"' "$DOCKER_DIR/daemon.json")" "[\"https://$DM\"]"
expect_eq "daemon.json: the mirror is not an insecure registry" \
	"$(jq --arg m "$DM" '."insecure-registries" | index($m)' "$DOCKER_DIR/daemon.json")" null
expect "dockerd's CA file is in /etc/docker/certs.d/$DM" "cmp -s '/etc/docker/certs.d/$DM/ca.crt' '$MIRROR_CA'" \
	"$(find "/etc/docker/certs.d/$DM" 2>&1 | tr '\n' ' ')"
# direct pulls from the TLS mirror (no docker.io mirroring involved)
check "podman pulls MIRROR/lab/tiny:latest directly over TLS" podman_pull -q "$MIRROR/lab/tiny:latest"
check "ctr pulls MIRROR/lab/tiny:latest directly over TLS (hosts.toml of MIRROR)" ctr_pull "$MIRROR/lab/tiny:latest"
pid1=$(lab_pid dockerd)
dockerd_start > /dev/null
expect_eq "dockerd_start with nothing changed leaves dockerd running" "$(lab_pid dockerd)" "$pid1"

# ---------------------------------------------------------------- TLS mirror, a CA that did not sign
MIRROR_CA=$T/other.pem
for c in "${CLIENTS[@]}"; do
	if [ "$c" = docker ] && [ "$V6" = 0 ]; then
		skip "$c refuses the wrong CA" "no [::1]: dockerd does not verify 127.0.0.0/8 mirrors"
		continue
	fi
	d0=$(grep -c 'x509' "$LOGS/dockerd.log")
	if SELFTEST_TIMEOUT=60 selftest "$c" > "$LOGS/wrong-$c.out" 2>&1; then
		fail "$c refuses the wrong CA" "it pulled: $(head -n 1 "$LOGS/wrong-$c.out")"
	elif [ "$c" = docker ]; then
		expect_ge "$c refuses the wrong CA (x509 in dockerd.log)" $(($(grep -c 'x509' "$LOGS/dockerd.log") - d0)) 1
	else
		expect "$c refuses the wrong CA (x509)" "grep -q x509 '$LOGS/selftest-$c.log'" "$(tail -n 2 "$LOGS/selftest-$c.log" | tr '\n' ' ')"
	fi
done
dockerd_start > /dev/null
expect_ne "dockerd_start restarted dockerd for the new CA" "$(lab_pid dockerd)" "$pid1"
dockerd_stop
expect "dockerd_stop removed its CA directory" "[ ! -e '/etc/docker/certs.d/$DM' ]" "$(find /etc/docker/certs.d 2>&1 | tr '\n' ' ')"
unset MIRROR_CA DOCKER_MIRROR

# ---------------------------------------------------------------- rootfs_list
REF=$REG_PLAIN/lab/tiny:latest
if check "umoci_rootfs of lab/tiny" umoci_rootfs "docker://$REF" "$REGSLIM_LAB/pulls/umoci-tiny"; then
	rootfs_list "$REGSLIM_LAB/pulls/umoci-tiny/rootfs" > "$LOGS/tree-umoci.1"
	rootfs_list "$REGSLIM_LAB/pulls/umoci-tiny/rootfs" > "$LOGS/tree-umoci.2"
	expect "rootfs_list is deterministic and not empty" "[ -s '$LOGS/tree-umoci.1' ] && cmp -s '$LOGS/tree-umoci.1' '$LOGS/tree-umoci.2'" \
		"two listings of the same tree differ"
	if podman_pull -q "$REF" > "$LOGS/podman-tree.log" 2>&1 && dir=$(podman_rootfs "$REF"); then
		rootfs_list "$dir" > "$LOGS/tree-podman"
		podman_rootfs_done "$REF"
		expect "podman's and umoci's trees list identically" "diff '$LOGS/tree-umoci.1' '$LOGS/tree-podman'" \
			"$(diff "$LOGS/tree-umoci.1" "$LOGS/tree-podman" | head -n 4 | tr '\n' ' ')"
	else
		fail "podman_rootfs of lab/tiny" "$(tail -n 2 "$LOGS/podman-tree.log" | tr '\n' ' ')"
	fi
fi

finish
