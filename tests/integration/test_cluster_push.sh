#!/usr/bin/env bash
# test_cluster_push.sh: pushes to a cluster (issue 13): three regslim replicas on one bucket of the
# lab's Ceph RGW (tests/lab/s3.sh) and one Redis (tests/lab/redis.sh), behind the lab's haproxy
# (tests/lab/haproxy.sh: round robin, no stickiness). Upload sessions are shared through Redis
# (state) and the bucket (parts under P uploads/<uuid>/), so every request of a chunked upload may
# land on another replica:
#  - a curl-driven chunked upload whose POST, PATCHes, status and PUT each go to another replica
#    directly succeeds and the blob hashes to its digest; its parts are in the bucket meanwhile and
#    gone after; an out-of-order PATCH is 416 with the session's Range; of two PATCHes at one offset
#    on two replicas at once exactly one is appended; a 48 MiB upload keeps the committing
#    replica's memory flat;
#  - a wrong digest on the final PUT leaves no object and no parts; a cancelled session and an
#    expired one (push.upload_idle_timeout_s, swept by a maintenance pass) leave no parts;
#  - skopeo pushes the lab's tiny image through haproxy (its upload requests served by more than
#    one replica) and the image pulled back through haproxy unpacks with umoci to the original;
#  - with Redis down, uploads are the replica's own again: another replica answers 404
#    BLOB_UPLOAD_UNKNOWN, the replica that started it goes on;
#  - deletes and garbage collection of pushed content on s3: a tag delete, a blob delete, a manifest
#    delete (its tags go), then a sweep after push.gc_grace_s removes the deleted image's objects
#    and the never-referenced blobs while an image another repository holds stays and pulls.
# One line per check, then "N passed, N failed".
#
# Env (as ctest sets it): REGSLIM_BIN, S3TOOL_BIN (default: beside REGSLIM_BIN's build tree),
# LAB_PORT_BASE (registry BASE+0, RGW BASE+20..39, Redis BASE+40, haproxy BASE+41, replicas
# BASE+51..53).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-400}
# shellcheck source=lib.sh
. "$HERE/lib.sh"

lab_setup_s3 cpush
lab_on_exit "timeout 30 bash '$RS_LAB_DIR/haproxy.sh' stop"
lab_on_exit "timeout 30 bash '$RS_LAB_DIR/redis.sh' stop"
lab_on_exit "timeout 60 bash '$RS_LAB_DIR/s3.sh' stop"

redis_lab() { timeout 30 bash "$RS_LAB_DIR/redis.sh" "$@"; }

if ! timeout 300 bash "$RS_LAB_DIR/s3.sh" start > "$LOGS/s3-start.log" 2>&1; then
	fail s3_lab_start "$(tail -n 5 "$LOGS/s3-start.log" | tr '\n' ' ')"
	finish
fi
eval "$(bash "$RS_LAB_DIR/s3.sh" env)"
export S3_ENDPOINT S3_REGION S3_BUCKET S3_ACCESS_KEY S3_SECRET_KEY
if ! redis_lab start > "$LOGS/redis-start.log" 2>&1; then
	fail redis_lab_start "$(tail -n 5 "$LOGS/redis-start.log" | tr '\n' ' ')"
	finish
fi
eval "$(bash "$RS_LAB_DIR/redis.sh" env)"
upstream_start
pass lab_start

P=cp/ # store.s3.prefix of this test
IDLE=3
GRACE=4
htpasswd -Bbc "$W/htpasswd" alice alicepw 2> /dev/null
head -c 48 /dev/urandom | base64 > "$W/token.key" # one token key for all replicas
cat > "$W/regslim.json" << EOF
{"auth": {"htpasswd": "$W/htpasswd", "token_secret_file": "$W/token.key", "anonymous_pull": true,
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]},
 "push": {"upload_idle_timeout_s": $IDLE, "gc_grace_s": $GRACE, "gc_interval_s": 0},
 "cluster": {"redis": "redis://127.0.0.1:$REDIS_PORT/2", "timeout_ms": 300},
 "store": {"driver": "s3", "s3": {"endpoint": "$S3_ENDPOINT", "region": "$S3_REGION", "bucket": "$S3_BUCKET",
                                  "access_key_env": "S3_ACCESS_KEY", "secret_key_env": "S3_SECRET_KEY",
                                  "prefix": "$P"}}}
EOF
R=()
for r in 1 2 3; do
	p=$((LAB_PORT_BASE + 50 + r))
	if ! regslim_spawn "r$r" "$p" "http://$REG_PLAIN" "$REGSLIM_LAB/rs$r" --config "$W/regslim.json" \
		2> "$LOGS/spawn-r$r.err"; then
		fail "replica_r${r}_start" "$(head -n 3 "$LOGS/spawn-r$r.err" | tr '\n' ' ')"
		finish
	fi
	R[r]=http://127.0.0.1:$p
done
pass replicas_start
if ! timeout 30 bash "$RS_LAB_DIR/haproxy.sh" start $((LAB_PORT_BASE + 51)) $((LAB_PORT_BASE + 52)) \
	$((LAB_PORT_BASE + 53)) > "$LOGS/haproxy-start.log" 2>&1; then
	fail haproxy_start "$(tail -n 3 "$LOGS/haproxy-start.log" | tr '\n' ' ')"
	finish
fi
eval "$(bash "$RS_LAB_DIR/haproxy.sh" env)"
HAP=${HAPROXY_URL#http://}
sleep 1.2 # every replica passed its first health check

CR=(-u alice:alicepw)
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
# start_upload URL REPO: POST, the upload's path (Location) on stdout
start_upload() {
	curl -s --max-time 30 -X POST -D - -o /dev/null "${CR[@]}" "$1/v2/$2/blobs/uploads/" | header_value Location
}
# patch URL PATH FILE FIRST: PATCH with Content-Range FIRST-(FIRST+size-1); "<code> <Range>"
patch() {
	local n
	n=$(stat -c %s "$3")
	curl -s --max-time 30 -D "$W/h" -o "$W/b" -w '%{http_code}' -X PATCH "${CR[@]}" \
		-H 'Content-Type: application/octet-stream' -H "Content-Range: $4-$(($4 + n - 1))" \
		--data-binary "@$3" "$1$2"
	echo " $(header_value Range < "$W/h")"
}
parts() { bucket_keys "${P}uploads/$1/"; }

# ---------------------------------------------------------------- a chunked upload over three replicas
head -c 3145728 /dev/urandom > "$W/blob"
split -b 1048576 -d "$W/blob" "$W/chunk."
D=sha256:$(sha_of "$W/blob")
loc=$(start_upload "${R[1]}" team/chunks)
uuid=${loc##*/}
expect upload_started_on_r1 "[[ '$loc' == /v2/team/chunks/blobs/uploads/* ]] && [ \${#uuid} -eq 36 ]" "Location '$loc'"
out1=$(patch "${R[2]}" "$loc" "$W/chunk.00" 0)
out2=$(patch "${R[3]}" "$loc" "$W/chunk.01" 1048576)
expect_eq chunks_on_r2_then_r3 "$out1 / $out2" "202 0-1048575 / 202 0-2097151"
st=$(curl -s --max-time 30 -D - -o /dev/null -w '%{http_code}' "${CR[@]}" "${R[1]}$loc")
expect status_on_r1_sees_both_chunks "echo '$st' | grep -qi '^Range: 0-2097151' && echo '$st' | tail -n 1 | grep -q 204" \
	"$(echo "$st" | tr '\r\n' '  ' | cut -c1-300)"
out=$(patch "${R[1]}" "$loc" "$W/chunk.00" 0)
expect_eq out_of_order_patch_416 "$out" "416 0-2097151"
expect_eq parts_in_the_bucket_meanwhile "$(parts "$uuid" | sed 's|.*/||' | tr '\n' ' ')" \
	"00000000000000000000 00000000000001048576 "
out3=$(patch "${R[2]}" "$loc" "$W/chunk.02" 2097152)
code=$(curl -s --max-time 60 -o "$W/put.body" -w '%{http_code}' -X PUT "${CR[@]}" "${R[3]}$loc?digest=$D")
expect_eq last_chunk_then_put_on_another_replica "$out3 / $code" "202 0-3145727 / 201"
got=$(curl -s --max-time 60 "${R[1]}/v2/team/chunks/blobs/$D" | sha256sum | cut -d' ' -f1)
expect_eq chunked_blob_hashes_to_its_digest "sha256:$got" "$D"
expect_eq chunked_upload_parts_removed "$(parts "$uuid")" ""
code=$(curl -s --max-time 30 -o "$W/gone.body" -w '%{http_code}' "${CR[@]}" "${R[2]}$loc")
expect finished_upload_unknown "[ $code = 404 ] && grep -q BLOB_UPLOAD_UNKNOWN '$W/gone.body'" "$code $(head -c 200 "$W/gone.body")"

# two PATCHes at the same offset on two replicas at once: exactly one is appended (the other is 416,
# at its open or at its claim), and the blob is the winner's bytes
loc=$(start_upload "${R[1]}" team/race)
head -c 1048576 /dev/urandom > "$W/race.a"
head -c 1048576 /dev/urandom > "$W/race.b"
rpids=()
for x in a b; do
	r=${R[2]}
	[ $x = a ] || r=${R[3]}
	curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X PATCH "${CR[@]}" -H 'Content-Type: application/octet-stream' \
		-H 'Content-Range: 0-1048575' --data-binary "@$W/race.$x" "$r$loc" > "$W/race.$x.code" &
	rpids+=($!)
done
wait "${rpids[@]}" # not a bare wait: lib.sh's watchdog runs in the background too
ca=$(cat "$W/race.a.code") cb=$(cat "$W/race.b.code")
win=
[ "$ca" = 202 ] && win=a
[ "$cb" = 202 ] && win=${win}b
expect concurrent_patches_one_appended "[ '$win' = a ] || [ '$win' = b ]" "codes $ca (r2) $cb (r3)"
[ -n "$win" ] || win=a
code=$(curl -s --max-time 60 -o /dev/null -w '%{http_code}' -X PUT "${CR[@]}" "${R[1]}$loc?digest=sha256:$(sha_of "$W/race.${win:0:1}")")
expect_eq concurrent_patches_blob_is_the_winners "$ca $cb -> $code" "$ca $cb -> 201"

# a 48 MiB blob in six 8 MiB chunks round the replicas: the commit streams the parts (the committing
# replica's peak RSS grows by far less than the blob)
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$(lab_pid "regslim-r$1")/status"; }
head -c $((48 << 20)) /dev/urandom > "$W/big"
split -b $((8 << 20)) -d "$W/big" "$W/big."
BIG=sha256:$(sha_of "$W/big")
h0=$(hwm 3)
t0=$(date +%s%N)
loc=$(start_upload "${R[1]}" team/big)
codes=
off=0
for i in 0 1 2 3 4 5; do
	codes+="$(patch "${R[$((i % 3 + 1))]}" "$loc" "$W/big.0$i" $off | cut -d' ' -f1) "
	off=$((off + (8 << 20)))
done
codes+=$(curl -s --max-time 120 -o /dev/null -w '%{http_code}' -X PUT "${CR[@]}" "${R[3]}$loc?digest=$BIG")
ms=$((($(date +%s%N) - t0) / 1000000))
h1=$(hwm 3)
echo "# 48 MiB in six chunks over three replicas: $ms ms ($((48 * 1000 / (ms ? ms : 1))) MiB/s); peak RSS of the committing replica $h0 -> $h1 KiB"
expect_eq big_chunked_upload "$codes" "202 202 202 202 202 202 201"
expect big_commit_memory_bounded "[ $((h1 - h0)) -lt 16384 ]" "peak RSS grew by $((h1 - h0)) KiB for a 48 MiB blob"
got=$(curl -s --max-time 120 "${R[2]}/v2/team/big/blobs/$BIG" | sha256sum | cut -d' ' -f1)
expect_eq big_blob_hashes_to_its_digest "sha256:$got" "$BIG"

# ---------------------------------------------------------------- a wrong digest: nothing stays
WRONG=sha256:$(printf 'not it' | sha256sum | cut -d' ' -f1)
loc=$(start_upload "${R[2]}" team/chunks)
uuid=${loc##*/}
out=$(patch "${R[3]}" "$loc" "$W/chunk.00" 0)
code=$(curl -s --max-time 60 -o "$W/bad.body" -w '%{http_code}' -X PUT "${CR[@]}" "${R[1]}$loc?digest=$WRONG")
expect wrong_digest_refused "[ '$out' = '202 0-1048575' ] && [ $code = 400 ] && grep -q DIGEST_INVALID '$W/bad.body'" \
	"$out, $code $(head -c 200 "$W/bad.body")"
expect_eq wrong_digest_no_object "$(bucket_keys "${P}push/blobs/sha256/${WRONG#sha256:}")$(bucket_keys \
	"${P}push/blobs/sha256/$(sha_of "$W/chunk.00")")" ""
expect_eq wrong_digest_no_unfinished_multipart "$(timeout 60 "$S3TOOL" uploads "${P}push/blobs/sha256/${WRONG#sha256:}" 2>&1)" ""
expect_eq wrong_digest_parts_removed "$(parts "$uuid")" ""

# ---------------------------------------------------------------- cancelled, expired
loc=$(start_upload "${R[3]}" team/chunks)
uuid=${loc##*/}
out=$(patch "${R[1]}" "$loc" "$W/chunk.01" 0)
n=$(parts "$uuid" | wc -l)
code=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X DELETE "${CR[@]}" "${R[2]}$loc")
expect_eq cancel_on_another_replica "$out, $n part, $code" "202 0-1048575, 1 part, 204"
expect_eq cancelled_upload_parts_removed "$(parts "$uuid")" ""
code=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' "${CR[@]}" "${R[3]}$loc")
expect_eq cancelled_upload_unknown "$code" 404

loc=$(start_upload "${R[1]}" team/chunks)
uuid=${loc##*/}
out=$(patch "${R[2]}" "$loc" "$W/chunk.02" 0)
n=$(parts "$uuid" | wc -l)
sleep $((IDLE + 1))
kill -USR1 "$(lab_pid regslim-r3)" # a maintenance pass: the sweep of idle uploads
left=x
for ((i = 0; i < 50; i++)); do
	left=$(parts "$uuid")
	[ -z "$left" ] && break
	sleep 0.2
done
expect_eq expired_upload_parts_swept "$out, $n part, left: '$left'" "202 0-1048575, 1 part, left: ''"
code=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' "${CR[@]}" "${R[1]}$loc")
expect_eq expired_upload_unknown "$code" 404

# ---------------------------------------------------------------- skopeo through haproxy
TINY_OCI=$REGSLIM_LAB/fixtures/oci/tiny
TINY_MANIFEST=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "latest") | .digest' "$TINY_OCI/index.json")
ups() { grep -c '"path":"/v2/team/[a-z]*/blobs/uploads/' "$LOGS/regslim-r$1.log"; }
b1=$(ups 1) b2=$(ups 2) b3=$(ups 3)
check skopeo_push_through_haproxy timeout 120 skopeo copy --dest-tls-verify=false --dest-creds alice:alicepw \
	"oci:$TINY_OCI:latest" "docker://$HAP/team/tiny:v1"
d1=$(($(ups 1) - b1)) d2=$(($(ups 2) - b2)) d3=$(($(ups 3) - b3))
expect push_requests_spread_over_replicas "[ \$(( ($d1 > 0) + ($d2 > 0) + ($d3 > 0) )) -ge 2 ]" \
	"upload requests per replica: $d1 $d2 $d3"
echo "# upload requests per replica: $d1 $d2 $d3"
expect_tree_minus pushed_image_unpacks_to_the_original "oci:$TINY_OCI:latest" "docker://$HAP/team/tiny:v1" \
	'/nothing-dropped' '/nothing-gone' "$W/tree"
check skopeo_push_second_repository timeout 120 skopeo copy --dest-tls-verify=false --dest-creds alice:alicepw \
	"oci:$TINY_OCI:latest" "docker://$HAP/team/keep:v1"
check skopeo_push_second_tag timeout 120 skopeo copy --dest-tls-verify=false --dest-creds alice:alicepw \
	"oci:$TINY_OCI:latest" "docker://$HAP/team/keep:v2"

# podman pushes an image it pulled from the lab's registry, through haproxy
export MIRROR=$HAP
if client_usable podman; then
	if podman_pull -q --tls-verify=false "$REG_PLAIN/lab/tiny:latest" > "$LOGS/podman-pull.log" 2>&1 &&
		lpodman push --tls-verify=false --creds alice:alicepw --digestfile "$W/podman.digest" \
			"$REG_PLAIN/lab/tiny:latest" "docker://$HAP/team/podtiny:v1" > "$LOGS/podman-push.log" 2>&1; then
		pass podman_push_through_haproxy
		expect_eq podman_pushed_digest_served "sha256:$(timeout 60 skopeo inspect --raw --tls-verify=false \
			"docker://$HAP/team/podtiny:v1" | sha256sum | cut -d' ' -f1)" "$(cat "$W/podman.digest")"
		expect_tree_minus podman_pushed_image_unpacks_to_the_original "docker://$REG_PLAIN/lab/tiny:latest" \
			"docker://$HAP/team/podtiny:v1" '/nothing-dropped' '/nothing-gone' "$W/podtree"
	else
		fail podman_push_through_haproxy "$(tail -n 3 "$LOGS/podman-push.log" "$LOGS/podman-pull.log" | tr '\n' ' ')"
	fi
else
	skip podman_push_through_haproxy "$RS_CLIENT_WHY"
fi

# ---------------------------------------------------------------- deletes and GC on s3
MT=application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json
OMT=application/vnd.oci.image.manifest.v1+json
# an image of its own in team/own (a layer and a config nothing else has), pushed by curl through
# haproxy (POST and PUT of each blob on whichever replicas haproxy picks)
mkdir -p "$W/own-root"
head -c 4096 /dev/urandom > "$W/own-root/data"
tar -C "$W/own-root" -cf "$W/own.tar" data
gzip -nc "$W/own.tar" > "$W/own.tgz"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
	"$(sha_of "$W/own.tar")" > "$W/own.config"
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}' \
	"$OMT" "$(sha_of "$W/own.config")" "$(stat -c %s "$W/own.config")" "$(sha_of "$W/own.tgz")" \
	"$(stat -c %s "$W/own.tgz")" > "$W/own.json"
OWN_MANIFEST=sha256:$(sha_of "$W/own.json")
st=
for f in own.config own.tgz; do
	loc=$(start_upload "$HAPROXY_URL" team/own)
	st+="$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X PUT "${CR[@]}" -H 'Content-Type: application/octet-stream' \
		--data-binary "@$W/$f" "$HAPROXY_URL$loc?digest=sha256:$(sha_of "$W/$f")") "
done
st+=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X PUT "${CR[@]}" -H "Content-Type: $OMT" \
	--data-binary "@$W/own.json" "$HAPROXY_URL/v2/team/own/manifests/v1")
expect_eq own_image_pushed_through_haproxy "$st" "201 201 201"
own_keys() {
	{
		bucket_keys "${P}push/blobs/sha256/$(sha_of "$W/own.config")"
		bucket_keys "${P}push/blobs/sha256/$(sha_of "$W/own.tgz")"
		bucket_keys "${P}push/manifests/sha256/${OWN_MANIFEST#sha256:}"
	} | wc -l
}
expect_eq own_image_in_the_bucket "$(own_keys)" 4 # the manifest with its .type
del() { curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X DELETE "${CR[@]}" "$HAPROXY_URL/v2/$1"; }
mget() { curl -s --max-time 30 -o /dev/null -w '%{http_code}' -H "Accept: $MT" "$HAPROXY_URL/v2/$1"; }
expect_eq tag_delete "$(del team/keep/manifests/v2) $(mget team/keep/manifests/v2) $(mget team/keep/manifests/v1)" \
	"202 404 200"
expect_eq tag_gone_from_the_bucket "$(bucket_keys "${P}push/tags/team/keep/_tags/")" "${P}push/tags/team/keep/_tags/v1"
CHUNKS_BLOB=$D
expect_eq blob_delete "$(del "team/chunks/blobs/$CHUNKS_BLOB") $(del "team/chunks/blobs/$CHUNKS_BLOB")" "202 404"
expect_eq own_manifest_delete "$(del "team/own/manifests/$OWN_MANIFEST") $(mget team/own/manifests/v1)" "202 404"
expect_eq own_manifest_delete_leaves_bytes_until_the_sweep "$(own_keys)" 4
expect_eq manifest_delete "$(del "team/tiny/manifests/$TINY_MANIFEST") $(mget team/tiny/manifests/v1) $(mget \
	"team/tiny/manifests/$TINY_MANIFEST") $(del "team/tiny/manifests/$TINY_MANIFEST")" "202 404 404 404"
curl -s --max-time 30 -H "Accept: $MT" "$HAPROXY_URL/v2/team/keep/manifests/v1" > "$W/keep.json"
keep_objs=$(jq -r '.config.digest, .layers[].digest' "$W/keep.json" | sed 's/^sha256://')
# team/keep re-linked the shared blobs at its push: wait for them to age past the grace too
sleep $((GRACE + 1))
# a blob uploaded now is young: it survives this sweep
head -c 1000 /dev/urandom > "$W/young"
loc=$(start_upload "${R[1]}" team/young)
code=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X PUT "${CR[@]}" -H 'Content-Type: application/octet-stream' \
	--data-binary "@$W/young" "${R[2]}$loc?digest=sha256:$(sha_of "$W/young")")
kill -USR1 "$(lab_pid regslim-r2)"
for ((i = 0; i < 100; i++)); do
	grep -q 'push gc:' "$LOGS/regslim-r2.log" && break
	sleep 0.1
done
line=$(grep 'push gc:' "$LOGS/regslim-r2.log" | tail -n 1)
echo "# $(echo "$line" | cut -c1-300)"
expect gc_sweep_logged "echo '$line' | grep -q 'removed 2 blobs and 1 manifests'" "$line"
expect_eq gc_removed_the_deleted_image "$(own_keys)" 0
expect_eq gc_removed_the_chunked_blob "$(bucket_keys "${P}push/blobs/sha256/${CHUNKS_BLOB#sha256:}")" ""
expect_eq gc_kept_the_young_blob "$code $(bucket_keys "${P}push/blobs/sha256/$(sha_of "$W/young")" | wc -l)" "201 1"
ok=1
for h in $keep_objs; do bucket_keys "${P}push/blobs/sha256/$h" | grep -q . || ok=0; done
expect_eq gc_kept_what_another_repository_holds "$ok" 1
expect_eq gc_kept_the_manifest_another_repository_holds \
	"$(bucket_keys "${P}push/manifests/sha256/${TINY_MANIFEST#sha256:}" | grep -vc type)" 1
rm -rf "$W/keep-pulled"
check kept_image_still_pulls timeout 120 skopeo copy --src-tls-verify=false "docker://$HAP/team/keep:v1" \
	"dir:$W/keep-pulled"

# ---------------------------------------------------------------- Redis down: the replica's own sessions
redis_lab stop > /dev/null 2>&1
for ((i = 0; i < 100; i++)); do
	curl -s --max-time 5 "${R[1]}/healthz" | grep -q degraded && curl -s --max-time 5 "${R[2]}/healthz" |
		grep -q degraded && break
	sleep 0.1
done
loc=$(start_upload "${R[1]}" team/local)
out_other=$(curl -s --max-time 30 -o "$W/other.body" -w '%{http_code}' -X PATCH "${CR[@]}" \
	-H 'Content-Type: application/octet-stream' --data-binary "@$W/chunk.00" "${R[2]}$loc")
out_own=$(patch "${R[1]}" "$loc" "$W/chunk.00" 0)
expect degraded_other_replica_404_upload_unknown \
	"[ '$out_other' = 404 ] && grep -q BLOB_UPLOAD_UNKNOWN '$W/other.body' && grep -q 'Redis' '$W/other.body'" \
	"$out_other $(head -c 300 "$W/other.body")"
code=$(curl -s --max-time 60 -o /dev/null -w '%{http_code}' -X PUT "${CR[@]}" \
	"${R[1]}$loc?digest=sha256:$(sha_of "$W/chunk.00")")
expect_eq degraded_own_replica_goes_on "$out_own $code" "202 0-1048575 201"
# the same 48 MiB in six chunks to one replica's own session, for comparison
t0=$(date +%s%N)
loc=$(start_upload "${R[2]}" team/biglocal)
codes=
off=0
for i in 0 1 2 3 4 5; do
	codes+="$(patch "${R[2]}" "$loc" "$W/big.0$i" $off | cut -d' ' -f1) "
	off=$((off + (8 << 20)))
done
codes+=$(curl -s --max-time 120 -o /dev/null -w '%{http_code}' -X PUT "${CR[@]}" "${R[2]}$loc?digest=$BIG")
ms=$((($(date +%s%N) - t0) / 1000000))
echo "# 48 MiB in six chunks to one replica's own session (Redis down): $ms ms ($((48 * 1000 / (ms ? ms : 1))) MiB/s)"
expect_eq big_local_session_upload "$codes" "202 202 202 202 202 202 201"
finish
