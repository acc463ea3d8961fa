#!/usr/bin/env bash
# test_clients_pull.sh - real clients pull through regslim and get exactly the upstream's image.
#
# Upstream: Debian's docker-registry (plain) with the tiny and multi fixtures; regslim in front of
# it as the docker.io mirror. For each client the pull must succeed and the image must be
# IDENTICAL to the upstream's: same manifest (or index) digest, same config and layer digests.
#   skopeo  docker://MIRROR/library/tiny:latest, lab/tiny:oci, lab/tiny:zstd, lab/multi:latest
#           (--override-arch arm64): manifest bytes through regslim == direct bytes (inspect
#           --raw), copied dir: blobs hash to the manifest's digests
#   podman  registries.conf mirror: docker.io/library/tiny:latest, docker.io/library/multi:latest
#   ctr     hosts.toml mirror (sends ?ns=docker.io): docker.io/library/tiny:latest and
#           docker.io/library/multi:latest --platform linux/arm64; also checks ?ns= reached
#           regslim (through the logging proxy) and the OCI-Namespace answer header
#   docker  registry-mirrors: tiny, library/multi
# A client that cannot pull even directly from the upstream on this machine is reported SKIP.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

lab_setup
upstream_start
start_regslim
U=$REG_PLAIN

# up_digest REPO REF: the upstream's digest for REPO:REF (HEAD, all manifest types accepted)
up_digest() { manifest_digest "$U" "$1" "$2"; }
# up_platform_blobs REPO REF PLATFORM: prints the upstream's platform manifest digest, config, layers
up_platform_blobs() {
	local all
	all=$(image_blobs "$U" "$1" "$2" "$3") || return 1
	if manifest_get "$U" "$1" "$2" | jq -e .manifests > /dev/null 2>&1; then
		echo "$all" | tail -n +2
	else
		echo "$all"
	fi
}
# up_config_field REPO CONFIG_DIGEST JQ: a field of the upstream's config blob (compact JSON)
up_config_field() { http_get "http://$U/v2/$1/blobs/$2" | jq -c "$3"; }

# ---------------------------------------------------------------- skopeo
# skopeo_case REPO REF PLATFORM [skopeo args]
skopeo_case() {
	local repo=$1 ref=$2 plat=$3 name="skopeo $1:$2" d exp got f bad=
	shift 3
	[ "$plat" = linux/amd64 ] || name="$name ($plat)"
	# the manifest (or index) bytes regslim serves are the upstream's bytes
	if timeout 60 skopeo inspect --raw --tls-verify=false "docker://$MIRROR/$repo:$ref" > "$LOGS/raw-mirror" 2> "$LOGS/raw-mirror.err" \
		&& timeout 60 skopeo inspect --raw --tls-verify=false "docker://$U/$repo:$ref" > "$LOGS/raw-direct" 2> "$LOGS/raw-direct.err"; then
		if cmp -s "$LOGS/raw-mirror" "$LOGS/raw-direct"; then
			pass "$name: inspect --raw through regslim == direct ($(sha256_of "$LOGS/raw-direct" | cut -c1-19))"
		else
			fail "$name: inspect --raw" "through regslim $(sha256_of "$LOGS/raw-mirror") ($(wc -c < "$LOGS/raw-mirror") bytes), direct $(sha256_of "$LOGS/raw-direct") ($(wc -c < "$LOGS/raw-direct") bytes)"
		fi
	else
		fail "$name: inspect --raw" "$(tail -n 1 "$LOGS/raw-mirror.err" "$LOGS/raw-direct.err" 2> /dev/null | grep -v '^==>' | tr '\n' ' ')"
	fi
	# the copied image: same platform manifest, config and layers, every blob hashing right
	d=$REGSLIM_LAB/pulls/skopeo-${repo//\//_}-$ref-${plat//\//_}
	exp=$(up_platform_blobs "$repo" "$ref" "$plat") || { fail "$name: pull" "cannot read the upstream's manifest"; return; }
	if ! skopeo_pull "docker://$MIRROR/$repo:$ref" "dir:$d" "$@" > "$LOGS/skopeo-pull.log" 2>&1; then
		fail "$name: pull" "$(tail -n 2 "$LOGS/skopeo-pull.log" | tr '\n' ' ')"
		return
	fi
	pass "$name: pull"
	got=$(sha256_of "$d/manifest.json"; manifest_blobs "$d/manifest.json")
	expect_eq "$name: manifest, config and layer digests == upstream" "$(echo "$got" | tr "\n" " ")" "$(echo "$exp" | tr "\n" " ")"
	for f in $(manifest_blobs "$d/manifest.json"); do
		[ "$(sha256_of "$d/${f#sha256:}" 2> /dev/null)" = "$f" ] || bad="$bad $f"
	done
	if [ -z "$bad" ]; then pass "$name: every blob's bytes hash to its digest"; else fail "$name: blob bytes" "wrong:$bad"; fi
	rm -rf "$d"
}

if client_usable skopeo; then
	skopeo_case library/tiny latest linux/amd64
	skopeo_case lab/tiny oci linux/amd64
	skopeo_case lab/tiny zstd linux/amd64
	skopeo_case lab/multi latest linux/arm64 --override-arch arm64
else
	skip skopeo "$RS_CLIENT_WHY"
fi

# ---------------------------------------------------------------- podman (registries.conf mirror)
# podman_case REPO (docker.io/REPO:latest; linux/amd64)
podman_case() {
	local repo=$1 ref=docker.io/$1:latest name="podman docker.io/$1:latest" exp cfg info want
	exp=$(up_platform_blobs "$repo" latest linux/amd64) || { fail "$name: pull" "cannot read the upstream's manifest"; return; }
	cfg=$(echo "$exp" | sed -n 2p)
	if ! podman_pull -q "$ref" > "$LOGS/podman-pull.log" 2>&1; then
		fail "$name: pull" "$(tail -n 2 "$LOGS/podman-pull.log" | tr '\n' ' ')"
		return
	fi
	pass "$name: pull"
	# .Digest can name another tag's manifest when the image id was already known (tiny and
	# multi's amd64 share it), so look for this tag's digest among the RepoDigests
	info=$(lpodman image inspect "$ref" --format '{{json .RepoDigests}} sha256:{{.Id}}' 2>&1)
	want="docker.io/$repo@$(up_digest "$repo" latest)"
	if jq -e --arg w "$want" 'index($w) != null' <<< "${info% *}" > /dev/null 2>&1 && [ "${info##* }" = "$cfg" ]; then
		pass "$name: manifest digest and image id (config) == upstream"
	else
		fail "$name: manifest digest and image id (config) == upstream" "got '$info', expected $want among RepoDigests and id $cfg"
	fi
	expect_eq "$name: layers (diff_ids) == upstream config's" \
		"$(lpodman image inspect "$ref" --format '{{json .RootFS.Layers}}' 2>&1 | jq -c .)" \
		"$(up_config_field "$repo" "$cfg" .rootfs.diff_ids)"
}

if client_usable podman; then
	podman_clean
	podman_case library/tiny
	podman_case library/multi
else
	skip podman "$RS_CLIENT_WHY"
fi

# ---------------------------------------------------------------- ctr (hosts.toml mirror, ?ns=)
# ctr_case REPO PLATFORM [ctr pull args]
ctr_case() {
	local repo=$1 plat=$2 ref=docker.io/$1:latest name="ctr docker.io/$1:latest" exp have d missing=
	shift 2
	[ "$plat" = linux/amd64 ] || name="$name ($plat)"
	exp=$(up_platform_blobs "$repo" latest "$plat") || { fail "$name: pull" "cannot read the upstream's manifest"; return; }
	if ! ctr_pull "$ref" "$@" > "$LOGS/ctr-pull.log" 2>&1; then
		fail "$name: pull" "$(tail -n 2 "$LOGS/ctr-pull.log" | tr '\n' ' ')"
		return
	fi
	pass "$name: pull"
	expect_eq "$name: image digest == upstream" \
		"$(lctr images ls 2> /dev/null | awk -v r="$ref" '$1 == r { print $3 }')" "$(up_digest "$repo" latest)"
	have=$(lctr content ls -q)
	for d in $exp; do grep -qx -- "$d" <<< "$have" || missing="$missing $d"; done
	if [ -z "$missing" ]; then
		pass "$name: manifest, config and layers in containerd's content store are the upstream's"
	else
		fail "$name: content" "missing from containerd's content store:$missing"
	fi
}

if client_usable ctr; then
	ctr_clean
	ctr_case library/tiny linux/amd64
	ctr_case library/multi linux/arm64 --platform linux/arm64

	# ?ns=docker.io: pull once more through the logging proxy in front of regslim and look at
	# what containerd sent and what regslim answered
	if logproxy_start "127.0.0.1:$((LAB_PORT_BASE + 80))" "$MIRROR" > "$LOGS/logproxy-start.log" 2>&1; then
		RS_MIRROR=$MIRROR
		MIRROR=127.0.0.1:$((LAB_PORT_BASE + 80))
		ctr_clean
		if ctr_pull docker.io/library/tiny:latest > "$LOGS/ctr-ns.log" 2>&1; then
			n_all=$(jq -s 'length' "$LOGS/logproxy.jsonl")
			n_ns=$(jq -s '[.[] | select(.path | test("[?&]ns=docker\\.io(&|$)")) | select(.status < 300)] | length' "$LOGS/logproxy.jsonl")
			if [ "$n_all" -ge 3 ] && [ "$n_all" = "$n_ns" ]; then
				pass "ctr: all $n_all requests carried ?ns=docker.io and were answered 2xx by regslim"
			else
				fail "ctr ?ns=" "$n_ns of $n_all requests carried ?ns=docker.io with a 2xx answer: $(jq -c '[.method, .path, .status]' "$LOGS/logproxy.jsonl" | head -n 6 | tr '\n' ' ')"
			fi
		else
			fail "ctr ?ns= pull through the logging proxy" "$(tail -n 2 "$LOGS/ctr-ns.log" | tr '\n' ' ')"
		fi
		MIRROR=$RS_MIRROR
		logproxy_stop > /dev/null
	else
		fail "ctr ?ns=" "logging proxy did not start: $(tail -n 1 "$LOGS/logproxy-start.log")"
	fi
else
	skip ctr "$RS_CLIENT_WHY"
fi

# the OCI-Namespace answer header (whatever the client): a HEAD with ?ns=docker.io
hdrs=$(http_head "$RS_URL/v2/library/tiny/manifests/latest?ns=docker.io" "${RS_ACCEPT_ALL[@]}")
expect_eq "HEAD ?ns=docker.io answers OCI-Namespace: docker.io" \
	"$(header_value OCI-Namespace <<< "$hdrs")" docker.io
expect_eq "HEAD ?ns=docker.io answers the upstream's Docker-Content-Digest" \
	"$(header_value Docker-Content-Digest <<< "$hdrs")" "$(up_digest library/tiny latest)"

# ---------------------------------------------------------------- docker (registry-mirrors)
# docker_case REF REPO (REF: what `docker pull` gets, e.g. tiny; REPO its upstream repo)
docker_case() {
	local ref=$1 repo=$2 name="docker $1" exp cfg info want
	exp=$(up_platform_blobs "$repo" latest linux/amd64) || { fail "$name: pull" "cannot read the upstream's manifest"; return; }
	cfg=$(echo "$exp" | sed -n 2p)
	if ! docker_pull "$ref" > "$LOGS/docker-pull.log" 2>&1; then
		fail "$name: pull" "$(tail -n 2 "$LOGS/docker-pull.log" | tr '\n' ' ') dockerd: $(grep 'Attempting next endpoint' "$LOGS/dockerd.log" | tail -n 1)"
		return
	fi
	pass "$name: pull"
	info=$(ldocker image inspect "$ref" --format '{{json .RepoDigests}} {{.Id}}' 2>&1)
	want="${ref#library/}@$(up_digest "$repo" latest)"
	if jq -e --arg w "$want" 'index($w) != null' <<< "${info% *}" > /dev/null 2>&1 && [ "${info##* }" = "$cfg" ]; then
		pass "$name: repo digest and image id (config) == upstream"
	else
		fail "$name: repo digest and image id (config) == upstream" "got '$info', expected $want among RepoDigests and id $cfg"
	fi
	expect_eq "$name: layers (diff_ids) == upstream config's" \
		"$(ldocker image inspect "$ref" --format '{{json .RootFS.Layers}}' 2>&1 | jq -c .)" \
		"$(up_config_field "$repo" "$cfg" .rootfs.diff_ids)"
}

if client_usable docker; then
	docker_clean
	n0=$(grep -cE '"ua": ?"docker/' "$RS_LOG")
	f0=$(grep -c 'Attempting next endpoint' "$LOGS/dockerd.log")
	docker_case tiny library/tiny
	docker_case library/multi library/multi
	n1=$(grep -cE '"ua": ?"docker/' "$RS_LOG")
	expect_ge "docker: its requests reached regslim (request log lines with ua docker/)" $((n1 - n0)) 4
	if [ "$(grep -c 'Attempting next endpoint' "$LOGS/dockerd.log")" != "$f0" ]; then
		fail "docker: no fallback" "dockerd left the mirror: $(grep 'Attempting next endpoint' "$LOGS/dockerd.log" | tail -n 1)"
	else
		pass "docker: no fallback away from the mirror"
	fi
else
	skip docker "$RS_CLIENT_WHY"
fi

# ---------------------------------------------------------------- regslim's store
missing=
for d in $(up_platform_blobs library/tiny latest linux/amd64 | tail -n +2) \
	$(up_platform_blobs library/multi latest linux/arm64 | tail -n +2); do
	store_has_blob "$d" || missing="$missing $d"
done
if [ -z "$missing" ]; then pass "regslim's store holds every pulled config and layer, verified"; else fail "store" "missing or wrong:$missing"; fi
expect_eq "regslim logged no error-level line" "$(grep -cE '"level": ?"error"' "$RS_LOG")" 0

finish
