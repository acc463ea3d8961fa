#!/usr/bin/env bash
# test_api.sh: the registry API of `regslim serve` at the HTTP level, with curl, against a real
# docker-registry upstream. A logging proxy (logproxy.py) sits between regslim and the registry,
# so the test sees exactly what regslim asks the upstream:
#
#   curl -> regslim (BASE+50, tag_ttl_s 1) ---\
#   curl -> regslim (BASE+51, tag_ttl_s 3600) --> logproxy (BASE+80) -> docker-registry (BASE+0)
#
# Checks: /v2/, manifests GET/HEAD by tag and digest for v2s2, OCI (no mediaType), OCI index and
# docker list (headers and bytes equal to the upstream's direct answer, HEAD without a body); all
# Accept lines forwarded, answers by Accept like the upstream's (schema 1 for OCI-only clients of a
# v2s2 tag, the amd64 manifest for v2s2-only clients of a list) also when the tag is cached;
# containerd's HEAD + GET by digest; digest cache; blobs GET/HEAD, Range on a miss and a hit, 416;
# 10 concurrent cold GETs -> one upstream GET; tags/list; registry JSON errors and refused writes;
# tag TTL with HEAD revalidation; stale-if-error and cached pulls with the upstream down; /healthz,
# /metrics, one JSON log line per request; graceful SIGTERM during a slow download. One line per check (PASS name / FAIL name: why), then
# "N passed, N failed"; exit status non-zero on any failure.
#
# Env (set by ctest): REGSLIM_BIN, LAB_PORT_BASE.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-240} # lib.sh's watchdog bounds the whole test
# shellcheck source=lib.sh
. "$HERE/lib.sh"

R2=127.0.0.1:$((LAB_PORT_BASE + 51)) # second regslim, long tag TTL
LP=127.0.0.1:$((LAB_PORT_BASE + 80)) # logproxy in front of the registry
REG=127.0.0.1:$LAB_PORT_BASE          # the registry itself

MT_V2=application/vnd.docker.distribution.manifest.v2+json
MT_LIST=application/vnd.docker.distribution.manifest.list.v2+json
MT_OCI=application/vnd.oci.image.manifest.v1+json
MT_IDX=application/vnd.oci.image.index.v1+json
MT_V1S=application/vnd.docker.distribution.manifest.v1+prettyjws
MT_V1=application/vnd.docker.distribution.manifest.v1+json
# what skopeo and podman send: six separate Accept lines
ACCEPT6=(-H "Accept: $MT_OCI" -H "Accept: $MT_V2" -H "Accept: $MT_V1S" -H "Accept: $MT_V1"
	-H "Accept: $MT_LIST" -H "Accept: $MT_IDX")

# ---------------------------------------------------------------- local helpers
# fetch KEY URL [curl args]: response headers in $W/KEY.h, body in $W/KEY.b; prints the status
fetch() {
	local key=$1 url=$2
	shift 2
	curl -s --max-time 30 -D "$W/$key.h" -o "$W/$key.b" -w '%{http_code}' "$@" "$url" 2> /dev/null || true
}
# head_of KEY NAME: the value of header NAME in $W/KEY.h (first one, CR stripped)
head_of() { grep -i "^$2:" "$W/$1.h" 2> /dev/null | head -n 1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//;s/ *$//'; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
# raw_head HOSTPORT PATH: bytes that follow the header block of a HEAD answer (must be 0)
raw_head_body_len() {
	local hp=$1 path=$2
	timeout 10 "$PY" - "$hp" "$path" << 'EOF'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(("HEAD %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nAccept: application/vnd.docker.distribution.manifest.v2+json\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\nAccept: application/vnd.oci.image.index.v1+json\r\nAccept: application/vnd.docker.distribution.manifest.list.v2+json\r\n\r\n" % (sys.argv[2], sys.argv[1])).encode())
data = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
except socket.timeout:
    pass
i = data.find(b"\r\n\r\n")
print(-1 if i < 0 else len(data) - i - 4)
EOF
}
# err_code KEY: the first registry error code of body $W/KEY.b ("" if not registry error JSON)
err_code() { jq -r 'if (.errors|type)=="array" and (.errors|length)>0 and (.errors[0].code|type)=="string" and (.errors[0].message|type)=="string" then .errors[0].code else "" end' "$W/$1.b" 2> /dev/null; }
# lp_count JQ-FILTER: number of logproxy lines matching the filter
lp_count() { jq -c "select($1)" "$LPLOG" 2> /dev/null | wc -l; }
# push_blob REPO FILE: monolithic upload to the registry; prints the digest
push_blob() {
	local repo=$1 f=$2 d loc
	d=sha256:$(sha_of "$f")
	loc=$(curl -s --max-time 30 -X POST -D - -o /dev/null "http://$REG/v2/$repo/blobs/uploads/" | tr -d '\r' |
		awk -F': ' 'tolower($1)=="location"{print $2}')
	[ -n "$loc" ] || return 1
	case $loc in http*) ;; *) loc=http://$REG$loc ;; esac
	case $loc in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
	[ "$(curl -s --max-time 120 -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
		--data-binary "@$f" "$loc")" = 201 ] || return 1
	echo "$d"
}
# metric NAME{labels}: value of one exact series from /metrics of regslim ("" if absent)

# ---------------------------------------------------------------- set-up
lab_setup
W=$REGSLIM_LAB/api # scratch files of this test
LPLOG=$REGSLIM_LAB/logs/logproxy.jsonl
mkdir -p "$W"
upstream_start plain
logproxy_start "$LP" "$REG" > "$LOGS/logproxy-start.log" 2>&1 || {
	fail setup_logproxy "$(tail -n 2 "$LOGS/logproxy-start.log")"
	finish
}
lab_on_exit logproxy_stop
cat > "$W/rs1.json" << EOF
{"listen": "127.0.0.1:$((LAB_PORT_BASE + 50))", "data_dir": "$REGSLIM_LAB/rs", "shutdown_grace_s": 20,
 "upstreams": [{"name": "docker.io", "url": "http://$LP", "default": true, "tag_ttl_s": 1, "timeout_s": 10}]}
EOF
cat > "$W/rs2.json" << EOF
{"listen": "$R2", "data_dir": "$REGSLIM_LAB/rs2",
 "upstreams": [{"name": "docker.io", "url": "http://$LP", "default": true, "tag_ttl_s": 3600, "timeout_s": 10}]}
EOF
RS_UPSTREAM="" start_regslim --config "$W/rs1.json"
RS=127.0.0.1:$RS_PORT
RS_PID=$(lab_pid regslim-main)
regslim_spawn ttl "${R2##*:}" "" "$REGSLIM_LAB/rs2" --config "$W/rs2.json" 2> "$LOGS/start-ttl.err" || {
	fail setup_second_regslim "$(head -n 3 "$LOGS/start-ttl.err")"
	finish
}

# ---------------------------------------------------------------- /v2/
st=$(fetch base "http://$RS/v2/")
expect base_v2_200 "[ '$st' = 200 ]" "status $st"
expect base_v2_api_version "[ '$(head_of base Docker-Distribution-API-Version)' = registry/2.0 ]" \
	"Docker-Distribution-API-Version '$(head_of base Docker-Distribution-API-Version)'"

# ---------------------------------------------------------------- Accept forwarding (fresh tag)
logproxy_clear
st=$(fetch acc "http://$RS/v2/library/tiny/manifests/latest" "${ACCEPT6[@]}")
dst=$(fetch accd "http://$REG/v2/library/tiny/manifests/latest" "${ACCEPT6[@]}")
up=$(jq -r 'select(.path=="/v2/library/tiny/manifests/latest") | .accept' "$LPLOG" | head -n 1)
missing=
for t in $MT_OCI $MT_V2 $MT_V1S $MT_V1 $MT_LIST $MT_IDX; do
	case ", $up," in *", $t,"*) ;; *) missing="$missing $t" ;; esac
done
expect accept_six_lines_reach_upstream "[ -n '$up' ] && [ -z '$missing' ]" "upstream saw Accept '$up', missing:$missing"
expect accept_v2s2_not_converted "[ '$st' = 200 ] && [ '$(head_of acc Content-Type)' = $MT_V2 ] && cmp -s '$W/acc.b' '$W/accd.b'" \
	"status $st, Content-Type '$(head_of acc Content-Type)' (want $MT_V2, bytes equal to upstream's)"

# a client that accepts only OCI types for a v2s2 tag gets what the upstream gives it (schema 1)
ACCEPT_OCI=(-H "Accept: $MT_OCI" -H "Accept: $MT_IDX")
st=$(fetch ocio "http://$RS/v2/lab/tiny/manifests/latest" "${ACCEPT_OCI[@]}")
dst=$(fetch ociod "http://$REG/v2/lab/tiny/manifests/latest" "${ACCEPT_OCI[@]}")
expect accept_oci_only_like_upstream "[ '$st' = '$dst' ] && [ '$(head_of ocio Content-Type)' = '$(head_of ociod Content-Type)' ] && [ '$(head_of ocio Docker-Content-Digest)' = '$(head_of ociod Docker-Content-Digest)' ]" \
	"regslim $st '$(head_of ocio Content-Type)' $(head_of ocio Docker-Content-Digest), upstream $dst '$(head_of ociod Content-Type)' $(head_of ociod Docker-Content-Digest)"
# the same after library/tiny:latest (same image) is cached as v2s2: still the upstream's answer
st=$(fetch ocio2 "http://$RS/v2/library/tiny/manifests/latest" "${ACCEPT_OCI[@]}")
expect accept_oci_only_after_v2s2_cached "[ '$st' = '$dst' ] && [ '$(head_of ocio2 Content-Type)' = '$(head_of ociod Content-Type)' ]" \
	"regslim $st '$(head_of ocio2 Content-Type)', upstream $dst '$(head_of ociod Content-Type)'"

# ---------------------------------------------------------------- manifests by tag and digest
declare -A DIG # ref -> digest
for ref in library/tiny:latest lab/tiny:oci lab/multi:latest library/multi:latest; do
	repo=${ref%:*} tag=${ref##*:} k=${ref//[\/:]/_}
	dst=$(fetch "d_$k" "http://$REG/v2/$repo/manifests/$tag" "${ACCEPT6[@]}")
	d=$(head_of "d_$k" Docker-Content-Digest)
	DIG[$ref]=$d
	for how in tag digest; do
		r=$tag
		[ $how = digest ] && r=$d
		st=$(fetch "g_${k}_$how" "http://$RS/v2/$repo/manifests/$r" "${ACCEPT6[@]}")
		hst=$(fetch "h_${k}_$how" "http://$RS/v2/$repo/manifests/$r" -I "${ACCEPT6[@]}")
		why=
		[ "$dst" = 200 ] || why="$why upstream answered $dst;"
		[ "$st" = 200 ] || why="$why GET status $st;"
		[ "$hst" = 200 ] || why="$why HEAD status $hst;"
		for h in Content-Type Content-Length Docker-Content-Digest; do
			[ "$(head_of "g_${k}_$how" $h)" = "$(head_of "d_$k" $h)" ] ||
				why="$why GET $h '$(head_of "g_${k}_$how" $h)' != upstream '$(head_of "d_$k" $h)';"
			[ "$(head_of "h_${k}_$how" $h)" = "$(head_of "d_$k" $h)" ] ||
				why="$why HEAD $h '$(head_of "h_${k}_$how" $h)' != upstream '$(head_of "d_$k" $h)';"
		done
		cmp -s "$W/g_${k}_$how.b" "$W/d_$k.b" || why="$why body differs from the upstream's;"
		[ "sha256:$(sha_of "$W/g_${k}_$how.b")" = "$d" ] || why="$why body does not hash to $d;"
		expect "manifest_${k}_by_$how" "[ -z '$why' ]" "$why"
	done
	n=$(raw_head_body_len "$RS" "/v2/$repo/manifests/$tag")
	expect "manifest_${k}_head_has_no_body" "[ '$n' = 0 ]" "$n bytes after the HEAD answer's headers"
done

# the tag cache answers by the client's Accept: a client that takes only docker v2s2 gets what the
# upstream gives it for a tag that is (cached as) a list or an index: the amd64 manifest, or 404
for ref in library/multi:latest lab/multi:latest; do
	repo=${ref%:*} tag=${ref##*:} k=v2only_${ref//[\/:]/_}
	st=$(fetch "$k" "http://$RS/v2/$repo/manifests/$tag" -H "Accept: $MT_V2")
	dst=$(fetch "${k}_d" "http://$REG/v2/$repo/manifests/$tag" -H "Accept: $MT_V2")
	if [ "$dst" = 200 ]; then
		same="[ '$(head_of "$k" Docker-Content-Digest)' = '$(head_of "${k}_d" Docker-Content-Digest)' ] && [ '$(head_of "$k" Content-Type)' = '$(head_of "${k}_d" Content-Type)' ]"
	else
		same="[ '$(err_code "$k")' = '$(err_code "${k}_d")' ]"
	fi
	expect "accept_v2s2_only_on_cached_${k#v2only_}_like_upstream" "[ '$st' = '$dst' ] && $same" \
		"regslim $st '$(head_of "$k" Content-Type)' '$(head_of "$k" Docker-Content-Digest)' $(err_code "$k"), upstream $dst '$(head_of "${k}_d" Content-Type)' '$(head_of "${k}_d" Docker-Content-Digest)' $(err_code "${k}_d")"
done

# second GET by digest is served from the cache: it does not reach the upstream
d=${DIG[lab/multi:latest]}
fetch c1 "http://$RS/v2/lab/multi/manifests/$d" "${ACCEPT6[@]}" > /dev/null
logproxy_clear
st=$(fetch c2 "http://$RS/v2/lab/multi/manifests/$d" "${ACCEPT6[@]}")
n=$(lp_count '.path | startswith("/v2/lab/multi/manifests/")')
expect manifest_by_digest_cached "[ '$st' = 200 ] && [ '$n' = 0 ]" "status $st, $n upstream requests for it"

# ---------------------------------------------------------------- blobs
cfg=$(jq -r .config.digest "$W/d_library_tiny_latest.b")
l1=$(jq -r '.layers[0].digest' "$W/d_library_tiny_latest.b")
l2=$(jq -r '.layers[1].digest' "$W/d_library_tiny_latest.b")
for b in "$cfg" "$l1" "$l2"; do
	k=blob_${b:7:12}
	st=$(fetch "$k" "http://$RS/v2/library/tiny/blobs/$b")
	hst=$(fetch "${k}_h" "http://$RS/v2/library/tiny/blobs/$b" -I)
	sz=$(stat -c %s "$W/$k.b" 2> /dev/null || echo 0)
	why=
	[ "$st" = 200 ] || why="$why GET status $st;"
	[ "$hst" = 200 ] || why="$why HEAD status $hst;"
	[ "sha256:$(sha_of "$W/$k.b")" = "$b" ] || why="$why body does not hash to the digest;"
	[ "$(head_of "$k" Content-Length)" = "$sz" ] || why="$why GET Content-Length '$(head_of "$k" Content-Length)' != $sz;"
	[ "$(head_of "${k}_h" Content-Length)" = "$sz" ] || why="$why HEAD Content-Length '$(head_of "${k}_h" Content-Length)' != $sz;"
	[ "$(head_of "$k" Docker-Content-Digest)" = "$b" ] || why="$why GET Docker-Content-Digest '$(head_of "$k" Docker-Content-Digest)';"
	[ "$(head_of "${k}_h" Docker-Content-Digest)" = "$b" ] || why="$why HEAD Docker-Content-Digest '$(head_of "${k}_h" Docker-Content-Digest)';"
	n=$(raw_head_body_len "$RS" "/v2/library/tiny/blobs/$b")
	[ "$n" = 0 ] || why="$why $n bytes after the HEAD answer's headers;"
	expect "blob_get_head_${b:7:12}" "[ -z '$why' ]" "$why"
done

bad=
for b in "$cfg" "$l1" "$l2"; do store_has_blob "$b" "$REGSLIM_LAB/rs" || bad="$bad $b"; done
expect store_holds_verified_blobs "[ -z '$bad' ]" "not in $REGSLIM_LAB/rs/blobs (or wrong bytes):$bad"

# Range requests: three fresh blobs (cache misses), then the same ranges again (hits)
for i in 1 2 3 4; do head -c $((200000 + i)) /dev/urandom > "$W/rnd$i"; done
declare -A RB
for i in 1 2 3 4; do RB[$i]=$(push_blob lab/rng "$W/rnd$i") || RB[$i]=; done
expect range_setup_blobs_pushed "[ -n '${RB[1]}' ] && [ -n '${RB[2]}' ] && [ -n '${RB[3]}' ] && [ -n '${RB[4]}' ]" "blob upload to the registry failed"
# range_check NAME FILE DIGEST RANGE FIRST LAST
range_check() {
	local name=$1 f=$2 d=$3 range=$4 first=$5 last=$6 size st why=
	size=$(stat -c %s "$f")
	st=$(fetch "$name" "http://$RS/v2/lab/rng/blobs/$d" -H "Range: bytes=$range")
	tail -c +$((first + 1)) "$f" | head -c $((last - first + 1)) > "$W/$name.want"
	[ "$st" = 206 ] || why="$why status $st (want 206);"
	[ "$(head_of "$name" Content-Range)" = "bytes $first-$last/$size" ] ||
		why="$why Content-Range '$(head_of "$name" Content-Range)' (want 'bytes $first-$last/$size');"
	cmp -s "$W/$name.b" "$W/$name.want" || why="$why body is not bytes $first-$last;"
	[ "$(head_of "$name" Content-Length)" = $((last - first + 1)) ] || why="$why Content-Length '$(head_of "$name" Content-Length)';"
	expect "$name" "[ -z '$why' ]" "$why"
}
s1=$(stat -c %s "$W/rnd1") s2=$(stat -c %s "$W/rnd2") s3=$(stat -c %s "$W/rnd3")
range_check range_miss_0_99 "$W/rnd1" "${RB[1]}" 0-99 0 99
range_check range_miss_100_open "$W/rnd2" "${RB[2]}" 100- 100 $((s2 - 1))
range_check range_miss_suffix_10 "$W/rnd3" "${RB[3]}" -10 $((s3 - 10)) $((s3 - 1))
st=$(fetch r416m "http://$RS/v2/lab/rng/blobs/${RB[4]}" -H "Range: bytes=999999999-")
expect range_miss_unsatisfiable_416 "[ '$st' = 416 ]" "status $st"
# make sure blob 1..3 are in the store (full GETs), then ranges are hits
for i in 1 2 3; do fetch "full$i" "http://$RS/v2/lab/rng/blobs/${RB[$i]}" > /dev/null; done
expect range_full_get_after_range "cmp -s '$W/full1.b' '$W/rnd1' && cmp -s '$W/full2.b' '$W/rnd2' && cmp -s '$W/full3.b' '$W/rnd3'" "full GET bytes differ"
logproxy_clear
range_check range_hit_0_99 "$W/rnd1" "${RB[1]}" 0-99 0 99
range_check range_hit_100_open "$W/rnd2" "${RB[2]}" 100- 100 $((s2 - 1))
range_check range_hit_suffix_10 "$W/rnd3" "${RB[3]}" -10 $((s3 - 10)) $((s3 - 1))
st=$(fetch r416h "http://$RS/v2/lab/rng/blobs/${RB[1]}" -H "Range: bytes=$s1-")
expect range_hit_unsatisfiable_416 "[ '$st' = 416 ]" "status $st"
n=$(lp_count '.path | startswith("/v2/lab/rng/blobs/")')
expect range_hits_not_upstream "[ '$n' = 0 ]" "$n upstream blob requests for cached blobs"

# ---------------------------------------------------------------- tags/list
# Debian's docker-registry answers its tags unsorted and ignores n and last; regslim answers the spec's
# pagination (issue 14): the same tags in lexical order, n of them, a Link to the next page.
st=$(fetch tl "http://$RS/v2/lab/tiny/tags/list")
dst=$(fetch tld "http://$REG/v2/lab/tiny/tags/list")
expect tags_list_upstream_tags_sorted "[ '$st' = 200 ] && [ \"\$(jq -c .tags '$W/tl.b')\" = \"\$(jq -c '.tags|sort' '$W/tld.b')\" ] && [ \"\$(jq -r .name '$W/tl.b')\" = lab/tiny ]" \
	"status $st, body $(head -c 200 "$W/tl.b"), upstream $(head -c 200 "$W/tld.b")"
st=$(fetch tln "http://$RS/v2/lab/tiny/tags/list?n=1")
first=$(jq -r '.tags|sort|.[0]' "$W/tld.b")
tln_link=$(head_of tln Link) tln_want="</v2/lab/tiny/tags/list?n=1&last=$first>; rel=\"next\""
expect tags_list_n1_paginated "[ '$st' = 200 ] && [ \"\$(jq -c .tags '$W/tln.b')\" = '[\"$first\"]' ] && [ \"\$tln_link\" = \"\$tln_want\" ]" \
	"regslim $st Link '$tln_link' $(head -c 200 "$W/tln.b"); want first tag '$first' and Link '$tln_want'"

st=$(fetch tlu "http://$RS/v2/lab/no-such-repo/tags/list")
dst=$(fetch tlud "http://$REG/v2/lab/no-such-repo/tags/list")
expect tags_list_unknown_repo_like_upstream "[ '$st' = '$dst' ] && [ '$(err_code tlu)' = '$(err_code tlud)' ] && [ -n '$(err_code tlu)' ]" \
	"regslim $st '$(err_code tlu)', upstream $dst '$(err_code tlud)'"

# ---------------------------------------------------------------- containerd's single Accept line, HEAD then GET by digest
CTRD_ACCEPT="Accept: $MT_V2, $MT_LIST, $MT_OCI, $MT_IDX, */*"
for ref in lab/multi:v2s2 lab/tiny:zstd; do # tags not asked for before: HEAD on a miss
	repo=${ref%:*} tag=${ref##*:} k=ctrd_${ref//[\/:]/_}
	st=$(fetch "$k" "http://$RS/v2/$repo/manifests/$tag?ns=docker.io" -I -H "$CTRD_ACCEPT")
	dst=$(fetch "${k}_d" "http://$REG/v2/$repo/manifests/$tag" -I -H "$CTRD_ACCEPT")
	d=$(head_of "$k" Docker-Content-Digest)
	st2=$(fetch "${k}_g" "http://$RS/v2/$repo/manifests/$d?ns=docker.io" -H "Accept: $(head_of "$k" Content-Type), */*")
	expect "containerd_accept_$k" "[ '$st' = 200 ] && [ -n '$d' ] && [ '$d' = '$(head_of "${k}_d" Docker-Content-Digest)' ] && [ '$(head_of "$k" Content-Type)' = '$(head_of "${k}_d" Content-Type)' ] && [ '$st2' = 200 ] && [ 'sha256:$(sha_of "$W/${k}_g.b")' = '$d' ]" \
		"HEAD $st digest '$d' type '$(head_of "$k" Content-Type)' (upstream '$(head_of "${k}_d" Docker-Content-Digest)' '$(head_of "${k}_d" Content-Type)'), GET by digest $st2"
done

# ---------------------------------------------------------------- cold blob: HEAD, then 10 concurrent GETs, one upstream download
head -c $((6 << 20)) /dev/urandom > "$W/cold"
cd_=$(push_blob lab/cold "$W/cold")
logproxy_clear
st=$(fetch coldh "http://$RS/v2/lab/cold/blobs/$cd_" -I)
expect blob_head_on_miss "[ '$st' = 200 ] && [ '$(head_of coldh Content-Length)' = $((6 << 20)) ] && [ '$(head_of coldh Docker-Content-Digest)' = '$cd_' ]" \
	"status $st Content-Length '$(head_of coldh Content-Length)' digest '$(head_of coldh Docker-Content-Digest)'"
bf0=$(metric regslim_upstream_blob_fetches_total 'upstream="docker.io"')
pids=()
for i in $(seq 1 10); do
	curl -s --max-time 60 -o "$W/cold$i.b" "http://$RS/v2/lab/cold/blobs/$cd_" &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
bad=
for i in $(seq 1 10); do cmp -s "$W/cold$i.b" "$W/cold" || bad="$bad $i"; done
expect blob_concurrent_cold_all_correct "[ -z '$bad' ]" "clients with wrong bytes:$bad"
n=$(lp_count ".method==\"GET\" and .path==\"/v2/lab/cold/blobs/$cd_\"")
expect blob_concurrent_cold_one_upstream_get "[ '$n' = 1 ]" "$n upstream GETs of the blob for 10 concurrent clients"
bf1=$(metric regslim_upstream_blob_fetches_total 'upstream="docker.io"')
expect metrics_blob_fetches_one_for_concurrent_cold "[ -n '$bf0' ] && [ \$(( ${bf1:-0} - ${bf0:-0} )) = 1 ]" \
	"regslim_upstream_blob_fetches_total{upstream=\"docker.io\"} $bf0 -> $bf1"

# ---------------------------------------------------------------- errors
# err_check NAME WANT-STATUS WANT-CODE URL [curl args]: a registry JSON error with that status and code
err_check() { # WANT-STATUS and WANT-CODE are extended regexes (e.g. '405|403')
	local name=$1 ws=$2 wc=$3 url=$4 st c
	shift 4
	st=$(fetch "$name" "$url" "$@")
	c=$(err_code "$name")
	expect "$name" "[[ '$st' =~ ^($ws)\$ ]] && [[ '$c' =~ ^($wc)\$ ]] && [[ '$(head_of "$name" Content-Type)' == application/json* ]]" \
		"status $st code '$c' Content-Type '$(head_of "$name" Content-Type)' (want $ws $wc application/json), body $(head -c 200 "$W/$name.b")"
}
err_check err_manifest_unknown 404 MANIFEST_UNKNOWN "http://$RS/v2/lab/tiny/manifests/no-such-tag" "${ACCEPT6[@]}"
err_check err_manifest_unknown_digest 404 MANIFEST_UNKNOWN "http://$RS/v2/lab/tiny/manifests/sha256:$(printf 'no such manifest' | sha256sum | cut -d' ' -f1)" "${ACCEPT6[@]}"
err_check err_blob_unknown 404 BLOB_UNKNOWN "http://$RS/v2/lab/tiny/blobs/sha256:$(printf 'no such blob' | sha256sum | cut -d' ' -f1)"
err_check err_digest_invalid 400 DIGEST_INVALID "http://$RS/v2/lab/tiny/blobs/sha256:xyz"
err_check err_name_invalid_upper 400 NAME_INVALID "http://$RS/v2/Lab/Tiny/manifests/latest"
err_check err_name_invalid_dotdot 400 NAME_INVALID "http://$RS/v2/lab/../tiny/manifests/latest" --path-as-is
# writes: the read-only mirror of issue 2 answers 405 UNSUPPORTED; once push exists (proxy/api/push_http.c),
# a configuration without an "auth" section refuses them with 403 DENIED. Either way a registry error,
# and nothing changes upstream.
err_check err_put_manifest_refused '405|403' 'UNSUPPORTED|DENIED' "http://$RS/v2/lab/tiny/manifests/latest" -X PUT \
	-H "Content-Type: $MT_LIST" --data-binary "@$W/d_library_multi_latest.b"
err_check err_post_upload_refused '405|403' 'UNSUPPORTED|DENIED' "http://$RS/v2/lab/tiny/blobs/uploads/" -X POST
err_check err_post_monolithic_refused '405|403' 'UNSUPPORTED|DENIED' "http://$RS/v2/lab/tiny/blobs/uploads/?digest=sha256:$(printf 'x' | sha256sum | cut -d' ' -f1)" \
	-X POST -H 'Content-Type: application/octet-stream' --data-binary x
st=$(fetch wr_after "http://$REG/v2/lab/tiny/manifests/latest" -I -H "Accept: $MT_V2" -H "Accept: $MT_LIST")
expect writes_did_not_reach_upstream "[ '$st' = 200 ] && [ '$(head_of wr_after Content-Type)' = $MT_V2 ]" \
	"upstream lab/tiny:latest is now $st '$(head_of wr_after Content-Type)'"
err_check err_delete_manifest_405 405 UNSUPPORTED "http://$RS/v2/lab/tiny/manifests/${DIG[library/tiny:latest]}" -X DELETE
err_check err_delete_blob_405 405 UNSUPPORTED "http://$RS/v2/library/tiny/blobs/$l1" -X DELETE
st=$(fetch hz "http://$RS/healthz")
expect healthz_200 "[ '$st' = 200 ] && [ \"\$(jq -r .status '$W/hz.b')\" = ok ]" "status $st body $(head -c 100 "$W/hz.b")"

# ---------------------------------------------------------------- one JSON log line per request
n0=$(wc -l < "$RS_LOG")
probes=()
i=0
for spec in "/v2/" "/v2/library/tiny/manifests/latest" "/v2/library/tiny/blobs/$l1" "/v2/lab/tiny/manifests/nope" \
	"/healthz" "/metrics" "/v2/lab/tiny/tags/list" "/v2/lab/tiny/blobs/sha256:xyz"; do
	i=$((i + 1))
	ua=rsB-logprobe-$$-$i
	probes+=("$ua")
	curl -s --max-time 10 -o /dev/null -A "$ua" "${ACCEPT6[@]}" "http://$RS$spec" || true
done
curl -s --max-time 10 -o /dev/null -I -A "rsB-logprobe-$$-head" "${ACCEPT6[@]}" "http://$RS/v2/library/tiny/manifests/latest" || true
probes+=("rsB-logprobe-$$-head")
sleep 1
tail -n +$((n0 + 1)) "$RS_LOG" > "$W/logslice"
bad=
for ua in "${probes[@]}"; do
	c=$(jq -c --arg ua "$ua" 'select(.msg=="request" and .ua==$ua)' "$W/logslice" 2> /dev/null | wc -l)
	[ "$c" = 1 ] || bad="$bad $ua:$c"
done
expect log_one_json_line_per_request "[ -z '$bad' ]" "request log lines per probe (want 1):$bad"
# (lines starting with "# " are lib.sh's own notes: the command line it started)
grep -v '^# ' "$RS_LOG" > "$W/rslog"
nonjson=$(grep -c -v '^[[:space:]]*{' "$W/rslog" || true)
jqok=$(jq -c . "$W/rslog" > /dev/null 2>&1 && echo yes)
expect log_every_line_json "[ '$jqok' = yes ] && [ '$nonjson' = 0 ]" "$nonjson non-JSON lines in $RS_LOG"
fields=$(jq -c --arg ua "rsB-logprobe-$$-3" 'select(.ua==$ua) | [.ts, .level, .method, .path, .route, .status, .bytes, .ms, .cache] | map(type)' "$W/logslice" 2> /dev/null)
expect log_request_fields "[ '$fields' = '[\"string\",\"string\",\"string\",\"string\",\"string\",\"number\",\"number\",\"number\",\"string\"]' ]" \
	"field types of the blob request's line: $fields"

# ---------------------------------------------------------------- /metrics
curl -s --max-time 10 "http://$RS/metrics" > "$W/metrics"
# msum NAME [LABELS]: lib.sh's metric (label order does not matter) on the saved scrape
msum() { metric "$1" "${2:-}" "file://$W/metrics"; }
for name in regslim_http_requests_total regslim_cache_hits_total regslim_cache_misses_total \
	regslim_stale_served_total regslim_upstream_requests_total regslim_upstream_errors_total \
	regslim_upstream_blob_fetches_total regslim_upstream_bytes_total regslim_client_bytes_total \
	regslim_inflight_downloads process_resident_memory_bytes; do
	expect "metrics_has_$name" "grep -q '^${name}[{ ]' '$W/metrics'" "no series $name"
done
gt() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a+0 > b+0)}'; }
v=$(msum regslim_http_requests_total 'route="manifest",method="GET",status="200"')
expect metrics_manifest_get_200_counted "gt '$v' 10" "manifest GET 200 = $v"
v=$(msum regslim_http_requests_total 'route="blob",method="GET",status="206"')
expect metrics_blob_206_counted "gt '$v' 5" "blob GET 206 = $v"
v=$(msum regslim_http_requests_total 'route="manifest",method="GET",status="404"')
expect metrics_manifest_404_counted "gt '$v' 0" "manifest GET 404 = $v"
v=$(msum regslim_http_requests_total 'route="blob",method="HEAD",status="200"')
expect metrics_blob_head_counted "gt '$v' 2" "blob HEAD 200 = $v"
v=$(msum regslim_cache_hits_total 'kind="blob"')
expect metrics_blob_hits "gt '$v' 0" "blob hits $v"
v=$(msum regslim_cache_misses_total 'kind="blob"')
expect metrics_blob_misses "gt '$v' 0" "blob misses $v"
v=$(msum regslim_cache_hits_total 'kind="manifest"')
expect metrics_manifest_hits "gt '$v' 0" "manifest hits $v"
v=$(msum regslim_upstream_bytes_total)
expect metrics_upstream_bytes "gt '$v' 500000" "upstream bytes $v (3 random blobs of 200 KB were fetched whole)"
v=$(msum regslim_client_bytes_total)
expect metrics_client_bytes "gt '$v' 500000" "client bytes $v (3 random blobs of 200 KB were served whole)"
v=$(msum process_resident_memory_bytes)
expect metrics_rss_sane "gt '$v' 1000000 && gt 4000000000 '$v'" "RSS $v"
v=$(msum regslim_inflight_downloads)
expect metrics_inflight_zero_when_idle "[ '$v' = 0 ]" "inflight downloads $v"

# ---------------------------------------------------------------- tag TTL and revalidation
# lab/ttl:moving starts as tiny's v2s2 manifest, then moves to tiny's OCI manifest
FIXOCI=$REGSLIM_LAB/fixtures/oci/tiny:latest
skp() { timeout 120 skopeo --insecure-policy --tmpdir "$REGSLIM_LAB/tmp" copy --dest-tls-verify=false -q "$@" > "$W/skopeo.log" 2>&1; }
skp --format v2s2 "oci:$FIXOCI" "docker://$REG/lab/ttl:moving"
old=$(fetch ttl0 "http://$REG/v2/lab/ttl/manifests/moving" -I "${ACCEPT6[@]}" > /dev/null; head_of ttl0 Docker-Content-Digest)
fetch ttl1 "http://$RS/v2/lab/ttl/manifests/moving" "${ACCEPT6[@]}" > /dev/null
fetch ttl1b "http://$R2/v2/lab/ttl/manifests/moving" "${ACCEPT6[@]}" > /dev/null
expect ttl_first_answer "[ -n '$old' ] && [ '$(head_of ttl1 Docker-Content-Digest)' = '$old' ] && [ '$(head_of ttl1b Docker-Content-Digest)' = '$old' ]" \
	"upstream $old, regslim '$(head_of ttl1 Docker-Content-Digest)' and '$(head_of ttl1b Docker-Content-Digest)'"
skp --format oci "oci:$FIXOCI" "docker://$REG/lab/ttl:moving"
new=$(fetch ttl2 "http://$REG/v2/lab/ttl/manifests/moving" -I "${ACCEPT6[@]}" > /dev/null; head_of ttl2 Docker-Content-Digest)
expect ttl_tag_moved_upstream "[ -n '$new' ] && [ '$new' != '$old' ]" "upstream digest $new (old $old)"
st=$(fetch ttl3 "http://$R2/v2/lab/ttl/manifests/moving" "${ACCEPT6[@]}")
expect ttl_long_still_serves_old "[ '$st' = 200 ] && [ '$(head_of ttl3 Docker-Content-Digest)' = '$old' ]" \
	"status $st digest '$(head_of ttl3 Docker-Content-Digest)' (want old $old)"
sleep 2
logproxy_clear
st=$(fetch ttl4 "http://$RS/v2/lab/ttl/manifests/moving" "${ACCEPT6[@]}")
expect ttl_expired_serves_new "[ '$st' = 200 ] && [ '$(head_of ttl4 Docker-Content-Digest)' = '$new' ] && [ \"\$(sha256sum < '$W/ttl4.b' | cut -d' ' -f1)\" = '${new#sha256:}' ]" \
	"status $st digest '$(head_of ttl4 Docker-Content-Digest)' (want new $new)"
n=$(lp_count '.method=="HEAD" and .path=="/v2/lab/ttl/manifests/moving"')
expect ttl_revalidation_uses_head "[ '$n' -ge 1 ]" "upstream requests: $(jq -c '[.method,.path]' "$LPLOG" | tr '\n' ' ')"
# unchanged tag after the TTL: a HEAD, and no manifest body GET of the tag
sleep 2
logproxy_clear
fetch ttl5 "http://$RS/v2/lab/ttl/manifests/moving" "${ACCEPT6[@]}" > /dev/null
nh=$(lp_count '.method=="HEAD" and .path=="/v2/lab/ttl/manifests/moving"')
ng=$(lp_count '.method=="GET" and .path=="/v2/lab/ttl/manifests/moving"')
expect ttl_unchanged_head_only "[ '$nh' -ge 1 ] && [ '$ng' = 0 ] && [ '$(head_of ttl5 Docker-Content-Digest)' = '$new' ]" \
	"HEAD $nh GET $ng, digest '$(head_of ttl5 Docker-Content-Digest)'"

# ---------------------------------------------------------------- upstream down
logproxy_stop > /dev/null
sleep 2 # past the tag TTL
stale0=$(metric regslim_stale_served_total)
uerr0=$(metric regslim_upstream_errors_total 'upstream="docker.io"')
st=$(fetch stale "http://$RS/v2/lab/ttl/manifests/moving" "${ACCEPT6[@]}")
stale1=$(metric regslim_stale_served_total)
expect stale_if_error_200 "[ '$st' = 200 ] && [ '$(head_of stale Docker-Content-Digest)' = '$new' ]" \
	"status $st digest '$(head_of stale Docker-Content-Digest)' (want $new)"
expect stale_served_metric "gt '${stale1:-0}' '${stale0:-0}'" "regslim_stale_served_total $stale0 -> $stale1"
uerr1=$(metric regslim_upstream_errors_total 'upstream="docker.io"')
expect metrics_upstream_errors_counted "gt '${uerr1:-0}' '${uerr0:-0}'" "regslim_upstream_errors_total{upstream=\"docker.io\"} $uerr0 -> $uerr1"
expect stale_logged "grep -q stale '$RS_LOG'" "no log line mentions stale"
for ref in library/tiny:latest lab/tiny:oci lab/multi:latest library/multi:latest; do
	repo=${ref%:*} k=${ref//[\/:]/_}
	st=$(fetch "down_$k" "http://$RS/v2/$repo/manifests/${DIG[$ref]}" "${ACCEPT6[@]}")
	expect "upstream_down_manifest_by_digest_$k" "[ '$st' = 200 ] && cmp -s '$W/down_$k.b' '$W/d_$k.b'" "status $st"
done
st=$(fetch down_blob "http://$RS/v2/library/tiny/blobs/$l1")
expect upstream_down_blob_from_cache "[ '$st' = 200 ] && [ 'sha256:$(sha_of "$W/down_blob.b")' = '$l1' ]" "status $st"
st=$(fetch down_miss "http://$RS/v2/lab/tiny/manifests/never-seen" "${ACCEPT6[@]}")
c=$(err_code down_miss)
expect upstream_down_uncached_is_5xx_error "[ '${st:0:1}' = 5 ] && [ -n '$c' ]" "status $st code '$c'"

# ---------------------------------------------------------------- SIGTERM during a slow download
logproxy_start "$LP" "$REG" > /dev/null
head -c $((12 << 20)) /dev/urandom > "$W/slow"
sd=$(push_blob lab/slow "$W/slow")
curl -s --max-time 60 --limit-rate 2M -o "$W/slow.b" "http://$RS/v2/lab/slow/blobs/$sd" &
cpid=$!
sleep 1.5
kill -TERM "$RS_PID"
t0=$SECONDS
wait "$cpid"
crc=$?
for ((i = 0; i < 400; i++)); do kill -0 "$RS_PID" 2> /dev/null || break; sleep 0.1; done
if kill -0 "$RS_PID" 2> /dev/null; then
	rc="still running 40 s after SIGTERM"
else
	wait "$RS_PID"
	rc=$?
	rm -f "$REGSLIM_LAB/run/regslim-main.pid"
fi
expect sigterm_slow_download_completes "[ '$crc' = 0 ] && [ 'sha256:$(sha_of "$W/slow.b")' = '$sd' ]" \
	"curl exit $crc, $(stat -c %s "$W/slow.b" 2> /dev/null) of $((12 << 20)) bytes"
expect sigterm_exit_0 "[ '$rc' = 0 ]" "exit status '$rc' ($((SECONDS - t0)) s after SIGTERM)"

finish
