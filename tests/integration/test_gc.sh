#!/usr/bin/env bash
# test_gc.sh: the garbage collection of the pushed images (issue 14; docs/push.md "Garbage
# collection"). regslim as a registry with an htpasswd user, push.gc_grace_s 4 and no periodic
# sweep (push.gc_interval_s 0: SIGUSR1 runs one). Two images pushed with curl into one repository,
# sharing a layer; a blob uploaded and never referenced (an abandoned push); a manifest the push
# gate refused (its blobs stay linked, the manifest is gone); the same image in a second repository
# that is deleted from the first. After the grace period, one image deleted and a sweep: its own
# config and layer go, the shared layer and the other image stay, the never-referenced blob and
# the refused push's blobs go, the image held by the other repository stays; the other image
# still pulls with skopeo and its blobs hash to their digests; the log line and the regslim_gc_*
# metrics say what went. A blob pushed within the grace period stays at one sweep and goes at the
# next once it is older. An image whose blobs were collected can be pushed again (the blobs
# uploaded anew). The data directory is looked at directly only to prove bytes are gone.
#
# Env (set by ctest): REGSLIM_BIN, LAB_PORT_BASE.
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start

W=$REGSLIM_LAB/gc
mkdir -p "$W"
GRACE=4
htpasswd -Bbc "$W/htpasswd" alice alicepw 2> /dev/null
cat > "$W/regslim.json" << EOF
{"auth": {"htpasswd": "$W/htpasswd", "anonymous_pull": true,
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]},
 "push": {"gc_grace_s": $GRACE, "gc_interval_s": 0,
          "policies": [{"repositories": ["gated/*"], "mode": "check-only",
                        "rules": {"forbidden_paths": {"paths": ["etc/shadow"], "action": "deny"}}}]}}
EOF
start_regslim --config "$W/regslim.json"
PUSH=(-u alice:alicepw)
MT=application/vnd.oci.image.manifest.v1+json
PUSHED=$RS_DATA/push

sha_of() { sha256sum "$1" | cut -d' ' -f1; }
# upload REPO FILE: POST then PUT ?digest=; the PUT's status
upload() {
	local loc sep
	loc=$(curl -s --max-time 30 -X POST -D - -o /dev/null "${PUSH[@]}" "$RS_URL/v2/$1/blobs/uploads/" | header_value Location)
	[[ $loc == http* ]] || loc=$RS_URL$loc
	sep='?'
	[[ $loc != *\?* ]] || sep='&'
	curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X PUT "${PUSH[@]}" -H 'Content-Type: application/octet-stream' \
		--data-binary "@$2" "$loc${sep}digest=sha256:$(sha_of "$2")"
}
# put_manifest REPO REF FILE: the status
put_manifest() {
	curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X PUT "${PUSH[@]}" -H "Content-Type: $MT" \
		--data-binary "@$3" "$RS_URL/v2/$1/manifests/$2"
}
# layer NAME FILE-IN-IT CONTENT: a gzip'd tar layer $W/NAME.tgz with one file
layer() {
	mkdir -p "$W/root-$1/$(dirname "$2")"
	printf '%s\n' "$3" > "$W/root-$1/$2"
	tar -C "$W/root-$1" -cf "$W/$1.tar" "$2"
	gzip -nc "$W/$1.tar" > "$W/$1.tgz"
}
# image NAME LAYER...: its config $W/NAME.config and manifest $W/NAME.json over the layers
image() {
	local name=$1 l ids="" descs=""
	shift
	for l in "$@"; do
		ids+="${ids:+,}\"sha256:$(sha_of "$W/$l.tar")\""
		descs+="${descs:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$(sha_of "$W/$l.tgz")\",\"size\":$(stat -c %s "$W/$l.tgz")}"
	done
	printf '{"architecture":"amd64","os":"linux","config":{"Labels":{"image":"%s"}},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
		"$name" "$ids" > "$W/$name.config"
	printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[%s]}' \
		"$MT" "$(sha_of "$W/$name.config")" "$(stat -c %s "$W/$name.config")" "$descs" > "$W/$name.json"
}
# push_img REPO TAG NAME LAYER...: the blobs, then the manifest; the statuses
push_img() {
	local repo=$1 tag=$2 name=$3 l st
	shift 3
	st=$(upload "$repo" "$W/$name.config")
	for l in "$@"; do st+=" $(upload "$repo" "$W/$l.tgz")"; done
	echo "$st $(put_manifest "$repo" "$tag" "$W/$name.json")"
}
dg() { echo "sha256:$(sha_of "$1")"; }
# present KIND FILE: the push store holds the object (blobs or manifests) whose bytes FILE are
present() { local h; h=$(sha_of "$2"); [ -f "$PUSHED/$1/sha256/${h:0:2}/$h" ]; }
# gc_now: SIGUSR1 and wait (bounded) for the sweep's log line; the line
gc_now() {
	local before i
	before=$(grep -c 'push gc:' "$RS_LOG" || true)
	kill -USR1 "$(lab_pid regslim-main)"
	for ((i = 0; i < 150; i++)); do
		if [ "$(grep -c 'push gc:' "$RS_LOG" || true)" -gt "$before" ]; then
			grep 'push gc:' "$RS_LOG" | tail -n 1
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# ---------------------------------------------------------------- the content
layer shared srv/shared.txt "shared by both images $$"
layer a1 srv/a.txt "only in image a $$"
layer b1 srv/b.txt "only in image b $$"
layer orphan srv/orphan.txt "uploaded, never referenced $$"
layer bad etc/shadow "root:x:refused"
image imga shared a1
image imgb shared b1
image imgbad bad
expect_eq setup_push_image_a "$(push_img gc/app a imga shared a1)" "201 201 201 201"
expect_eq setup_push_image_b "$(push_img gc/app b imgb shared b1)" "201 201 201 201"
expect_eq setup_abandoned_blob "$(upload gc/app "$W/orphan.tgz")" 201
st=$(push_img gated/app bad imgbad bad)
expect_eq setup_gate_refuses "${st##* }" 403
# image b in a second repository too (by digest), then deleted there: gc/app still holds it
expect_eq setup_image_b_elsewhere "$(push_img gc/keep b imgb shared b1)" "201 201 201 201"
st=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X DELETE "${PUSH[@]}" "$RS_URL/v2/gc/keep/manifests/$(dg "$W/imgb.json")")
expect_eq setup_image_b_deleted_elsewhere "$st" 202
expect "setup_objects_stored" "present blobs '$W/a1.tgz' && present blobs '$W/orphan.tgz' && present blobs '$W/bad.tgz' && present manifests '$W/imga.json'" \
	"the push store lacks an object it was given"

# ---------------------------------------------------------------- a sweep within the grace period
line=$(gc_now) || fail gc_runs_on_sigusr1 "no 'push gc:' line after SIGUSR1"
[ -z "$line" ] || pass gc_runs_on_sigusr1
expect "gc_within_grace_removes_nothing" "echo '$line' | grep -q 'removed 0 blobs and 0 manifests'" "$line"

# ---------------------------------------------------------------- delete image a, sweep after the grace
sleep $((GRACE + 1))
st=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X DELETE "${PUSH[@]}" "$RS_URL/v2/gc/app/manifests/$(dg "$W/imga.json")")
expect_eq delete_image_a_202 "$st" 202
# a blob pushed now is within the grace period at the next sweep
layer young srv/young.txt "pushed just before the sweep $$"
expect_eq setup_young_blob "$(upload gc/young "$W/young.tgz")" 201
bytes_before=$(metric regslim_gc_bytes_removed_total)
line=$(gc_now) || fail gc_second_sweep "no 'push gc:' line after SIGUSR1"
# gone: image a's manifest, config and own layer; the abandoned blob; the refused push's config and layer
expect "gc_removes_deleted_image_own_objects" \
	"! present manifests '$W/imga.json' && ! present blobs '$W/imga.config' && ! present blobs '$W/a1.tgz'" \
	"$(ls -R "$PUSHED/blobs" | head -n 20 | tr '\n' ' ')"
expect "gc_removes_never_referenced_blob" "! present blobs '$W/orphan.tgz'" "the abandoned upload's blob is still there"
expect "gc_removes_refused_push_blobs" "! present blobs '$W/bad.tgz' && ! present blobs '$W/imgbad.config'" \
	"the refused push's blobs are still there"
expect "gc_keeps_shared_layer_and_other_image" \
	"present blobs '$W/shared.tgz' && present blobs '$W/b1.tgz' && present blobs '$W/imgb.config' && present manifests '$W/imgb.json'" \
	"an object of image b is gone"
expect "gc_keeps_young_blob" "present blobs '$W/young.tgz'" "the blob pushed within the grace period is gone"
expect_eq gc_log_line_counts "$(echo "$line" | grep -o 'removed [0-9]* blobs and [0-9]* manifests')" \
	"removed 5 blobs and 1 manifests"
expect "gc_log_line_counts_young" "echo '$line' | grep -q 'kept 1 unreferenced'" "$line"
expect_eq gc_metrics_objects_removed \
	"$(metric regslim_gc_objects_removed_total 'kind="blob"') $(metric regslim_gc_objects_removed_total 'kind="manifest"') $(metric regslim_gc_sweeps_total)" \
	"5 1 2"
freed=$(( $(stat -c %s "$W/imga.json") + $(stat -c %s "$W/imga.config") + $(stat -c %s "$W/a1.tgz") + \
	$(stat -c %s "$W/orphan.tgz") + $(stat -c %s "$W/bad.tgz") + $(stat -c %s "$W/imgbad.config") ))
expect_eq gc_metrics_bytes_removed "$(( $(metric regslim_gc_bytes_removed_total) - bytes_before ))" "$freed"

# the image that stays: served, pulled with skopeo, every blob hashing to its digest
st=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' "$RS_URL/v2/gc/app/blobs/$(dg "$W/a1.tgz")")
expect_eq gc_collected_blob_404 "$st" 404
check gc_other_image_pulls_with_skopeo timeout 120 skopeo copy --src-tls-verify=false \
	"docker://127.0.0.1:$RS_PORT/gc/app:b" "dir:$W/pulled"
bad=0
for f in "$W"/pulled/*; do
	case $(basename "$f") in manifest.json | version) continue ;; esac
	[ "$(sha_of "$f")" = "$(basename "$f")" ] || bad=$((bad + 1))
done
expect_eq gc_other_image_blobs_hash_right "$bad $(ls "$W/pulled" | grep -c '^[0-9a-f]\{64\}$')" "0 3"
expect "gc_other_image_blobs_served" "blob_digest_ok 127.0.0.1:$RS_PORT gc/app $(dg "$W/shared.tgz") && blob_digest_ok 127.0.0.1:$RS_PORT gc/app $(dg "$W/b1.tgz")" \
	"a blob of image b is not served right"

# ---------------------------------------------------------------- the young blob goes once older
sleep $((GRACE + 1))
line=$(gc_now) || fail gc_third_sweep "no 'push gc:' line after SIGUSR1"
expect "gc_removes_blob_once_past_grace" "! present blobs '$W/young.tgz'" "$line"
expect "gc_third_sweep_keeps_image_b" "present blobs '$W/shared.tgz' && present manifests '$W/imgb.json'" "$line"

# ---------------------------------------------------------------- pushing a collected image again
st=$(put_manifest gc/app a "$W/imga.json")
expect_eq gc_repush_without_blobs_refused "$st" 400
expect_eq gc_repush_with_blobs "$(push_img gc/app a imga shared a1)" "201 201 201 201"
expect "gc_repushed_image_served" "blob_digest_ok 127.0.0.1:$RS_PORT gc/app $(dg "$W/a1.tgz")" "blob a1 is not served"

finish
