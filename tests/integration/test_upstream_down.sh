#!/usr/bin/env bash
# test_upstream_down.sh - once warm, regslim serves every client's pull with the upstream stopped.
#
# regslim runs with a config file giving the upstream tag_ttl_s 1, so after `sleep 2` every tag
# must be revalidated: with the upstream down, the revalidation fails and the cached tag answer is
# served stale (stale-if-error, counted in regslim_stale_served_total and logged).
# Steps: pull with skopeo, podman, ctr, docker through regslim (warm); clear the clients' image
# stores; stop the upstream registry; pull the same images again: all succeed with the same
# digests; a never-pulled tag gets a registry-style 5xx error instead. Finally regslim is
# restarted (SIGTERM must exit 0) and still serves the images from its on-disk store.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

lab_setup
upstream_start
U=$REG_PLAIN
cat > "$REGSLIM_LAB/regslim.json" << EOF
{
  "upstreams": [
    {"name": "docker.io", "url": "http://$U", "default": true, "tag_ttl_s": 1, "timeout_s": 5}
  ]
}
EOF
RS_UPSTREAM= # the config file names the upstream
start_regslim --config "$REGSLIM_LAB/regslim.json"

# what each pull must give, read from the upstream while it runs
TINY=$(manifest_digest "$U" library/tiny latest)
MULTI=$(manifest_digest "$U" library/multi latest)
LABMULTI_ARM=$(image_blobs "$U" lab/multi latest linux/arm64 | sed -n 2p)
TINY_OCI=$(manifest_digest "$U" lab/tiny oci)
for v in TINY MULTI LABMULTI_ARM TINY_OCI; do
	[ -n "${!v}" ] || { fail setup "cannot read $v from the upstream"; finish; }
done

# pull_all PHASE: every client's pulls; prints PASS/FAIL/SKIP per pull and digest check
pull_all() {
	local ph=$1 d got n
	if client_usable skopeo; then
		for n in "library/tiny:latest $TINY" "lab/tiny:oci $TINY_OCI" "lab/multi:latest $LABMULTI_ARM --override-arch arm64"; do
			# shellcheck disable=SC2086 # "ref digest [args]"
			set -- $n
			d=$REGSLIM_LAB/pulls/skopeo-$ph-${1//[\/:]/_}
			if skopeo_pull "docker://$MIRROR/$1" "dir:$d" "${@:3}" > "$LOGS/skopeo-$ph.log" 2>&1; then
				expect_eq "$ph: skopeo $1${3:+ ${*:3}}" "$(sha256_of "$d/manifest.json")" "$2"
			else
				fail "$ph: skopeo $1${3:+ ${*:3}}" "$(tail -n 2 "$LOGS/skopeo-$ph.log" | tr '\n' ' ')"
			fi
			rm -rf "$d"
		done
	else
		skip "$ph: skopeo" "$RS_CLIENT_WHY"
	fi
	if client_usable podman; then
		for n in tiny:"$TINY" multi:"$MULTI"; do
			if podman_pull -q "docker.io/library/${n%%:*}:latest" > "$LOGS/podman-$ph.log" 2>&1; then
				got=$(lpodman image inspect "docker.io/library/${n%%:*}:latest" --format '{{json .RepoDigests}}' 2>&1)
				if [[ $got == *"docker.io/library/${n%%:*}@${n#*:}"* ]]; then
					pass "$ph: podman docker.io/library/${n%%:*}:latest"
				else
					fail "$ph: podman docker.io/library/${n%%:*}:latest" "RepoDigests $got lack ${n#*:}"
				fi
			else
				fail "$ph: podman docker.io/library/${n%%:*}:latest" "$(tail -n 2 "$LOGS/podman-$ph.log" | tr '\n' ' ')"
			fi
		done
	else
		skip "$ph: podman" "$RS_CLIENT_WHY"
	fi
	if client_usable ctr; then
		for n in "tiny $TINY" "multi $MULTI --platform linux/arm64"; do
			# shellcheck disable=SC2086
			set -- $n
			if ctr_pull "docker.io/library/$1:latest" "${@:3}" > "$LOGS/ctr-$ph.log" 2>&1; then
				expect_eq "$ph: ctr docker.io/library/$1:latest${3:+ ${*:3}}" \
					"$(lctr images ls 2> /dev/null | awk -v r="docker.io/library/$1:latest" '$1 == r { print $3 }')" "$2"
			else
				fail "$ph: ctr docker.io/library/$1:latest${3:+ ${*:3}}" "$(tail -n 2 "$LOGS/ctr-$ph.log" | tr '\n' ' ')"
			fi
		done
	else
		skip "$ph: ctr" "$RS_CLIENT_WHY"
	fi
	if client_usable docker; then
		for n in "tiny $TINY" "library/multi $MULTI"; do
			# shellcheck disable=SC2086
			set -- $n
			if docker_pull "$1" > "$LOGS/docker-$ph.log" 2>&1; then
				got=$(ldocker image inspect "$1" --format '{{json .RepoDigests}}' 2>&1)
				if [[ $got == *"${1#library/}@$2"* ]]; then
					pass "$ph: docker $1"
				else
					fail "$ph: docker $1" "RepoDigests $got lack $2"
				fi
			else
				fail "$ph: docker $1" "$(tail -n 2 "$LOGS/docker-$ph.log" | tr '\n' ' ') dockerd: $(grep 'Attempting next endpoint' "$LOGS/dockerd.log" | tail -n 1)"
			fi
		done
	else
		skip "$ph: docker" "$RS_CLIENT_WHY"
	fi
}

pull_all warm

# clear the clients' local stores, so the second round must fetch everything again
podman_clean
ctr_clean > /dev/null 2>&1
docker_clean > /dev/null 2>&1
left=
[ "${RS_CLIENT_STATE[podman]:-}" != ok ] || [ -z "$(lpodman images -q 2> /dev/null)" ] || left="$left podman"
[ "${RS_CLIENT_STATE[ctr]:-}" != ok ] || [ -z "$(lctr images ls -q 2> /dev/null)" ] || left="$left ctr"
[ "${RS_CLIENT_STATE[docker]:-}" != ok ] || [ -z "$(ldocker images -qa 2> /dev/null)" ] || left="$left docker"
if [ -z "$left" ]; then pass "clients' image stores cleared"; else fail "clear clients" "images left in:$left"; fi

# stop the upstream
upstream_stop plain
expect_eq "upstream registry stopped (GET /v2/ gets no answer)" "$(http_code "http://$U/v2/")" 000
sleep 2 # > tag_ttl_s: every tag now needs revalidation, which fails
stale0=$(metric regslim_stale_served_total)

pull_all "upstream down"

stale1=$(metric regslim_stale_served_total)
expect_ge "regslim_stale_served_total grew while the upstream was down ($stale0 -> $stale1)" "$((stale1 - stale0))" 1
if regslim_log_has 'stale'; then
	pass "regslim logged serving stale tag answers"
else
	fail "stale log" "no line mentioning 'stale' in $RS_LOG"
fi
expect_ge "regslim_upstream_errors_total counts the failed revalidations" "$(metric regslim_upstream_errors_total)" 1

# a tag never pulled: nothing cached, upstream down -> registry JSON error, 502 or 503
code=$(http_code "$RS_URL/v2/lab/tiny/manifests/raw" "${RS_ACCEPT_ALL[@]}")
body=$(rs_curl "$RS_URL/v2/lab/tiny/manifests/raw" "${RS_ACCEPT_ALL[@]}")
if [[ $code =~ ^50[23]$ ]] && jq -e '.errors[0].code' <<< "$body" > /dev/null 2>&1; then
	pass "uncached tag with the upstream down: $code $(jq -r '.errors[0].code' <<< "$body")"
else
	fail "uncached tag with the upstream down" "got HTTP $code body '${body:0:200}', expected 502/503 with a registry error"
fi
# a manifest by digest is cached for good: served without asking the upstream
expect_eq "manifest by digest served from the store" \
	"$(manifest_digest "$MIRROR" library/tiny "$TINY")" "$TINY"
expect_eq "regslim still healthy" "$(http_code "$RS_URL/healthz")" 200

# the cache is on disk: a restarted regslim still serves the images with the upstream down
rc=0
stop_regslim || rc=$?
expect_eq "regslim exits 0 on SIGTERM" "$rc" 0
start_regslim "${RS_ARGS[@]}"
if client_usable skopeo; then
	d=$REGSLIM_LAB/pulls/after-restart
	if skopeo_pull "docker://$MIRROR/library/tiny:latest" "dir:$d" > "$LOGS/skopeo-restart.log" 2>&1; then
		expect_eq "after a restart, upstream down: skopeo library/tiny:latest" "$(sha256_of "$d/manifest.json")" "$TINY"
	else
		fail "after a restart, upstream down: skopeo library/tiny:latest" "$(tail -n 2 "$LOGS/skopeo-restart.log" | tr '\n' ' ')"
	fi
	rm -rf "$d"
fi
if client_usable podman; then
	podman_clean
	if podman_pull -q docker.io/library/multi:latest > "$LOGS/podman-restart.log" 2>&1; then
		pass "after a restart, upstream down: podman docker.io/library/multi:latest"
	else
		fail "after a restart, upstream down: podman docker.io/library/multi:latest" "$(tail -n 2 "$LOGS/podman-restart.log" | tr '\n' ' ')"
	fi
fi

finish
