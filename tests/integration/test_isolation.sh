#!/usr/bin/env bash
# test_isolation.sh: repository ACLs protect content fetched by digest (issue 11 item 1). Two
# users push with real skopeo: alice may push secret/*, bob may pull and push public/* and team-b/*
# only. Bob cannot read alice's manifest, config or layer by digest under his names (404 with the
# spec's *_UNKNOWN code, GET and HEAD), cannot mount them into his repository (202, not 201, and
# the blob stays unreadable there; without from=, from= his own repository, from= a repository he
# may not pull), cannot PUT a manifest that references them, cannot read alice's push report under
# his names; the report has no host paths; alice pulls her image back identically; a mount from a
# repository bob may pull and which holds the blob works (201). Mirror: a regslim with its own
# credentials for the lab's htpasswd registry caches lab/tiny; the same digests under a name the
# upstream does not have are 404 (and the upstream was asked for that name: its access log), under
# library/tiny (same blobs upstream) they are served once the upstream confirms; optimized images
# and their reports only under the repository they were made for; with the upstream down, linked
# content is still served (also after a restart) and link-less content under a new name is not.
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start
upstream_also auth

W=$REGSLIM_LAB/iso
mkdir -p "$W"
TINY_OCI=$REGSLIM_LAB/fixtures/oci/tiny
SK=(timeout 180 skopeo --insecure-policy --tmpdir "$REGSLIM_LAB/tmp")
mkdir -p "$REGSLIM_LAB/tmp"
htpasswd -Bbc "$W/htpasswd" alice alicepw 2> /dev/null
htpasswd -Bb "$W/htpasswd" bob bobpw 2> /dev/null
cat > "$W/regslim.json" << EOF
{"upstreams": [{"name": "up", "url": "http://$REG_PLAIN", "default": true}],
 "auth": {"htpasswd": "$W/htpasswd", "anonymous_pull": false,
          "acl": [{"repository": "secret/*", "users": ["alice"], "actions": ["pull", "push"]},
                  {"repository": "public/*", "users": ["bob"], "actions": ["pull", "push"]},
                  {"repository": "team-b/*", "users": ["bob"], "actions": ["pull", "push"]}]},
 "push": {"policies": [{"repositories": ["secret/*"], "mode": "optimize-and-push",
                        "rules": {"secrets": {"action": "warn"}}}]}}
EOF
RS_UPSTREAM="" start_regslim --config "$W/regslim.json"
H=127.0.0.1:$RS_PORT
A=(-u alice:alicepw)
B=(-u bob:bobpw)
OCIM=application/vnd.oci.image.manifest.v1+json
code_of() { jq -r '.errors[0].code' 2> /dev/null; } # registry error code of the body on stdin

# alice's private image: one layer with content nobody else has (random, made by this run)
ids=$(python3 - "$W/alice" << 'PY'
import gzip, hashlib, io, json, os, sys, tarfile
out = sys.argv[1]
os.makedirs(out + "/blobs/sha256", exist_ok=True)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(data)
    return "sha256:" + d, len(data)
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
    for name, data in (("srv/private.txt", os.urandom(32).hex().encode() + b"\n"), ("srv/app", b"#!/bin/sh\necho private\n")):
        ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o755; ti.mtime = 1700000000
        tf.addfile(ti, io.BytesIO(data))
diff = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
layer = put(gzip.compress(raw.getvalue(), mtime=0))
cfg = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {"User": "1000", "Cmd": ["/srv/app"]},
                      "rootfs": {"type": "layers", "diff_ids": [diff]}}).encode())
m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg[0], "size": cfg[1]},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer[0], "size": layer[1]}]}).encode()
md = put(m)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md[0],
           "size": md[1], "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, open(out + "/index.json", "w"))
open(out + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
print(md[0], cfg[0], layer[0])
PY
)
read -r AM AC AL <<< "$ids"
[[ $AL == sha256:* ]] || { fail alice_image "$ids"; finish; }

# ------------------------------------------------------------ two users push with skopeo
check alice_pushes_secret_priv "${SK[@]}" copy --preserve-digests --dest-tls-verify=false --dest-creds alice:alicepw \
	"oci:$W/alice:latest" "docker://$H/secret/priv:v1"
check bob_pushes_public_base "${SK[@]}" copy --dest-tls-verify=false --dest-creds bob:bobpw \
	"oci:$TINY_OCI:latest" "docker://$H/public/base:1"
expect_eq alice_reads_her_manifest "$(http_code "$RS_URL/v2/secret/priv/manifests/$AM" "${A[@]}" -H "Accept: $OCIM")" 200
expect_eq bob_cannot_pull_secret "$(http_code "$RS_URL/v2/secret/priv/manifests/v1" "${B[@]}" -H "Accept: $OCIM")" 403

# ------------------------------------------------------------ reads by digest under bob's names
for repo in public/base team-b/x; do
	k=${repo//\//_}
	body=$(rs_curl "${B[@]}" -H "Accept: $OCIM" "$RS_URL/v2/$repo/manifests/$AM")
	expect_eq "bob_get_manifest_${k}_404" "$(http_code "$RS_URL/v2/$repo/manifests/$AM" "${B[@]}" -H "Accept: $OCIM")" 404
	expect_eq "bob_get_manifest_${k}_code" "$(echo "$body" | code_of)" MANIFEST_UNKNOWN
	expect_eq "bob_head_manifest_${k}_404" "$(http_code "$RS_URL/v2/$repo/manifests/$AM" -I "${B[@]}" -H "Accept: $OCIM")" 404
	for what in config:$AC layer:$AL; do
		d=${what#*:} n=${what%%:*}
		expect_eq "bob_get_${n}_${k}_404" "$(http_code "$RS_URL/v2/$repo/blobs/$d" "${B[@]}")" 404
		expect_eq "bob_get_${n}_${k}_code" "$(rs_curl "${B[@]}" "$RS_URL/v2/$repo/blobs/$d" | code_of)" BLOB_UNKNOWN
		expect_eq "bob_head_${n}_${k}_404" "$(http_code "$RS_URL/v2/$repo/blobs/$d" -I "${B[@]}")" 404
	done
done

# ------------------------------------------------------------ mounts
mount_status() { # mount_status QUERY -> status of POST /v2/team-b/x/blobs/uploads/?QUERY as bob
	rs_curl -s -o /dev/null -D - -X POST "${B[@]}" "$RS_URL/v2/team-b/x/blobs/uploads/?$1" | tr -d '\r' | head -n 1 | awk '{print $2}'
}
expect_eq mount_without_from_202 "$(mount_status "mount=$AL")" 202
expect_eq mount_from_own_repo_202 "$(mount_status "mount=$AL&from=team-b/x")" 202
expect_eq mount_from_pullable_repo_without_blob_202 "$(mount_status "mount=$AL&from=public/base")" 202
expect_eq mount_from_unpullable_repo_202 "$(mount_status "mount=$AL&from=secret/priv")" 202
expect_eq mount_config_without_from_202 "$(mount_status "mount=$AC")" 202
expect_eq mounted_nothing_layer_404 "$(http_code "$RS_URL/v2/team-b/x/blobs/$AL" "${B[@]}")" 404
expect_eq mounted_nothing_config_404 "$(http_code "$RS_URL/v2/team-b/x/blobs/$AC" "${B[@]}")" 404
body=$(rs_curl -X PUT "${B[@]}" -H "Content-Type: $OCIM" --data-binary "@$W/alice/blobs/sha256/${AM#sha256:}" \
	"$RS_URL/v2/team-b/x/manifests/stolen")
expect_eq manifest_put_with_foreign_blobs_refused "$(echo "$body" | code_of)" MANIFEST_BLOB_UNKNOWN
expect_eq stolen_manifest_not_readable "$(http_code "$RS_URL/v2/team-b/x/manifests/$AM" "${B[@]}" -H "Accept: $OCIM")" 404
# a mount from a repository bob may pull and which holds the blob
TL=$(jq -r '.layers[0].digest' "$TINY_OCI/blobs/sha256/$(jq -r '.manifests[0].digest' "$TINY_OCI/index.json" | cut -d: -f2)")
expect_eq mount_from_holding_repo_201 "$(mount_status "mount=$TL&from=public/base")" 201
expect_eq mounted_blob_readable "sha256:$(rs_curl "${B[@]}" "$RS_URL/v2/team-b/x/blobs/$TL" | sha256sum | cut -d' ' -f1)" "$TL"

# ------------------------------------------------------------ reports
rep=$(rs_curl "${A[@]}" "$RS_URL/regslim/v1/reports/secret/priv/$AM")
expect_eq alice_report_200 "$(echo "$rep" | jq -r .repository 2> /dev/null)" secret/priv
expect_eq alice_report_has_optimization "$(echo "$rep" | jq -r '.optimization | type' 2> /dev/null)" object
expect alice_report_no_host_paths "! echo '$rep' | grep -qF '$REGSLIM_LAB'" "report names $REGSLIM_LAB: $(echo "$rep" | grep -oF "$REGSLIM_LAB" | head -n 1)"
expect alice_report_no_tmp_dirs "! echo '$rep' | grep -Eq '/tmp/|gate-[A-Za-z0-9]{6}|opt-[A-Za-z0-9]{6}'" "$(echo "$rep" | jq -c '.optimization | {source, destination}')"
expect_eq bob_report_secret_denied "$(http_code "$RS_URL/regslim/v1/reports/secret/priv/$AM" "${B[@]}")" 403
expect_eq bob_report_public_404 "$(http_code "$RS_URL/regslim/v1/reports/public/base/$AM" "${B[@]}")" 404
expect_eq bob_report_team_404 "$(http_code "$RS_URL/regslim/v1/reports/team-b/x/$AM" "${B[@]}")" 404

# ------------------------------------------------------------ alice pulls her image back
rm -rf "$W/back"
check alice_pulls_back "${SK[@]}" copy --src-tls-verify=false --src-creds alice:alicepw "docker://$H/secret/priv:v1" "dir:$W/back"
expect_eq alice_pull_back_same_manifest "sha256:$(sha256sum "$W/back/manifest.json" | cut -d' ' -f1)" "$AM"
expect_eq alice_pull_back_same_layer "sha256:$(sha256sum "$W/back/${AL#sha256:}" | cut -d' ' -f1)" "$AL"
# a restart keeps the links: alice still reads, bob still does not
restart_regslim
expect_eq after_restart_alice_layer_200 "$(http_code "$RS_URL/v2/secret/priv/blobs/$AL" "${A[@]}")" 200
expect_eq after_restart_bob_layer_404 "$(http_code "$RS_URL/v2/public/base/blobs/$AL" "${B[@]}")" 404

# ------------------------------------------------------------ mirror with its own upstream credentials
# The htpasswd registry gets tiny as lab/tiny and library/tiny (same blobs); other/none does not exist.
for r in lab/tiny library/tiny; do
	"${SK[@]}" copy --dest-tls-verify=false --format v2s2 --dest-creds "$LAB_USER:$LAB_PASS" \
		"oci:$TINY_OCI:latest" "docker://$REG_AUTH/$r:latest" > "$LOGS/iso-fixture.log" 2>&1 ||
		fail "mirror_fixture_$r" "$(tail -n 2 "$LOGS/iso-fixture.log")"
done
UPC=(-u "$LAB_USER:$LAB_PASS")
UM=$(curl -s --max-time 10 "${UPC[@]}" -H "Accept: application/vnd.docker.distribution.manifest.v2+json" \
	-o "$W/up-manifest.json" -w '%{http_code}' "http://$REG_AUTH/v2/lab/tiny/manifests/latest")
UMD=sha256:$(sha256sum "$W/up-manifest.json" | cut -d' ' -f1)
UC=$(jq -r .config.digest "$W/up-manifest.json")
UL=$(jq -r '.layers[0].digest' "$W/up-manifest.json")
expect_eq mirror_fixture_upstream_manifest "$UM" 200
export RS_ISO_UP_PASS=$LAB_PASS
cat > "$W/mirror.json" << EOF
{"upstreams": [{"name": "up", "url": "http://$REG_AUTH", "default": true,
                "auth": {"username": "$LAB_USER", "password_env": "RS_ISO_UP_PASS"}}],
 "optimize": {"policies": [{"upstream": "up", "repositories": ["lab/*"]}]}}
EOF
MP=$((LAB_PORT_BASE + 51))
M=http://127.0.0.1:$MP
mirror_up() { RS_OPTIMIZE=1 regslim_spawn mirror "$MP" "" "$REGSLIM_LAB/rs-mirror" --config "$W/mirror.json"; }
mirror_up || fail mirror_start "$(tail -n 3 "$LOGS/regslim-mirror.log")"
REGLOG=$LOGS/registry-${REG_AUTH##*:}.log
ACC=(-H "Accept: application/vnd.docker.distribution.manifest.v2+json" -H "Accept: $OCIM")
# cache lab/tiny under its own name: by tag (optimized), the original manifest and blobs by digest
OPT=$(curl -s --max-time 60 -A skopeo/1.9.3 "${ACC[@]}" -D - -o "$W/opt.json" "$M/v2/lab/tiny/manifests/latest" | tr -d '\r' | header_value Docker-Content-Digest)
expect_ne mirror_lab_tiny_optimized "$OPT" "$UMD"
expect_eq mirror_lab_tiny_manifest_by_digest "$(http_code "$M/v2/lab/tiny/manifests/$UMD" "${ACC[@]}")" 200
for d in "$UC" "$UL"; do
	expect_eq "mirror_lab_tiny_blob_${d:7:12}" "sha256:$(rs_curl "$M/v2/lab/tiny/blobs/$d" | sha256sum | cut -d' ' -f1)" "$d"
done
OL=$(jq -r '.layers[0].digest' "$W/opt.json")
expect_eq mirror_optimized_layer_under_lab_tiny "$(http_code "$M/v2/lab/tiny/blobs/$OL")" 200
expect_eq mirror_optimized_report_under_lab_tiny "$(rs_curl "$M/regslim/v1/reports/lab/tiny/$OPT" | jq -r '.images[0].source_digest' 2> /dev/null)" "$UMD"
rep=$(rs_curl "$M/regslim/v1/reports/lab/tiny/$OPT")
expect mirror_optimized_report_no_host_paths "! echo '$rep' | grep -qF '$REGSLIM_LAB'" "$(echo "$rep" | jq -c '{source, destination}')"
# a name the upstream does not have: 404, and the upstream was asked for that name
mark=$(wc -l < "$REGLOG")
expect_eq mirror_other_config_404 "$(http_code "$M/v2/other/none/blobs/$UC")" 404
expect_eq mirror_other_config_code "$(rs_curl "$M/v2/other/none/blobs/$UC" | code_of)" BLOB_UNKNOWN
expect_eq mirror_other_layer_head_404 "$(http_code "$M/v2/other/none/blobs/$UL" -I)" 404
expect_eq mirror_other_manifest_404 "$(http_code "$M/v2/other/none/manifests/$UMD" "${ACC[@]}")" 404
expect_eq mirror_other_manifest_code "$(rs_curl "${ACC[@]}" "$M/v2/other/none/manifests/$UMD" | code_of)" MANIFEST_UNKNOWN
expect_eq mirror_other_optimized_404 "$(http_code "$M/v2/other/none/manifests/$OPT" "${ACC[@]}")" 404
expect_eq mirror_other_report_404 "$(http_code "$M/regslim/v1/reports/other/none/$OPT")" 404
tail -n +$((mark + 1)) "$REGLOG" > "$W/reglog-other"
expect mirror_upstream_asked_for_other_name "grep -qF 'HEAD /v2/other/none/blobs/$UC' '$W/reglog-other'" \
	"no HEAD /v2/other/none/blobs/$UC in the registry's access log"
expect mirror_upstream_asked_for_other_manifest "grep -qF '/v2/other/none/manifests/$UMD' '$W/reglog-other'" \
	"no request for /v2/other/none/manifests/$UMD in the registry's access log"
# a name the upstream has (library/tiny holds the same blobs): served after the upstream confirms
mark=$(wc -l < "$REGLOG")
expect_eq mirror_library_config_200 "sha256:$(rs_curl "$M/v2/library/tiny/blobs/$UC" | sha256sum | cut -d' ' -f1)" "$UC"
expect_eq mirror_library_layer_head_200 "$(http_code "$M/v2/library/tiny/blobs/$UL" -I)" 200
expect_eq mirror_library_manifest_200 "$(http_code "$M/v2/library/tiny/manifests/$UMD" "${ACC[@]}")" 200
tail -n +$((mark + 1)) "$REGLOG" > "$W/reglog-library"
expect mirror_library_confirmed_by_head "grep -qF 'HEAD /v2/library/tiny/blobs/$UC' '$W/reglog-library'" \
	"no HEAD /v2/library/tiny/blobs/$UC in the registry's access log"
expect mirror_library_not_downloaded_again "! grep -qF 'GET /v2/library/tiny/blobs/$UC' '$W/reglog-library'" \
	"the cached blob was downloaded again"
# optimized images were made for lab/tiny: not served under library/tiny (not optimized there)
expect_eq mirror_library_optimized_layer_404 "$(http_code "$M/v2/library/tiny/blobs/$OL")" 404
expect_eq mirror_library_optimized_report_404 "$(http_code "$M/regslim/v1/reports/library/tiny/$OPT")" 404

# ------------------------------------------------------------ mirror, upstream down
upstream_stop auth
expect_eq mirror_down_linked_blob_200 "$(http_code "$M/v2/lab/tiny/blobs/$UL")" 200
expect_eq mirror_down_linked_other_name_200 "$(http_code "$M/v2/library/tiny/blobs/$UC")" 200
st=$(http_code "$M/v2/newname/x/blobs/$UL")
expect mirror_down_unlinked_not_served "[ '$st' != 200 ] && [ '$st' != 000 ]" "status $st"
st=$(http_code "$M/v2/newname/x/manifests/$UMD" "${ACC[@]}")
expect mirror_down_unlinked_manifest_not_served "[ '$st' != 200 ] && [ '$st' != 000 ]" "status $st"
lab_stop regslim-mirror 15 || true
mirror_up || fail mirror_restart "$(tail -n 3 "$LOGS/regslim-mirror.log")"
expect_eq mirror_down_after_restart_linked_200 "$(http_code "$M/v2/lab/tiny/blobs/$UL")" 200
expect_eq mirror_down_after_restart_optimized_200 "$(http_code "$M/v2/lab/tiny/blobs/$OL")" 200
st=$(http_code "$M/v2/newname/x/blobs/$UC")
expect mirror_down_after_restart_unlinked_not_served "[ '$st' != 200 ] && [ '$st' != 000 ]" "status $st"
upstream_restart auth

finish
