#!/usr/bin/env bash
# clients.sh - the pulling clients of regslim's test lab: skopeo, podman, containerd's ctr and
# dockerd, each configured to use MIRROR (regslim under test, the logging proxy, or a registry)
# as the docker.io mirror, over plain HTTP or, with MIRROR_CA, over HTTPS trusting that CA only.
# Also an independent unpacker (umoci) with a tree listing to compare unpacked images, the
# logging proxy's start/stop, and the lab's teardown. It does not start registries or build
# images (registry.sh, fixtures.sh). All client state lives under the lab directory; the one
# exception is dockerd's CA file for a TLS mirror (see dockerd_start).
#
#   clients.sh FUNCTION [ARGS...]     e.g. MIRROR=127.0.0.1:15050 clients.sh selftest
#   . clients.sh                      (tests/integration/lib.sh does) then call the functions
#
# Sourcing only defines functions and variables (PODMAN_DIR, CTRD_DIR, CTRD_SOCK, DOCKER_DIR,
# DOCKER_SOCK; lab.sh's RL_*) and creates the lab directory. Every variable below is read when
# a function runs, so a test may change MIRROR or MIRROR_CA between calls.
#
# Environment (all optional), besides lab.sh's REGSLIM_LAB, LAB_PORT_BASE (BASE below):
#   MIRROR            host:port of the docker.io mirror (default 127.0.0.1:BASE, the plain registry)
#   MIRROR_CA         PEM file of the CA that signed MIRROR's certificate: MIRROR is then reached
#                     over https, verified against this CA, with no insecure setting anywhere
#   DOCKER_MIRROR     host:port dockerd uses as its mirror (default MIRROR). dockerd 20.10 treats
#                     every registry in 127.0.0.0/8 as insecure: it speaks TLS to it but verifies
#                     nothing. To see dockerd verify MIRROR_CA, serve the mirror on [::1]:PORT
#                     as well and set DOCKER_MIRROR=[::1]:PORT (the other clients cannot parse an
#                     IPv6 literal in a reference or hosts.toml)
#   UPSTREAM          upstream of logproxy_start (default 127.0.0.1:BASE)
#   FALLBACK          host:port podman and containerd use as docker.io itself when the mirror
#                     fails (default 127.0.0.1:BASE+99, where nothing listens: pulls stay local)
#   PULL_TIMEOUT      seconds per pull or client command (900)
#   CTR_NS            containerd namespace of ctr (regslim)
#   SELFTEST_TIMEOUT  seconds per client in selftest (180)
#
# CLIENTS.md (next to this file) documents the functions and what each client sends.

RL_ME=clients.sh
# shellcheck source=tests/lab/lab.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lab.sh"

PODMAN_DIR=$RL_LAB/podman
CTRD_DIR=$RL_LAB/containerd
CTRD_SOCK=$CTRD_DIR/containerd.sock
DOCKER_DIR=$RL_LAB/docker
DOCKER_SOCK=$DOCKER_DIR/docker.sock
# dockerd has no option for where it reads registry CAs: always <this>/<host:port>/ca.crt
CL_DOCKER_CERTS=/etc/docker/certs.d
mkdir -p "$RL_LAB/pulls"

# ---------------------------------------------------------------- settings and helpers

cl_mirror() { echo "${MIRROR:-127.0.0.1:$RL_BASE}"; }
cl_docker_mirror() { echo "${DOCKER_MIRROR:-$(cl_mirror)}"; }
cl_fallback() { echo "${FALLBACK:-127.0.0.1:$((RL_BASE + 99))}"; }
cl_limit() { echo "${PULL_TIMEOUT:-900}"; }
cl_tls() { [ -n "${MIRROR_CA:-}" ]; }
cl_scheme() { if cl_tls; then echo https; else echo http; fi; }

# cl_need CMD[=PKG]...: lab.sh's rl_need, in a subshell so that a missing package fails the
# call (status 1) instead of ending a test that sourced this file.
cl_need() { (rl_need "$@"); }

# cl_spawn NAME LOG CMD...: rl_spawn, returning 1 instead of exiting
cl_spawn() { (rl_spawn "$@"); }

# cl_err MSG...: print "clients.sh: MSG" on stderr and return 1
cl_err() {
	echo "clients.sh: $*" >&2
	return 1
}

# cl_wait_sock PATH SECONDS: wait until the unix socket PATH exists
cl_wait_sock() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		[ -S "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# cl_certs_dir: the per-host certificate directory of the mirror, $RL_LAB/certs.d/<MIRROR>,
# holding ca.crt (a copy of MIRROR_CA): the layout containers/image (skopeo, podman) and dockerd
# read. Written on every call, so a new MIRROR or CA takes effect. Fails when MIRROR_CA is not a
# readable PEM certificate.
cl_certs_dir() {
	local d
	d=$RL_LAB/certs.d/$(cl_mirror)
	[ -r "$MIRROR_CA" ] || cl_err "MIRROR_CA=$MIRROR_CA is not a readable file" || return 1
	grep -q -- '-----BEGIN CERTIFICATE-----' "$MIRROR_CA" \
		|| cl_err "MIRROR_CA=$MIRROR_CA holds no PEM certificate" || return 1
	mkdir -p "$d" && cp -f "$MIRROR_CA" "$d/ca.crt" || return 1
	echo "$d"
}

# cl_plain_hosts [MIRROR]: the loopback registries clients may reach directly over plain HTTP
# (plain, auth and token registries, the logging proxy) and the mirror (default MIRROR) unless it
# is served over TLS.
cl_plain_hosts() {
	local m=${1:-$(cl_mirror)}
	{
		printf '127.0.0.1:%s\n' "$RL_BASE" $((RL_BASE + 1)) $((RL_BASE + 2)) $((RL_BASE + 80))
		echo "$m"
	} | awk -v m="$m" -v tls="${MIRROR_CA:+1}" '!(tls && $0 == m) && !seen[$0]++'
}

# ---------------------------------------------------------------- logging proxy

# logproxy_start [LISTEN] [UPSTREAM]: logproxy.py on LISTEN (127.0.0.1:BASE+80) in front of
# UPSTREAM ($UPSTREAM, default the plain registry); one JSON line per request in
# $RL_LOGS/logproxy.jsonl.
logproxy_start() {
	local listen=${1:-127.0.0.1:$((RL_BASE + 80))} up=${2:-${UPSTREAM:-127.0.0.1:$RL_BASE}}
	if rl_alive logproxy; then
		echo "logproxy already running, pid $(rl_pid logproxy)"
		return 0
	fi
	cl_need python3 || return 1
	! rl_port_busy "${listen##*:}" || cl_err "$listen is already in use" || return 1
	cl_spawn logproxy "$RL_LOGS/logproxy.err" "$(rl_python)" "$RL_HERE/logproxy.py" \
		--listen "$listen" --upstream "$up" --log "$RL_LOGS/logproxy.jsonl" || return 1
	if ! rl_wait_port "${listen##*:}" 10 || ! rl_alive logproxy; then
		echo "clients.sh: the logging proxy did not come up on $listen:" >&2
		rl_log_tail "$RL_LOGS/logproxy.err" 5
		rl_stop logproxy 5
		return 1
	fi
	echo "logproxy $listen -> $up, pid $(rl_pid logproxy), log $RL_LOGS/logproxy.jsonl"
}

logproxy_stop() { rl_stop logproxy; }

logproxy_clear() { : > "$RL_LOGS/logproxy.jsonl"; }

# logproxy_tail [N]: the last N (20) logged requests, one compact JSON line each
logproxy_tail() {
	cl_need jq || return 1
	[ -f "$RL_LOGS/logproxy.jsonl" ] || return 0
	tail -n "${1:-20}" "$RL_LOGS/logproxy.jsonl" \
		| jq -c '{method, path, accept, status, resp_type, ua: ."user-agent"}'
}

# ---------------------------------------------------------------- skopeo

# skopeo_pull SRC DEST [skopeo copy args]: skopeo copy SRC (docker://HOST:PORT/REPO:TAG) to
# DEST (dir:PATH, oci:PATH:TAG). A source on MIRROR with MIRROR_CA set is verified against that
# CA (--src-cert-dir); any other source is read without TLS verification (the lab's plain
# registries). Args e.g. --src-creds lab:labpass, --override-arch arm64.
skopeo_pull() {
	local src=$1 dst=$2 m certs tls=()
	shift 2
	cl_need skopeo || return 1
	m=$(cl_mirror)
	if [ -n "${MIRROR_CA:-}" ] && [[ $src == "docker://$m/"* ]]; then
		certs=$(cl_certs_dir) || return 1
		tls+=(--src-cert-dir "$certs")
	else
		tls+=(--src-tls-verify=false)
	fi
	if [ -n "${MIRROR_CA:-}" ] && [[ $dst == "docker://$m/"* ]]; then
		certs=$(cl_certs_dir) || return 1
		tls+=(--dest-cert-dir "$certs")
	fi
	timeout "$(cl_limit)" skopeo --insecure-policy --tmpdir "$RL_LAB/tmp" copy "${tls[@]}" "$@" "$src" "$dst"
}

# ---------------------------------------------------------------- podman (vfs storage, no daemon)

# podman_setup: write podman's configuration under $PODMAN_DIR: registries.conf sends docker.io
# to MIRROR first and FALLBACK second; storage.conf and containers.conf keep every piece of
# podman's state below $PODMAN_DIR. With MIRROR_CA, the mirror entry is not insecure and the CA
# is in $PODMAN_DIR/home/.config/containers/certs.d/<MIRROR>/ca.crt, the per-user certs.d that
# containers/image reads ($HOME is $PODMAN_DIR/home for lpodman).
podman_setup() {
	local m h certs ins=
	m=$(cl_mirror)
	mkdir -p "$PODMAN_DIR"/{root,runroot,tmp,net,imgtmp,home/.config/containers}
	rm -rf "$PODMAN_DIR/home/.config/containers/certs.d"
	if cl_tls; then
		certs=$(cl_certs_dir) || return 1
		mkdir -p "$PODMAN_DIR/home/.config/containers/certs.d/$m"
		cp -f "$certs/ca.crt" "$PODMAN_DIR/home/.config/containers/certs.d/$m/ca.crt"
	else
		ins='insecure = true'
	fi
	{
		echo '# generated by clients.sh podman_setup: docker.io through the mirror'
		echo 'unqualified-search-registries = ["docker.io"]'
		echo 'short-name-mode = "permissive"'
		echo
		echo '[[registry]]'
		echo 'prefix = "docker.io"'
		echo "location = \"$(cl_fallback)\""
		echo 'insecure = true'
		echo '[[registry.mirror]]'
		echo "location = \"$m\""
		[ -z "$ins" ] || echo "$ins"
		for h in $(cl_plain_hosts); do
			printf '\n[[registry]]\nlocation = "%s"\ninsecure = true\n' "$h"
		done
	} > "$PODMAN_DIR/registries.conf"
	cat > "$PODMAN_DIR/containers.conf" <<- EOF
		[engine]
		cgroup_manager = "cgroupfs"
		events_logger = "file"
		events_logfile_path = "$PODMAN_DIR/events.log"
		lock_type = "file"
		tmp_dir = "$PODMAN_DIR/tmp"
		static_dir = "$PODMAN_DIR/root/libpod"
		volume_path = "$PODMAN_DIR/root/volumes"
		image_copy_tmp_dir = "$PODMAN_DIR/imgtmp"
		[network]
		network_config_dir = "$PODMAN_DIR/net"
	EOF
	cat > "$PODMAN_DIR/storage.conf" <<- EOF
		[storage]
		driver = "vfs"
		runroot = "$PODMAN_DIR/runroot"
		graphroot = "$PODMAN_DIR/root"
	EOF
}

# podman_env: export the CONTAINERS_* variables of this configuration into the caller's shell
# (to run podman, buildah or skopeo by hand; the TLS mirror's CA is not part of it)
podman_env() {
	export CONTAINERS_CONF=$PODMAN_DIR/containers.conf
	export CONTAINERS_REGISTRIES_CONF=$PODMAN_DIR/registries.conf
	export CONTAINERS_STORAGE_CONF=$PODMAN_DIR/storage.conf
}

# lpodman ARGS...: podman with this configuration, bounded by PULL_TIMEOUT
lpodman() {
	[ -f "$PODMAN_DIR/storage.conf" ] || podman_setup || return 1
	cl_need podman || return 1
	timeout "$(cl_limit)" env HOME="$PODMAN_DIR/home" TMPDIR="$RL_LAB/tmp" \
		CONTAINERS_CONF="$PODMAN_DIR/containers.conf" \
		CONTAINERS_REGISTRIES_CONF="$PODMAN_DIR/registries.conf" \
		CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf" podman "$@"
}

# podman_pull [podman pull args] REF: REF docker.io/... goes through MIRROR (registries.conf);
# 127.0.0.1:PORT/... is pulled directly (the loopback registries are insecure). Args e.g.
# --creds lab:labpass, --arch arm64, -q.
podman_pull() {
	podman_setup || return 1
	lpodman pull "$@"
}

# podman_clean: remove every image from podman's storage
podman_clean() {
	lpodman rmi -a -f > /dev/null 2>&1
	true
}

# podman_rootfs REF: print the directory holding REF's flattened rootfs (whiteouts applied);
# podman_rootfs_done REF releases it
podman_rootfs() { lpodman image mount "$1"; }
podman_rootfs_done() { lpodman image unmount "$1" > /dev/null; }

# ---------------------------------------------------------------- containerd and ctr

# cl_containerd_conf: containerd's config.toml (native snapshotter, CRI and other snapshotters
# off, everything below $CTRD_DIR) and the hosts directory ctr_pull hands to ctr: docker.io's
# hosts.toml, and with MIRROR_CA one for MIRROR itself, so that a direct pull of
# MIRROR/REPO:TAG verifies the CA too
cl_containerd_conf() {
	local m ca=
	m=$(cl_mirror)
	mkdir -p "$CTRD_DIR"/{root,state,opt} "$CTRD_DIR/certs.d/docker.io"
	find "$CTRD_DIR/certs.d" -mindepth 1 -maxdepth 1 ! -name docker.io -exec rm -rf {} +
	cat > "$CTRD_DIR/config.toml" <<- EOF
		version = 2
		root = "$CTRD_DIR/root"
		state = "$CTRD_DIR/state"
		disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
		[grpc]
		  address = "$CTRD_SOCK"
		[ttrpc]
		  address = "$CTRD_SOCK.ttrpc"
		[debug]
		  address = "$CTRD_DIR/debug.sock"
		  level = "info"
		[metrics]
		  address = ""
		[plugins."io.containerd.internal.v1.opt"]
		  path = "$CTRD_DIR/opt"
	EOF
	if cl_tls; then
		ca=$(cl_certs_dir) || return 1
		ca="  ca = \"$ca/ca.crt\""
	fi
	# a mirror host gets every request with ?ns=docker.io; FALLBACK is tried when it fails
	{
		echo "server = \"http://$(cl_fallback)\""
		echo "[host.\"$(cl_scheme)://$m\"]"
		echo '  capabilities = ["pull", "resolve"]'
		[ -z "$ca" ] || echo "$ca"
	} > "$CTRD_DIR/certs.d/docker.io/hosts.toml"
	if [ -n "$ca" ]; then
		mkdir -p "$CTRD_DIR/certs.d/$m"
		printf 'server = "https://%s"\n[host."https://%s"]\n  capabilities = ["pull", "resolve", "push"]\n%s\n' \
			"$m" "$m" "$ca" > "$CTRD_DIR/certs.d/$m/hosts.toml"
	fi
}

# containerd_start: containerd on $CTRD_SOCK (log $RL_LOGS/containerd.log), if not running
containerd_start() {
	if rl_alive containerd; then
		echo "containerd already running, pid $(rl_pid containerd)"
		return 0
	fi
	cl_need containerd ctr=containerd || return 1
	cl_containerd_conf || return 1
	cl_spawn containerd "$RL_LOGS/containerd.log" "$(command -v containerd)" \
		--config "$CTRD_DIR/config.toml" || return 1
	if ! cl_wait_sock "$CTRD_SOCK" 30 || ! timeout 10 ctr --address "$CTRD_SOCK" version > /dev/null 2>&1; then
		echo "clients.sh: containerd did not come up:" >&2
		rl_log_tail "$RL_LOGS/containerd.log" 5
		rl_stop containerd 30
		return 1
	fi
	echo "containerd pid $(rl_pid containerd), socket $CTRD_SOCK"
}

containerd_stop() { rl_stop containerd 30; }

# lctr ARGS...: ctr on this containerd, namespace $CTR_NS (regslim), bounded by PULL_TIMEOUT
lctr() { timeout "$(cl_limit)" ctr --address "$CTRD_SOCK" -n "${CTR_NS:-regslim}" "$@"; }

# ctr_pull REF [ctr pull args]: REF docker.io/... goes through MIRROR (hosts.toml, rewritten
# for each pull); 127.0.0.1:PORT/... is pulled directly and needs --plain-http. Args e.g.
# --user lab:labpass, --platform linux/arm64, --all-platforms. Starts containerd if needed.
ctr_pull() {
	local ref=$1
	shift
	rl_alive containerd || containerd_start > /dev/null || return 1
	cl_containerd_conf || return 1
	lctr images pull --snapshotter native --hosts-dir "$CTRD_DIR/certs.d" "$@" "$ref"
}

# ctr_clean: remove every image of the namespace (--sync: the content goes with it); starts
# containerd if needed
ctr_clean() {
	local list refs=()
	rl_alive containerd || containerd_start > /dev/null || return 1
	list=$(lctr images ls -q) || return 1
	[ -z "$list" ] || mapfile -t refs <<< "$list"
	[ ${#refs[@]} -eq 0 ] || lctr images rm --sync "${refs[@]}" > /dev/null
}

# ---------------------------------------------------------------- dockerd

# cl_dockerd_conf: dockerd's daemon.json (vfs storage, no iptables, no bridge, our containerd,
# every path below $DOCKER_DIR, registry-mirrors = DOCKER_MIRROR, the plain loopback hosts insecure)
cl_dockerd_conf() {
	local ins
	mkdir -p "$DOCKER_DIR"/{data,exec,client-config}
	ins=$(cl_plain_hosts "$(cl_docker_mirror)" | sed 's/.*/"&"/' | paste -sd, - | sed 's/,/, /g')
	cat > "$DOCKER_DIR/daemon.json" <<- EOF
		{
		  "data-root": "$DOCKER_DIR/data",
		  "exec-root": "$DOCKER_DIR/exec",
		  "pidfile": "$DOCKER_DIR/docker.pid",
		  "deprecated-key-path": "$DOCKER_DIR/key.json",
		  "hosts": ["unix://$DOCKER_SOCK"],
		  "containerd": "$CTRD_SOCK",
		  "storage-driver": "vfs",
		  "iptables": false,
		  "ip-forward": false,
		  "ip-masq": false,
		  "bridge": "none",
		  "userland-proxy": false,
		  "registry-mirrors": ["$(cl_scheme)://$(cl_docker_mirror)"],
		  "insecure-registries": [$ins],
		  "log-level": "info",
		  "max-concurrent-downloads": 3
		}
	EOF
}

# cl_dockerd_key: what dockerd's configuration depends on: scheme, MIRROR, the CA's path and bytes
cl_dockerd_key() {
	local sum=
	if cl_tls; then sum=$(sha256sum < "$MIRROR_CA" 2> /dev/null | cut -c1-16); fi
	echo "$(cl_scheme)://$(cl_docker_mirror) ${MIRROR_CA:-} $sum"
}

# cl_docker_ca_add: install MIRROR_CA as $CL_DOCKER_CERTS/<DOCKER_MIRROR>/ca.crt, recording in
# $RL_RUN/dockerd.certs each file and directory created, for cl_docker_ca_remove
cl_docker_ca_add() {
	local dir d i made=() certs
	certs=$(cl_certs_dir) || return 1
	dir=$CL_DOCKER_CERTS/$(cl_docker_mirror)
	d=$dir
	while [ ! -d "$d" ]; do
		made=("$d" "${made[@]}")
		d=$(dirname "$d")
	done
	mkdir -p "$dir" && cp -f "$certs/ca.crt" "$dir/ca.crt" || cl_err "cannot write $dir/ca.crt" || return 1
	# deepest first: the order cl_docker_ca_remove deletes in
	printf '%s\n' "$dir/ca.crt" >> "$RL_RUN/dockerd.certs"
	for ((i = ${#made[@]} - 1; i >= 0; i--)); do printf '%s\n' "${made[$i]}" >> "$RL_RUN/dockerd.certs"; done
}

# cl_docker_ca_remove: delete what cl_docker_ca_add created (directories only when empty)
cl_docker_ca_remove() {
	local p
	[ -f "$RL_RUN/dockerd.certs" ] || return 0
	while IFS= read -r p; do
		case $p in
			"$CL_DOCKER_CERTS"/*/ca.crt) rm -f "$p" ;;
			"$CL_DOCKER_CERTS"* | /etc/docker) rmdir "$p" 2> /dev/null ;;
		esac
	done < "$RL_RUN/dockerd.certs"
	rm -f "$RL_RUN/dockerd.certs"
}

# dockerd_start: dockerd on $DOCKER_SOCK (log $RL_LOGS/dockerd.log) with registry-mirrors =
# DOCKER_MIRROR (default MIRROR). dockerd reads its mirrors only at start: a running dockerd is
# restarted when the mirror or MIRROR_CA changed. With MIRROR_CA the CA goes to
# /etc/docker/certs.d/<mirror>/ca.crt (the only place dockerd reads it from); dockerd_stop
# removes it. Starts containerd if needed.
dockerd_start() {
	local key i
	key=$(cl_dockerd_key)
	if rl_alive dockerd; then
		if [ "$(cat "$RL_RUN/dockerd.key" 2> /dev/null)" = "$key" ]; then
			echo "dockerd already running, pid $(rl_pid dockerd)"
			return 0
		fi
		echo "dockerd: the mirror is now $(cl_scheme)://$(cl_docker_mirror), restarting"
	fi
	dockerd_stop
	cl_need dockerd=docker.io /usr/bin/docker=docker.io || return 1
	rl_alive containerd || containerd_start > /dev/null || return 1
	cl_dockerd_conf
	if cl_tls; then cl_docker_ca_add || return 1; fi
	cl_spawn dockerd "$RL_LOGS/dockerd.log" "$(command -v dockerd)" --config-file "$DOCKER_DIR/daemon.json" || return 1
	echo "$key" > "$RL_RUN/dockerd.key"
	for ((i = 0; i < 60; i++)); do
		rl_alive dockerd || break
		if ldocker version > /dev/null 2>&1; then
			echo "dockerd pid $(rl_pid dockerd), socket $DOCKER_SOCK, mirror $(cl_scheme)://$(cl_docker_mirror)"
			return 0
		fi
		sleep 0.5
	done
	echo "clients.sh: dockerd did not come up:" >&2
	rl_log_tail "$RL_LOGS/dockerd.log" 5
	dockerd_stop
	return 1
}

# dockerd_stop: stop dockerd and remove the mirror's CA file it was given
dockerd_stop() {
	rl_stop dockerd 30
	rm -f "$RL_RUN/dockerd.key"
	cl_docker_ca_remove
}

# ldocker ARGS...: Debian's docker CLI on this dockerd (client config below $DOCKER_DIR),
# bounded by PULL_TIMEOUT
ldocker() {
	timeout "$(cl_limit)" env DOCKER_CONFIG="$DOCKER_DIR/client-config" \
		/usr/bin/docker -H "unix://$DOCKER_SOCK" "$@"
}

# docker_pull [docker pull args] REF: REF tiny, library/big (docker.io, through MIRROR) or
# 127.0.0.1:PORT/lab/tiny:oci (directly). Starts (or restarts) dockerd as dockerd_start does.
docker_pull() {
	dockerd_start > /dev/null || return 1
	ldocker pull "$@"
}

# docker_clean: remove every image from dockerd; starts it if needed
docker_clean() {
	local list ids=()
	rl_alive dockerd || dockerd_start > /dev/null || return 1
	list=$(ldocker images -qa) || return 1
	[ -z "$list" ] || mapfile -t ids < <(sort -u <<< "$list")
	[ ${#ids[@]} -eq 0 ] || ldocker rmi -f "${ids[@]}" > /dev/null 2>&1
	true
}

# ---------------------------------------------------------------- unpacking and comparing trees

# umoci_rootfs REF DIR [skopeo copy args]: copy REF (docker://...) with skopeo_pull into a
# scratch OCI layout, layers recompressed to gzip (umoci 0.4.7 reads no zstd; the tree is the
# same), then `umoci unpack` it to DIR/rootfs. DIR must not exist.
umoci_rootfs() {
	local ref=$1 dir=$2 lay rc=0
	shift 2
	cl_need skopeo umoci || return 1
	[ ! -e "$dir" ] || cl_err "umoci_rootfs: $dir already exists" || return 1
	lay=$(mktemp -d "$RL_LAB/pulls/umoci.XXXXXX") || return 1
	skopeo_pull "$ref" "oci:$lay/oci:img" --dest-compress-format gzip "$@" > "$lay/log" 2>&1 \
		&& timeout "$(cl_limit)" umoci unpack --image "$lay/oci:img" "$dir" >> "$lay/log" 2>&1 || rc=$?
	if [ $rc -ne 0 ]; then
		echo "clients.sh: umoci_rootfs $ref failed (exit $rc):" >&2
		rl_log_tail "$lay/log" 5
	fi
	rm -rf "$lay"
	return $rc
}

# rootfs_list DIR: every entry below DIR (DIR itself excluded), one line each, sorted by path:
#   path type mode uid gid size nlink what xattrs
# tab-separated; type f d l c b p s; size and nlink are 0 where they depend on the filesystem
# (directories) or mean nothing (not regular files); what is the sha256 of a file, the target of
# a link, major,minor of a device; xattrs is name=sha256-prefix,... sorted. No times. Bytes of
# names that are not printable ASCII, tabs, newlines and backslashes are written as \xHH, so
# two listings are diffable line by line.
rootfs_list() {
	[ -d "${1:-}" ] || cl_err "rootfs_list: ${1:-(none)} is not a directory" || return 1
	cl_need python3 || return 1
	"$(rl_python)" - "$1" <<- 'EOF'
		import hashlib, os, stat, sys

		KINDS = ((stat.S_ISREG, "f"), (stat.S_ISDIR, "d"), (stat.S_ISLNK, "l"), (stat.S_ISCHR, "c"),
		         (stat.S_ISBLK, "b"), (stat.S_ISFIFO, "p"), (stat.S_ISSOCK, "s"))

		def esc(raw):
		    return "".join(chr(b) if 0x20 <= b < 0x7f and b != 0x5c else "\\x%02x" % b for b in raw)

		def file_sha256(path):
		    h = hashlib.sha256()
		    with open(path, "rb") as f:
		        while True:
		            chunk = f.read(1 << 20)
		            if not chunk:
		                return h.hexdigest()
		            h.update(chunk)

		def xattrs(path):
		    try:
		        names = sorted(os.listxattr(path, follow_symlinks=False))
		    except OSError:
		        return ""
		    return ",".join("%s=%s" % (esc(os.fsencode(n)),
		                               hashlib.sha256(os.getxattr(path, n, follow_symlinks=False)).hexdigest()[:16])
		                    for n in names)

		def line(root, path):
		    st = os.lstat(path)
		    kind = next((k for test, k in KINDS if test(st.st_mode)), "?")
		    size, nlink, what = 0, 0, ""
		    if kind == "f":
		        size, nlink, what = st.st_size, st.st_nlink, file_sha256(path)
		    elif kind == "l":
		        what = esc(os.readlink(path))
		    elif kind in "cb":
		        what = "%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
		    return (os.path.relpath(path, root), [esc(os.path.relpath(path, root)), kind, "%04o" % stat.S_IMODE(st.st_mode),
		            str(st.st_uid), str(st.st_gid), str(size), str(nlink), what, xattrs(path)])

		root = os.fsencode(sys.argv[1])
		rows = []
		for top, dirs, files in os.walk(root):
		    for name in dirs + files:
		        rows.append(line(root, os.path.join(top, name)))
		rows.sort(key=lambda r: r[0])
		out = sys.stdout.buffer
		for _, fields in rows:
		    out.write(("\t".join(fields) + "\n").encode("ascii"))
	EOF
}

# ---------------------------------------------------------------- all clients

# stop_all: stop dockerd (removing its CA file), containerd and the logging proxy
stop_all() {
	dockerd_stop
	containerd_stop
	logproxy_stop
}

# teardown: stop_all, stop the registries (registry.sh stop all), the S3 store (s3.sh stop), Redis and haproxy, then delete the lab directory
# if it carries lab.sh's marker and nothing is mounted below it
teardown() {
	stop_all
	if [ -f "$RL_HERE/registry.sh" ]; then
		REGSLIM_LAB=$RL_LAB LAB_PORT_BASE=$RL_BASE timeout 120 bash "$RL_HERE/registry.sh" stop all > /dev/null
	else
		cl_err "teardown: no registry.sh next to clients.sh; registries were not stopped"
	fi
	# the S3 store (s3.sh), when one was started in this lab
	if ls "$RL_RUN"/s3-*.pid > /dev/null 2>&1; then
		REGSLIM_LAB=$RL_LAB LAB_PORT_BASE=$RL_BASE timeout 60 bash "$RL_HERE/s3.sh" stop > /dev/null
	fi
	# Redis and haproxy (redis.sh, haproxy.sh), when started in this lab
	local d
	for d in redis haproxy; do
		[ -f "$RL_RUN/$d.pid" ] && REGSLIM_LAB=$RL_LAB LAB_PORT_BASE=$RL_BASE timeout 30 bash "$RL_HERE/$d.sh" stop > /dev/null
	done
	if awk -v p="$RL_LAB/" 'index($2 "/", p) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
		cl_err "teardown: something is mounted below $RL_LAB; not deleting it"
		return 1
	fi
	[ -f "$RL_LAB/.regslim-lab" ] || cl_err "teardown: $RL_LAB has no .regslim-lab marker; not deleting it" || return 1
	rm -rf --one-file-system "$RL_LAB"
}

# selftest [skopeo|podman|ctr|docker]...: pull docker.io/library/tiny:latest through MIRROR
# with each client (default all four; skopeo reads docker://MIRROR/library/tiny:latest
# directly), over https when MIRROR_CA is set. One line per client, PASS with the seconds it
# took or FAIL with the end of $RL_LOGS/selftest-<client>.log; non-zero if any failed.
selftest() {
	local c how at log rc=0 st t0 ms d PULL_TIMEOUT=${SELFTEST_TIMEOUT:-180}
	[ $# -gt 0 ] || set -- skopeo podman ctr docker
	for c in "$@"; do
		log=$RL_LOGS/selftest-$c.log
		st=0
		t0=$(date +%s%N)
		at=$(cl_scheme)://$(cl_mirror)
		case $c in
			skopeo)
				how=direct
				d=$(mktemp -d "$RL_LAB/pulls/selftest.XXXXXX")
				skopeo_pull "docker://$(cl_mirror)/library/tiny:latest" "dir:$d/tiny" > "$log" 2>&1 || st=$?
				rm -rf "$d"
				;;
			podman)
				how="registries.conf mirror"
				{ podman_clean && podman_pull docker.io/library/tiny:latest; } > "$log" 2>&1 || st=$?
				;;
			ctr)
				how="hosts.toml mirror"
				{ containerd_start && ctr_clean && ctr_pull docker.io/library/tiny:latest; } > "$log" 2>&1 || st=$?
				;;
			docker)
				how=registry-mirrors
				at=$(cl_scheme)://$(cl_docker_mirror)
				{ dockerd_start && docker_clean && docker_pull tiny; } > "$log" 2>&1 || st=$?
				;;
			*)
				echo "selftest: no client '$c' (skopeo, podman, ctr, docker)" >&2
				rc=2
				continue
				;;
		esac
		ms=$((($(date +%s%N) - t0) / 1000000))
		if [ $st -eq 0 ]; then
			printf 'PASS %-6s (%s, %s) %d.%03d s\n' "$c" "$how" "$at" $((ms / 1000)) $((ms % 1000))
		else
			printf 'FAIL %-6s (%s, %s) exit %d, log %s:\n' "$c" "$how" "$at" "$st" "$log"
			tail -n 5 "$log" | sed 's/^/    /'
			[ $rc -ne 0 ] || rc=1
		fi
	done
	return $rc
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -uo pipefail
	if [ $# -eq 0 ] || [[ $1 == cl_* || $1 == rl_* ]] || ! declare -F "$1" > /dev/null; then
		echo "usage: clients.sh FUNCTION [ARGS...]; FUNCTION is one of:" >&2
		declare -F | awk '$3 !~ /^(cl|rl)_/ { print "  " $3 }' >&2
		exit 2
	fi
	"$@"
fi
