#!/usr/bin/env bash
# test_conformance.sh: the OCI distribution spec's requirements (docs/conformance.md), one check
# each, against regslim as a mirror in front of the lab's docker-registry and as a registry that
# the test pushes to itself (an htpasswd user), with curl (statuses, headers, the error bodies'
# code field) and skopeo (tag listing that follows Link pages). Covered here: issue 14's first
# part: manifests that cannot exist are 404 MANIFEST_UNKNOWN whatever the reference looks like
# (mirror and pushed, never asked upstream); malformed digests 400 DIGEST_INVALID for blobs and
# uploads' ?digest=; only the spec's error codes; Range beyond a blob 416 with
# Content-Range bytes */size (cold, cached and pushed blobs); tags/list pagination (n, last,
# Link rel="next", n=0) for pushed tags, the mirror (docker.io's library/ and the ?ns= form)
# and their merge, also behind a second regslim (an upstream that paginates with Link, which
# the lab's docker-registry does not). Content management: deletes of pushed manifests (by digest,
# with their tags and referrers-index entries), tags and blobs with their statuses, error bodies and
# effects on GET, HEAD, tags/list and referrers; other repositories keep what they hold; the
# mirror's cached content is 405 UNSUPPORTED. The garbage collection is test_gc.sh.
# The referrers API is tests/integration/test_referrers.sh.
#
# Env (set by ctest): REGSLIM_BIN, LAB_PORT_BASE.
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start

W=$REGSLIM_LAB/conf
mkdir -p "$W"
htpasswd -Bbc "$W/htpasswd" alice alicepw 2> /dev/null
htpasswd -Bb "$W/htpasswd" bob bobpw 2> /dev/null
cat > "$W/regslim.json" << EOF
{"auth": {"htpasswd": "$W/htpasswd", "anonymous_pull": true,
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]},
                  {"repository": "*", "users": ["bob"], "actions": ["pull"]}]},
 "push": {"max_blob_bytes": "8MiB"}}
EOF
start_regslim --config "$W/regslim.json"
REG=http://$REG_PLAIN
PUSH=(-u alice:alicepw)
MT_OCI=application/vnd.oci.image.manifest.v1+json

# ---------------------------------------------------------------- helpers
# req KEY METHOD URL [curl args]: the status; headers in $W/KEY.h, body in $W/KEY.b
req() {
	local k=$1 m=$2 u=$3
	shift 3
	local how=(-X "$m")
	[ "$m" != HEAD ] || how=(-I)
	curl -s --max-time 30 "${how[@]}" -D "$W/$k.h" -o "$W/$k.b" -w '%{http_code}' "$@" "$u" 2> /dev/null || true
}
hv() { header_value "$2" < "$W/$1.h"; }
code_of() { jq -r '.errors[0].code // empty' "$W/$1.b" 2> /dev/null; }
# err_is NAME KEY STATUS CODE: the answer KEY was STATUS with registry error CODE in a JSON body
err_is() {
	local name=$1 k=$2 st=$3 c=$4 got
	got="$(head -n 1 "$W/$k.h" | awk '{print $2}') $(code_of "$k") $(hv "$k" Content-Type | cut -d';' -f1)"
	expect_eq "$name" "$got" "$st $c application/json"
}
# status_is NAME KEY STATUS
status_is() { expect_eq "$1" "$(head -n 1 "$W/$2.h" | awk '{print $2}')" "$3"; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
# upload BASE REPO FILE [curl args]: POST then PUT ?digest= (monolithic); prints the PUT's status
upload() {
	local base=$1 repo=$2 f=$3 loc d sep
	shift 3
	d=sha256:$(sha_of "$f")
	loc=$(curl -s --max-time 30 -X POST -D - -o /dev/null "$@" "$base/v2/$repo/blobs/uploads/" | header_value Location)
	[[ $loc == http* ]] || loc=$base$loc
	sep='?'
	[[ $loc != *\?* ]] || sep='&'
	curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
		--data-binary "@$f" "$@" "$loc${sep}digest=$d"
}
# an image of our own: a config, one gzip'd tar layer, an OCI manifest (made once)
mkdir -p "$W/img/root"
echo "conformance $$" > "$W/img/root/hello.txt"
tar -C "$W/img/root" -cf - hello.txt | gzip -n > "$W/img/layer"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"config":{}}' \
	"$(tar -C "$W/img/root" -cf - hello.txt | sha256sum | cut -d' ' -f1)" > "$W/img/config"
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}' \
	"$MT_OCI" "$(sha_of "$W/img/config")" "$(stat -c %s "$W/img/config")" "$(sha_of "$W/img/layer")" \
	"$(stat -c %s "$W/img/layer")" > "$W/img/manifest"
IMG_DIGEST=sha256:$(sha_of "$W/img/manifest")
LAYER=sha256:$(sha_of "$W/img/layer")
# push_image BASE REPO TAG... [-- curl args]: the blobs once, then the manifest under every TAG;
# prints the statuses
push_image() {
	local base=$1 repo=$2 tags=() extra=() t
	shift 2
	while [ $# -gt 0 ] && [ "$1" != -- ]; do tags+=("$1"); shift; done
	[ $# -eq 0 ] || { shift; extra=("$@"); }
	printf '%s %s' "$(upload "$base" "$repo" "$W/img/config" "${extra[@]}")" "$(upload "$base" "$repo" "$W/img/layer" "${extra[@]}")"
	for t in "${tags[@]}"; do
		printf ' %s' "$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $MT_OCI" \
			--data-binary "@$W/img/manifest" "${extra[@]}" "$base/v2/$repo/manifests/$t")"
	done
}
# walk KEY URL: follow Link rel="next" from URL (at most 20 pages); prints every page's tags, one
# per line, and leaves the number of pages in $W/KEY.pages
walk() {
	local k=$1 u=$2 i=0 link
	: > "$W/$k.all"
	while [ -n "$u" ] && [ $i -lt 20 ]; do
		i=$((i + 1))
		req "$k.$i" GET "$RS_URL$u" > /dev/null
		jq -r '.tags[]' "$W/$k.$i.b" >> "$W/$k.all" 2> /dev/null
		link=$(hv "$k.$i" Link)
		u=$(printf %s "$link" | sed -n 's/^<\([^>]*\)>; *rel="next"$/\1/p')
	done
	echo $i > "$W/$k.pages"
	cat "$W/$k.all"
}

# ---------------------------------------------------------------- setup: upstream and pushed images
# upstream (docker-registry, through regslim's docker.io mirror: "conftags" is library/conftags)
st=$(push_image "$REG" library/conftags u5 u1 m u3)
expect_eq setup_upstream_image "$st" "201 201 201 201 201 201"
# regslim's own registry: conf/app (pushed only) and conftags (pushed tags beside the upstream's)
st=$(push_image "$RS_URL" conf/app e c a d b -- "${PUSH[@]}")
expect_eq setup_pushed_image "$st" "201 201 201 201 201 201 201"
st=$(push_image "$RS_URL" conftags p4 m p2 -- "${PUSH[@]}")
expect_eq setup_pushed_beside_upstream "$st" "201 201 201 201 201"

# ---------------------------------------------------------------- base
# "When a 200 OK or 401 Unauthorized response is returned, the Docker-Distribution-API-Version
# header SHOULD be set to registry/2.0" (anonymous: 401, the client's cue to authenticate)
st=$(req base GET "$RS_URL/v2/" "${PUSH[@]}")
expect_eq base_200_api_version "$st $(hv base Docker-Distribution-API-Version)" "200 registry/2.0"
st=$(req base_anon GET "$RS_URL/v2/")
expect_eq base_401_api_version_challenge "$st $(hv base_anon Docker-Distribution-API-Version) $(hv base_anon WWW-Authenticate | cut -d' ' -f1)" \
	"401 registry/2.0 Bearer"

# ---------------------------------------------------------------- pull: manifests
for where in mirror:lab/tiny:latest pushed:conf/app:a; do
	kind=${where%%:*} rest=${where#*:} repo=${rest%:*} tag=${rest##*:}
	st=$(req "m_$kind" GET "$RS_URL/v2/$repo/manifests/$tag" "${RS_ACCEPT_ALL[@]}")
	d=$(hv "m_$kind" Docker-Content-Digest)
	expect_eq "pull_manifest_by_tag_200_${kind}" "$st $d" "200 sha256:$(sha_of "$W/m_$kind.b")"
	expect_eq "pull_manifest_content_type_is_media_type_${kind}" "$(hv "m_$kind" Content-Type)" \
		"$(jq -r .mediaType "$W/m_$kind.b")"
	st=$(req "md_$kind" GET "$RS_URL/v2/$repo/manifests/$d" "${RS_ACCEPT_ALL[@]}")
	expect "pull_manifest_by_digest_200_${kind}" "[ '$st' = 200 ] && cmp -s '$W/md_$kind.b' '$W/m_$kind.b'" "status $st"
	st=$(req "mh_$kind" HEAD "$RS_URL/v2/$repo/manifests/$tag" "${RS_ACCEPT_ALL[@]}")
	expect_eq "head_manifest_200_digest_length_${kind}" "$st $(hv "mh_$kind" Docker-Content-Digest) $(hv "mh_$kind" Content-Length)" \
		"200 $d $(stat -c %s "$W/m_$kind.b")"
	# a manifest that is not there: 404 MANIFEST_UNKNOWN whatever the reference looks like
	req "miss_$kind" GET "$RS_URL/v2/$repo/manifests/no-such-tag" "${RS_ACCEPT_ALL[@]}" > /dev/null
	err_is "manifest_unknown_tag_404_${kind}" "miss_$kind" 404 MANIFEST_UNKNOWN
	req "missd_$kind" GET "$RS_URL/v2/$repo/manifests/sha256:$(printf 'none %s' "$kind" | sha256sum | cut -d' ' -f1)" \
		"${RS_ACCEPT_ALL[@]}" > /dev/null
	err_is "manifest_unknown_digest_404_${kind}" "missd_$kind" 404 MANIFEST_UNKNOWN
	req "inv_$kind" GET "$RS_URL/v2/$repo/manifests/.INVALID_MANIFEST_NAME" "${RS_ACCEPT_ALL[@]}" > /dev/null
	err_is "manifest_invalid_reference_404_${kind}" "inv_$kind" 404 MANIFEST_UNKNOWN
	st=$(req "invh_$kind" HEAD "$RS_URL/v2/$repo/manifests/.INVALID_MANIFEST_NAME" "${RS_ACCEPT_ALL[@]}")
	expect_eq "manifest_invalid_reference_head_404_${kind}" "$st" 404
	req "invd_$kind" GET "$RS_URL/v2/$repo/manifests/sha256:zz" "${RS_ACCEPT_ALL[@]}" > /dev/null
	err_is "manifest_malformed_digest_404_${kind}" "invd_$kind" 404 MANIFEST_UNKNOWN
	long=$(printf 'x%.0s' $(seq 1 129))
	req "invl_$kind" GET "$RS_URL/v2/$repo/manifests/$long" "${RS_ACCEPT_ALL[@]}" > /dev/null
	err_is "manifest_tag_over_128_404_${kind}" "invl_$kind" 404 MANIFEST_UNKNOWN
done
n=$(grep -c 'INVALID_MANIFEST_NAME\|manifests/sha256:zz\|manifests/xxxxxxxx' "$REG_LOG" 2> /dev/null)
expect_eq manifest_impossible_references_not_asked_upstream "${n:-0}" 0

# ---------------------------------------------------------------- pull: blobs
TINY_LAYER=$(jq -r '.layers[0].digest' "$W/m_mirror.b")
for where in mirror:lab/tiny:$TINY_LAYER pushed:conf/app:$LAYER; do
	kind=${where%%:*} rest=${where#*:} repo=${rest%%:*} d=${rest#*:}
	st=$(req "b_$kind" GET "$RS_URL/v2/$repo/blobs/$d")
	expect_eq "pull_blob_200_digest_matches_body_${kind}" "$st $(hv "b_$kind" Docker-Content-Digest)" "200 sha256:$(sha_of "$W/b_$kind.b")"
	expect_eq "pull_blob_is_the_digest_${kind}" "sha256:$(sha_of "$W/b_$kind.b")" "$d"
	st=$(req "bh_$kind" HEAD "$RS_URL/v2/$repo/blobs/$d")
	expect_eq "head_blob_200_digest_length_${kind}" "$st $(hv "bh_$kind" Docker-Content-Digest) $(hv "bh_$kind" Content-Length)" \
		"200 $d $(stat -c %s "$W/b_$kind.b")"
	req "bm_$kind" GET "$RS_URL/v2/$repo/blobs/sha256:$(printf 'no blob %s' "$kind" | sha256sum | cut -d' ' -f1)" > /dev/null
	err_is "blob_unknown_404_${kind}" "bm_$kind" 404 BLOB_UNKNOWN
	st=$(req "bmh_$kind" HEAD "$RS_URL/v2/$repo/blobs/sha256:$(printf 'no blob %s' "$kind" | sha256sum | cut -d' ' -f1)")
	expect_eq "blob_unknown_head_404_${kind}" "$st" 404
	req "bz_$kind" GET "$RS_URL/v2/$repo/blobs/sha256:zz" > /dev/null
	err_is "blob_malformed_digest_400_${kind}" "bz_$kind" 400 DIGEST_INVALID
	req "bs_$kind" GET "$RS_URL/v2/$repo/blobs/sha256:$(printf '%063d' 0)" > /dev/null
	err_is "blob_short_digest_400_${kind}" "bs_$kind" 400 DIGEST_INVALID
done

# ---------------------------------------------------------------- pull: Range (RFC 9110) and 416
# range_ok NAME KEY FILE FIRST LAST: a 206 with exactly those bytes and their Content-Range
range_ok() {
	local name=$1 k=$2 f=$3 a=$4 b=$5
	tail -c +$((a + 1)) "$f" | head -c $((b - a + 1)) > "$W/$k.want"
	expect "$name" "[ \"\$(head -n 1 '$W/$k.h' | awk '{print \$2}')\" = 206 ] && cmp -s '$W/$k.b' '$W/$k.want' && [ \"\$(hv $k Content-Range)\" = 'bytes $a-$b/$(stat -c %s "$f")' ]" \
		"$(head -n 1 "$W/$k.h") Content-Range '$(hv "$k" Content-Range)'"
}
# range_416 NAME KEY SIZE: 416, Content-Range bytes */SIZE, and no JSON code outside the spec's
range_416() {
	local c
	c=$(code_of "$2")
	expect_eq "$1" "$(head -n 1 "$W/$2.h" | awk '{print $2}') $(hv "$2" Content-Range) ${c:-no-code}" "416 bytes */$3 no-code"
}
# a cold blob (never fetched: streamed from the upstream), then cached, then a pushed one
# (two cold blobs: a request on a cold blob starts its download, which makes it cached)
head -c 200000 /dev/urandom > "$W/cold"
head -c 100000 /dev/urandom > "$W/cold2"
expect_eq setup_cold_blobs "$(upload "$REG" lab/rng "$W/cold") $(upload "$REG" lab/rng "$W/cold2")" "201 201"
COLD=sha256:$(sha_of "$W/cold") COLD2=sha256:$(sha_of "$W/cold2")
req r_cold GET "$RS_URL/v2/lab/rng/blobs/$COLD" -H "Range: bytes=100-199" > /dev/null
range_ok range_cold_206 r_cold "$W/cold" 100 199
req r416_cold GET "$RS_URL/v2/lab/rng/blobs/$COLD2" -H "Range: bytes=100000-" > /dev/null
range_416 range_cold_beyond_416 r416_cold 100000
req r_full GET "$RS_URL/v2/lab/rng/blobs/$COLD" > /dev/null
expect range_cold_then_full_get "cmp -s '$W/r_full.b' '$W/cold'" "full GET differs"
req r_hit GET "$RS_URL/v2/lab/rng/blobs/$COLD" -H "Range: bytes=-10" > /dev/null
range_ok range_cached_suffix_206 r_hit "$W/cold" 199990 199999
req r416_hit GET "$RS_URL/v2/lab/rng/blobs/$COLD" -H "Range: bytes=300000-300100" > /dev/null
range_416 range_cached_beyond_416 r416_hit 200000
lsize=$(stat -c %s "$W/img/layer")
req r_push GET "$RS_URL/v2/conf/app/blobs/$LAYER" -H "Range: bytes=0-9" > /dev/null
range_ok range_pushed_206 r_push "$W/img/layer" 0 9
req r416_push GET "$RS_URL/v2/conf/app/blobs/$LAYER" -H "Range: bytes=$lsize-" > /dev/null
range_416 range_pushed_beyond_416 r416_push "$lsize"
expect_eq range_416_body_is_plain_text "$(hv r416_push Content-Type | cut -d';' -f1)" text/plain

# ---------------------------------------------------------------- push: the write side's codes
st=$(req up_start POST "$RS_URL/v2/conf/app/blobs/uploads/" "${PUSH[@]}")
loc=$(hv up_start Location)
expect "upload_start_202_location_uuid" "[ '$st' = 202 ] && [[ '$loc' =~ /v2/conf/app/blobs/uploads/[0-9a-f-]{36}$ ]]" "status $st Location '$loc'"
req up_zz PUT "$RS_URL$loc?digest=sha256:zz" "${PUSH[@]}" -H 'Content-Type: application/octet-stream' --data-binary x > /dev/null
err_is upload_put_malformed_digest_400 up_zz 400 DIGEST_INVALID
req up_short POST "$RS_URL/v2/conf/app/blobs/uploads/?digest=sha256:$(printf '%063d' 0)" "${PUSH[@]}" \
	-H 'Content-Type: application/octet-stream' --data-binary x > /dev/null
err_is upload_post_short_digest_400 up_short 400 DIGEST_INVALID
req put_badtag PUT "$RS_URL/v2/conf/app/manifests/.INVALID_MANIFEST_NAME" "${PUSH[@]}" -H "Content-Type: $MT_OCI" \
	--data-binary "@$W/img/manifest" > /dev/null
err_is manifest_put_invalid_tag_400_manifest_invalid put_badtag 400 MANIFEST_INVALID
req put_badd PUT "$RS_URL/v2/conf/app/manifests/sha256:totallywrong" "${PUSH[@]}" -H "Content-Type: $MT_OCI" \
	--data-binary "@$W/img/manifest" > /dev/null
err_is manifest_put_malformed_digest_400 put_badd 400 DIGEST_INVALID
st=$(req put_ok PUT "$RS_URL/v2/conf/app/manifests/$IMG_DIGEST" "${PUSH[@]}" -H "Content-Type: $MT_OCI" --data-binary "@$W/img/manifest")
expect_eq manifest_put_by_digest_201_location_digest "$st $(hv put_ok Location) $(hv put_ok Docker-Content-Digest)" \
	"201 /v2/conf/app/manifests/$IMG_DIGEST $IMG_DIGEST"

# ---------------------------------------------------------------- error codes: only the spec's
req ep_unknown GET "$RS_URL/v2/conf/app/nothing/here" > /dev/null
err_is unknown_endpoint_404_spec_code ep_unknown 404 UNSUPPORTED
SPEC_CODES=" BLOB_UNKNOWN BLOB_UPLOAD_INVALID BLOB_UPLOAD_UNKNOWN DIGEST_INVALID MANIFEST_BLOB_UNKNOWN MANIFEST_INVALID MANIFEST_UNKNOWN NAME_INVALID NAME_UNKNOWN SIZE_INVALID UNAUTHORIZED DENIED UNSUPPORTED TOOMANYREQUESTS "
bad=
for f in "$W"/*.h; do
	k=$(basename "$f" .h)
	s=$(head -n 1 "$f" | awk '{print $2}')
	c=$(code_of "$k")
	[[ $s == 4* ]] && [ -n "$c" ] && [[ $SPEC_CODES != *" $c "* ]] && bad="$bad $k:$s:$c"
done
expect_eq every_4xx_code_of_this_test_is_a_spec_code "${bad:-none}" none

# ---------------------------------------------------------------- content discovery: tags/list
# pushed only (conf/app: e c a d b)
st=$(req t_all GET "$RS_URL/v2/conf/app/tags/list")
expect_eq tags_pushed_lexical_order "$st $(jq -c . "$W/t_all.b") $(hv t_all Link)" '200 {"name":"conf/app","tags":["a","b","c","d","e"]} '
st=$(req t_n2 GET "$RS_URL/v2/conf/app/tags/list?n=2")
expect_eq tags_pushed_n2_link "$st $(jq -c .tags "$W/t_n2.b") $(hv t_n2 Link)" \
	'200 ["a","b"] </v2/conf/app/tags/list?n=2&last=b>; rel="next"'
st=$(req t_last GET "$RS_URL/v2/conf/app/tags/list?n=2&last=b")
expect_eq tags_pushed_after_last "$st $(jq -c .tags "$W/t_last.b") $(hv t_last Link)" \
	'200 ["c","d"] </v2/conf/app/tags/list?n=2&last=d>; rel="next"'
st=$(req t_end GET "$RS_URL/v2/conf/app/tags/list?n=2&last=d")
expect_eq tags_pushed_last_page_no_link "$st $(jq -c .tags "$W/t_end.b") link:$(hv t_end Link)" '200 ["e"] link:'
st=$(req t_lastonly GET "$RS_URL/v2/conf/app/tags/list?last=c")
expect_eq tags_last_without_n "$st $(jq -c .tags "$W/t_lastonly.b") link:$(hv t_lastonly Link)" '200 ["d","e"] link:'
st=$(req t_lastx GET "$RS_URL/v2/conf/app/tags/list?n=2&last=bb")
expect_eq tags_last_not_a_tag_of_the_list "$st $(jq -c .tags "$W/t_lastx.b")" '200 ["c","d"]'
st=$(req t_n0 GET "$RS_URL/v2/conf/app/tags/list?n=0")
expect_eq tags_n0_empty_no_link "$st $(jq -c . "$W/t_n0.b") link:$(hv t_n0 Link)" '200 {"name":"conf/app","tags":[]} link:'
st=$(req t_n9 GET "$RS_URL/v2/conf/app/tags/list?n=9")
expect_eq tags_n_over_count_all_no_link "$st $(jq -c .tags "$W/t_n9.b") link:$(hv t_n9 Link)" '200 ["a","b","c","d","e"] link:'
req t_nbad GET "$RS_URL/v2/conf/app/tags/list?n=abc" > /dev/null
err_is tags_n_not_a_number_400 t_nbad 400 UNSUPPORTED
req t_nneg GET "$RS_URL/v2/conf/app/tags/list?n=-1" > /dev/null
err_is tags_n_negative_400 t_nneg 400 UNSUPPORTED
req t_unknown GET "$RS_URL/v2/conf/nothing/tags/list" > /dev/null
err_is tags_unknown_repository_404 t_unknown 404 NAME_UNKNOWN
expect_eq tags_pushed_walk_every_tag_once "$(walk wp "/v2/conf/app/tags/list?n=2" | tr '\n' ' ')$(cat "$W/wp.pages")" "a b c d e 3"

# the mirror (library/conftags upstream: u5 u1 m u3, unsorted there) and its merge with the
# pushed p4 m p2 under the client's name "conftags"
st=$(req up_direct GET "$REG/v2/library/conftags/tags/list")
expect_eq setup_upstream_tags "$st $(jq -c '.tags|sort' "$W/up_direct.b")" '200 ["m","u1","u3","u5"]'
st=$(req tm_all GET "$RS_URL/v2/conftags/tags/list")
expect_eq tags_merged_sorted_unique "$st $(jq -c . "$W/tm_all.b")" '200 {"name":"conftags","tags":["m","p2","p4","u1","u3","u5"]}'
st=$(req tm_n2 GET "$RS_URL/v2/conftags/tags/list?n=2&last=p2")
expect_eq tags_merged_page_link_client_name "$st $(jq -c .tags "$W/tm_n2.b") $(hv tm_n2 Link)" \
	'200 ["p4","u1"] </v2/conftags/tags/list?n=2&last=u1>; rel="next"'
expect_eq tags_merged_walk_every_tag_once "$(walk wm "/v2/conftags/tags/list?n=2" | tr '\n' ' ')$(cat "$W/wm.pages")" \
	"m p2 p4 u1 u3 u5 3"
# mirror only: lab/tiny (upstream tags only), library/ mapping and the ?ns= form
st=$(req tu_all GET "$RS_URL/v2/lab/tiny/tags/list")
first=$(jq -r '.tags[0]' "$W/tu_all.b")
expect_eq tags_mirror_sorted "$st $(jq -c .tags "$W/tu_all.b")" "200 $(curl -s --max-time 30 "$REG/v2/lab/tiny/tags/list" | jq -c '.tags|sort')"
st=$(req tu_n1 GET "$RS_URL/v2/lab/tiny/tags/list?n=1")
expect_eq tags_mirror_n1_link "$st $(jq -c .tags "$W/tu_n1.b") $(hv tu_n1 Link)" \
	"200 [\"$first\"] </v2/lab/tiny/tags/list?n=1&last=$first>; rel=\"next\""
expect_eq tags_mirror_walk_every_tag_once "$(walk wu "/v2/lab/tiny/tags/list?n=1" | tr '\n' ' ')" "$(jq -r '.tags[]' "$W/tu_all.b" | tr '\n' ' ')"
st=$(req tns GET "$RS_URL/v2/library/conftags/tags/list?ns=docker.io&n=3")
expect_eq tags_ns_form_link_keeps_ns "$st $(jq -c . "$W/tns.b") $(hv tns Link)" \
	'200 {"name":"library/conftags","tags":["m","u1","u3"]} </v2/library/conftags/tags/list?n=3&last=u3&ns=docker.io>; rel="next"'
expect_eq tags_ns_walk_every_tag_once "$(walk wns "/v2/library/conftags/tags/list?ns=docker.io&n=3" | tr '\n' ' ')" "m u1 u3 u5 "
st=$(req tlib GET "$RS_URL/v2/conftags/tags/list?n=1&last=u3")
expect_eq tags_library_name_never_leaks "$st $(jq -c . "$W/tlib.b") link:$(hv tlib Link)" '200 {"name":"conftags","tags":["u5"]} link:'

# an upstream that paginates (Debian's docker-registry ignores n and last): a second regslim, B,
# mirrors this one (upstream "inner", with alice's credentials) and holds pushed tags of its own
printf 'alicepw\n' > "$W/alice.pw"
cat > "$W/regslim-b.json" << EOF
{"auth": {"htpasswd": "$W/htpasswd", "anonymous_pull": true,
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]},
 "upstreams": [{"name": "inner", "url": "$RS_URL", "default": true, "tag_ttl_s": 0,
                "auth": {"username": "alice", "password_file": "$W/alice.pw"}}]}
EOF
B_PORT=$((LAB_PORT_BASE + 60))
if regslim_spawn b "$B_PORT" "" "$REGSLIM_LAB/rs-b" --config "$W/regslim-b.json" 2> "$W/b.err"; then
	B=http://127.0.0.1:$B_PORT
	st=$(push_image "$B" inner/conf/app z bb c -- "${PUSH[@]}")
	expect_eq setup_chain_pushed "$st" "201 201 201 201 201"
	st=$(req ch_n2 GET "$B/v2/inner/conftags/tags/list?n=2")
	expect_eq tags_chain_upstream_link_rewritten "$st $(jq -c . "$W/ch_n2.b") $(hv ch_n2 Link)" \
		'200 {"name":"inner/conftags","tags":["m","p2"]} </v2/inner/conftags/tags/list?n=2&last=p2>; rel="next"'
	RS_URL_SAVED=$RS_URL RS_URL=$B
	expect_eq tags_chain_walk_every_tag_once "$(walk chw "/v2/inner/conftags/tags/list?n=2" | tr '\n' ' ')$(cat "$W/chw.pages")" \
		"m p2 p4 u1 u3 u5 3"
	# pushed bb, c, z beside the upstream's a..e, which arrive 2 by 2 with a Link each
	expect_eq tags_chain_merged_walk_every_tag_once "$(walk chm "/v2/inner/conf/app/tags/list?n=2" | tr '\n' ' ')$(cat "$W/chm.pages")" \
		"a b bb c d e z 4"
	st=$(req ch_all GET "$B/v2/inner/conf/app/tags/list?n=100")
	expect_eq tags_chain_merged_one_page "$st $(jq -c .tags "$W/ch_all.b") link:$(hv ch_all Link)" '200 ["a","b","bb","c","d","e","z"] link:'
	RS_URL=$RS_URL_SAVED
else
	fail chain_regslim_start "$(head -n 3 "$W/b.err" | tr '\n' ' ')"
fi

# skopeo lists every tag, following the Link pages itself
SK=(timeout 120 skopeo)
out=$("${SK[@]}" list-tags --tls-verify=false "docker://127.0.0.1:$RS_PORT/conftags" 2> "$W/sk.err")
expect_eq skopeo_list_tags_merged "$(echo "$out" | jq -c .Tags 2> /dev/null)" '["m","p2","p4","u1","u3","u5"]'
out=$("${SK[@]}" list-tags --tls-verify=false "docker://127.0.0.1:$RS_PORT/conf/app" 2>> "$W/sk.err")
expect_eq skopeo_list_tags_pushed "$(echo "$out" | jq -c .Tags 2> /dev/null)" '["a","b","c","d","e"]'
check skopeo_inspect_pushed_tag "${SK[@]}" inspect --raw --tls-verify=false "docker://127.0.0.1:$RS_PORT/conf/app:c"

# ---------------------------------------------------------------- content management
# (distribution-spec v1.1 "Content Management": deletes of what regslim itself holds; what the
# mirror only caches is read-only: 405 UNSUPPORTED naming the upstream)
tags_of() { req "$1" GET "$RS_URL/v2/$2/tags/list" > /dev/null; jq -c .tags "$W/$1.b" 2> /dev/null; }
# deleting needs push: anonymous 401, a wrong password 401, a pull-only user 403, the push user 202
st=$(req del_anon DELETE "$RS_URL/v2/conf/app/manifests/e")
expect_eq delete_anonymous_401 "$st $(code_of del_anon)" "401 UNAUTHORIZED"
st=$(req del_badpw DELETE "$RS_URL/v2/conf/app/manifests/e" -u alice:wrong)
expect_eq delete_wrong_password_401 "$st $(code_of del_badpw)" "401 UNAUTHORIZED"
req del_pullonly DELETE "$RS_URL/v2/conf/app/manifests/e" -u bob:bobpw > /dev/null
err_is delete_pull_only_user_403 del_pullonly 403 DENIED
# a tag: 202, the tag only; the manifest stays under its digest and its other tags
st=$(req del_t DELETE "$RS_URL/v2/conf/app/manifests/e" "${PUSH[@]}")
expect_eq delete_tag_202 "$st" 202
req del_t_get GET "$RS_URL/v2/conf/app/manifests/e" "${RS_ACCEPT_ALL[@]}" > /dev/null
err_is delete_tag_then_get_404 del_t_get 404 MANIFEST_UNKNOWN
st=$(req del_t_head HEAD "$RS_URL/v2/conf/app/manifests/e" "${RS_ACCEPT_ALL[@]}")
expect_eq delete_tag_then_head_404 "$st" 404
expect_eq delete_tag_gone_from_tags_list "$(tags_of del_t_tl conf/app)" '["a","b","c","d"]'
st=$(req del_t_dg GET "$RS_URL/v2/conf/app/manifests/$IMG_DIGEST" "${RS_ACCEPT_ALL[@]}")
expect_eq delete_tag_keeps_manifest_by_digest "$st" 200
req del_t_again DELETE "$RS_URL/v2/conf/app/manifests/e" "${PUSH[@]}" > /dev/null
err_is delete_tag_unknown_404 del_t_again 404 MANIFEST_UNKNOWN
req del_t_bad DELETE "$RS_URL/v2/conf/app/manifests/.bad" "${PUSH[@]}" > /dev/null
err_is delete_invalid_tag_404 del_t_bad 404 MANIFEST_UNKNOWN
# a pushed tag that shadows the upstream's: deleting it uncovers the upstream's tag m again
st=$(req del_shadow DELETE "$RS_URL/v2/conftags/manifests/m" "${PUSH[@]}")
expect_eq delete_shadowing_tag_202 "$st" 202
st=$(req del_shadow_get GET "$RS_URL/v2/conftags/manifests/m" "${RS_ACCEPT_ALL[@]}")
expect_eq delete_shadowing_tag_upstream_served "$st $(hv del_shadow_get Docker-Content-Digest)" "200 $IMG_DIGEST"

# a referrer of the image (an artifact over the empty config), pushed to conf/app
printf '{}' > "$W/empty"
EMPTY=sha256:$(sha_of "$W/empty")
printf '{"schemaVersion":2,"mediaType":"%s","artifactType":"application/vnd.example.sig","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2}],"subject":{"mediaType":"%s","digest":"%s","size":%d}}' \
	"$MT_OCI" "$EMPTY" "$EMPTY" "$MT_OCI" "$IMG_DIGEST" "$(stat -c %s "$W/img/manifest")" > "$W/sig"
SIG=sha256:$(sha_of "$W/sig")
st="$(upload "$RS_URL" conf/app "$W/empty" "${PUSH[@]}") $(req sig_put PUT "$RS_URL/v2/conf/app/manifests/$SIG" \
	"${PUSH[@]}" -H "Content-Type: $MT_OCI" --data-binary "@$W/sig")"
expect_eq setup_referrer_pushed "$st $(hv sig_put OCI-Subject)" "201 201 $IMG_DIGEST"
req refs_before GET "$RS_URL/v2/conf/app/referrers/$IMG_DIGEST" > /dev/null
expect_eq setup_referrer_listed "$(jq -c '[.manifests[].digest]' "$W/refs_before.b")" "[\"$SIG\"]"
st=$(req del_sig DELETE "$RS_URL/v2/conf/app/manifests/$SIG" "${PUSH[@]}")
expect_eq delete_referrer_202 "$st" 202
st=$(req refs_after GET "$RS_URL/v2/conf/app/referrers/$IMG_DIGEST")
expect_eq delete_referrer_gone_from_referrers "$st $(jq -c '.manifests' "$W/refs_after.b")" "200 []"

# a manifest by digest: 202; every tag of conf/app pointing at it goes; conf/keep, which holds
# the same digest, keeps it
st=$(push_image "$RS_URL" conf/keep k -- "${PUSH[@]}")
expect_eq setup_second_repository "$st" "201 201 201"
st=$(req del_m DELETE "$RS_URL/v2/conf/app/manifests/$IMG_DIGEST" "${PUSH[@]}")
expect_eq delete_manifest_202 "$st $(head -c 1 "$W/del_m.b" | wc -c)" "202 0"
req del_m_get GET "$RS_URL/v2/conf/app/manifests/$IMG_DIGEST" "${RS_ACCEPT_ALL[@]}" > /dev/null
err_is delete_manifest_then_get_404 del_m_get 404 MANIFEST_UNKNOWN
st=$(req del_m_head HEAD "$RS_URL/v2/conf/app/manifests/$IMG_DIGEST" "${RS_ACCEPT_ALL[@]}")
expect_eq delete_manifest_then_head_404 "$st" 404
req del_m_tag GET "$RS_URL/v2/conf/app/manifests/a" "${RS_ACCEPT_ALL[@]}" > /dev/null
err_is delete_manifest_its_tags_404 del_m_tag 404 MANIFEST_UNKNOWN
# "Assuming a repository is found, this request MUST return a 200 OK response code. The list of
# tags MAY be empty": conf/app still holds its blobs
st=$(req del_m_tl GET "$RS_URL/v2/conf/app/tags/list")
expect_eq delete_manifest_tags_list_empty "$st $(jq -c . "$W/del_m_tl.b")" '200 {"name":"conf/app","tags":[]}'
st=$(req del_m_other GET "$RS_URL/v2/conf/keep/manifests/k" "${RS_ACCEPT_ALL[@]}")
expect_eq delete_manifest_other_repository_keeps_it "$st $(hv del_m_other Docker-Content-Digest)" "200 $IMG_DIGEST"
req del_m_again DELETE "$RS_URL/v2/conf/app/manifests/$IMG_DIGEST" "${PUSH[@]}" > /dev/null
err_is delete_manifest_unknown_404 del_m_again 404 MANIFEST_UNKNOWN
req del_m_bad DELETE "$RS_URL/v2/conf/app/manifests/sha256:1234" "${PUSH[@]}" > /dev/null
err_is delete_manifest_bad_digest_400 del_m_bad 400 DIGEST_INVALID

# a blob: 202, the repository's link goes; conf/keep still serves it
st=$(req del_b DELETE "$RS_URL/v2/conf/app/blobs/$LAYER" "${PUSH[@]}")
expect_eq delete_blob_202 "$st" 202
req del_b_get GET "$RS_URL/v2/conf/app/blobs/$LAYER" > /dev/null
err_is delete_blob_then_get_404 del_b_get 404 BLOB_UNKNOWN
st=$(req del_b_head HEAD "$RS_URL/v2/conf/app/blobs/$LAYER")
expect_eq delete_blob_then_head_404 "$st" 404
st=$(req del_b_other GET "$RS_URL/v2/conf/keep/blobs/$LAYER")
expect "delete_blob_other_repository_keeps_it" "[ '$st' = 200 ] && cmp -s '$W/del_b_other.b' '$W/img/layer'" "status $st"
req del_b_again DELETE "$RS_URL/v2/conf/app/blobs/$LAYER" "${PUSH[@]}" > /dev/null
err_is delete_blob_unknown_404 del_b_again 404 BLOB_UNKNOWN
req del_b_bad DELETE "$RS_URL/v2/conf/app/blobs/sha256:zz" "${PUSH[@]}" > /dev/null
err_is delete_blob_bad_digest_400 del_b_bad 400 DIGEST_INVALID
# every tag, blob and manifest of a repository gone: it is unknown
for o in "blobs/sha256:$(sha_of "$W/img/config")" "blobs/$EMPTY"; do
	req del_rest DELETE "$RS_URL/v2/conf/app/$o" "${PUSH[@]}" > /dev/null
done
req del_all_tl GET "$RS_URL/v2/conf/app/tags/list" > /dev/null
err_is delete_everything_tags_list_404 del_all_tl 404 NAME_UNKNOWN

# what the mirror caches is read-only: 405 UNSUPPORTED saying so; unknown there: 404
st=$(push_image "$REG" library/confcache x1)
expect_eq setup_upstream_cached_image "$st" "201 201 201"
req cc_m GET "$RS_URL/v2/confcache/manifests/x1" "${RS_ACCEPT_ALL[@]}" > /dev/null
req cc_b GET "$RS_URL/v2/confcache/blobs/$LAYER" > /dev/null
for what in "tag:manifests/x1" "manifest:manifests/$IMG_DIGEST" "blob:blobs/$LAYER"; do
	req "cc_del_${what%%:*}" DELETE "$RS_URL/v2/confcache/${what#*:}" "${PUSH[@]}" > /dev/null
	err_is "delete_cached_${what%%:*}_405" "cc_del_${what%%:*}" 405 UNSUPPORTED
	expect "delete_cached_${what%%:*}_message_names_upstream" \
		"jq -r '.errors[0].message' '$W/cc_del_${what%%:*}.b' | grep -q 'cache of docker.io.*delete it at the upstream'" \
		"$(cat "$W/cc_del_${what%%:*}.b")"
done
st=$(req cc_after GET "$RS_URL/v2/confcache/manifests/x1" "${RS_ACCEPT_ALL[@]}")
expect_eq delete_cached_refused_still_served "$st" 200
req cc_unknown DELETE "$RS_URL/v2/confcache/manifests/no-such-tag" "${PUSH[@]}" > /dev/null
err_is delete_mirror_unknown_tag_404 cc_unknown 404 MANIFEST_UNKNOWN

finish
