#!/usr/bin/env bash
# test_gate_scan.sh: the push gate scans each layer when its upload completes (issue 16), once per
# layer digest, and the manifest PUT only joins the results. regslim with a check-only push policy
# in front of a real docker-registry; an image of three gzip layers of a few MB each, the first
# holding a private key that the second deletes (whiteout). Counted by
# regslim_gate_layer_scans_total{when="upload"|"manifest"}:
#  - layers pushed with curl (two monolithic POSTs, one chunked upload ending in a PUT): three
#    scans at upload, none for the config; the manifest PUT then adds no scan, answers 201 and its
#    report names the deleted key in layer 1 exactly as the inline scan words it;
#  - skopeo pushes the same image to a second repository (another policy, same scan parameters)
#    and to another tag: no scan at all, and the same findings;
#  - after a restart (the results are store documents) a push to a third repository scans nothing;
#  - a policy with other forbidden paths scans the layers again, and its deny stops the push.
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start plain none
UP=$REG_PLAIN

G=$REGSLIM_LAB/gate
mkdir -p "$G"
htpasswd -Bbc "$G/htpasswd" alice alicepw 2> /dev/null
rules='"secrets": {"action": "warn"}, "forbidden_paths": {"paths": ["**/*.tfstate"], "action": "deny"}'
cat > "$G/regslim.json" << EOF
{"upstreams": [{"name": "up", "url": "http://$UP", "default": true}],
 "auth": {"htpasswd": "$G/htpasswd",
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]},
 "push": {"policies": [
   {"repositories": ["scan/*"], "mode": "check-only", "rules": {$rules}},
   {"repositories": ["copy/*"], "mode": "check-only", "rules": {$rules}},
   {"repositories": ["other/*"], "mode": "check-only",
    "rules": {"secrets": {"action": "warn"}, "forbidden_paths": {"paths": ["root/.ssh/**"], "action": "deny"}}}]}}
EOF
RS_UPSTREAM="" start_regslim --config "$G/regslim.json"
H=127.0.0.1:$RS_PORT
SK=(timeout 180 skopeo)

# ------------------------------------------------------------ the image (python3 tarfile)
IMG=$G/img
"$PY" - "$IMG" << 'PY' > "$LOGS/mkimage.log" 2>&1 || fail mkimage "$(tail -n 2 "$LOGS/mkimage.log")"
import gzip, hashlib, io, json, os, random, sys, tarfile
out = sys.argv[1]
os.makedirs(out + "/blobs/sha256", exist_ok=True)
KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
       "-----END OPENSSH PRIVATE KEY-----\n").encode()
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(data)
    return "sha256:" + d, len(data)
def layer(entries, seed):
    r = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, data in entries:
            ti = tarfile.TarInfo(path); ti.mtime = 1700000000
            if data is None:
                ti.type = tarfile.DIRTYPE; t.addfile(ti); continue
            if isinstance(data, int):
                data = r.randbytes(data)
            ti.size = len(data); t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    d, n = put(gzip.compress(raw, compresslevel=1, mtime=0))
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}, \
        "sha256:" + hashlib.sha256(raw).hexdigest()
specs = [[("root", None), ("root/.ssh", None), ("root/.ssh/id_ed25519", KEY), ("app", None), ("app/a.bin", 3000000)],
         [("root/.ssh/.wh.id_ed25519", b""), ("app/b.bin", 3000000)],
         [("app/c.bin", 3000000), ("app/run", b"#!/bin/sh\necho hi\n")]]
layers, diffs = zip(*[layer(s, i) for i, s in enumerate(specs)])
cfg = {"architecture": "amd64", "os": "linux", "config": {"User": "1000"},
       "rootfs": {"type": "layers", "diff_ids": list(diffs)}}
cd, cn = put(json.dumps(cfg).encode())
man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
       "layers": list(layers)}
body = json.dumps(man).encode()
md, mn = put(body)
open(out + "/manifest.json", "wb").write(body)
open(out + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]},
          open(out + "/index.json", "w"))
PY
MAN=$IMG/manifest.json
MD=sha256:$(sha256sum < "$MAN" | cut -d' ' -f1)
mapfile -t LAYERS < <(jq -r '.layers[].digest' "$MAN")
CFG=$(jq -r .config.digest "$MAN")
blob() { echo "$IMG/blobs/sha256/${1#sha256:}"; }

token() { rs_curl -u alice:alicepw "$RS_URL/auth/token?service=regslim&scope=repository:$1:pull,push" | jq -r .token; }
scans() { metric regslim_gate_layer_scans_total "when=\"$1\""; }
# wait_scans N: until N scans at upload are done (at most 60 s)
wait_scans() {
	local i
	for ((i = 0; i < 300; i++)); do [ "$(scans upload)" -ge "$1" ] && return 0; sleep 0.2; done
	return 1
}
findings() { # findings REPO DIGEST: the report's findings, one "rule action layer path" a line
	rs_curl -u alice:alicepw "$RS_URL/regslim/v1/reports/$1/$2" |
		jq -r '.verdict, (.findings[] | "\(.rule) \(.action) \(.layer) \(.path)")'
}

# ------------------------------------------------------------ curl: monolithic and chunked uploads
TOK=$(token scan/app)
AUTH=(-H "Authorization: Bearer $TOK")
mono() { # mono DIGEST: monolithic upload into scan/app; prints the status
	rs_curl -o /dev/null -w '%{http_code}' -X POST "${AUTH[@]}" -H "Content-Type: application/octet-stream" \
		--data-binary "@$(blob "$1")" "$RS_URL/v2/scan/app/blobs/uploads/?digest=$1"
}
expect_eq "config_monolithic_201" "$(mono "$CFG")" 201
expect_eq "layer1_monolithic_201" "$(mono "${LAYERS[0]}")" 201
expect_eq "layer2_monolithic_201" "$(mono "${LAYERS[1]}")" 201
# layer 3: POST, one PATCH with the first MiB, the final PUT with the rest
L3=$(blob "${LAYERS[2]}")
head -c 1048576 "$L3" > "$G/l3.a"
tail -c +1048577 "$L3" > "$G/l3.b"
loc=$(rs_curl -s -o /dev/null -D - -X POST "${AUTH[@]}" "$RS_URL/v2/scan/app/blobs/uploads/" | tr -d '\r' | header_value Location)
loc=$(rs_curl -s -o /dev/null -D - -X PATCH "${AUTH[@]}" -H "Content-Type: application/octet-stream" \
	--data-binary "@$G/l3.a" "$RS_URL$loc" | tr -d '\r' | header_value Location)
sep='?'
case $loc in *\?*) sep='&' ;; esac
expect_eq "layer3_chunked_put_201" "$(rs_curl -o /dev/null -w '%{http_code}' -X PUT "${AUTH[@]}" \
	-H "Content-Type: application/octet-stream" --data-binary "@$G/l3.b" "$RS_URL$loc${sep}digest=${LAYERS[2]}")" 201

check "three_layers_scanned_at_upload" wait_scans 3
expect_eq "config_not_scanned" "$(scans upload)" 3
code=$(rs_curl -o "$LOGS/put1.out" -w '%{http_code}' -X PUT "${AUTH[@]}" \
	-H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary "@$MAN" "$RS_URL/v2/scan/app/manifests/v1")
expect_eq "manifest_put_201" "$code" 201
expect_eq "manifest_put_scans_nothing" "$(scans manifest) $(scans upload)" "0 3"
f1=$(findings scan/app "$MD")
expect_eq "report_names_the_deleted_key" "$(echo "$f1" | tr '\n' '|')" \
	"accepted|secrets warn 1 root/.ssh/id_ed25519|"
grep -F "push scan/app:v1 ($MD): 1 policy warning(s): [secrets] layer 1 of 3 (${LAYERS[0]}) root/.ssh/id_ed25519: OpenSSH private key" \
	"$RS_LOG" > /dev/null && pass "warning_text_as_the_inline_scan" || fail "warning_text_as_the_inline_scan" "no such warning in $RS_LOG"

# ------------------------------------------------------------ skopeo: other repository, other tag
skpush() { "${SK[@]}" copy --dest-tls-verify=false --dest-creds alice:alicepw "oci:$IMG:latest" "docker://$H/$1" > "$LOGS/push-${1//[\/:]/_}.log" 2>&1; }
check "skopeo_push_second_repository" skpush copy/app:v1
check "skopeo_push_second_tag" skpush copy/app:v2
expect_eq "same_layers_not_scanned_again" "$(scans upload) $(scans manifest)" "3 0"
expect_eq "second_repository_same_findings" "$(findings copy/app "$MD")" "$f1"

# ------------------------------------------------------------ after a restart: stored results
restart_regslim
check "skopeo_push_after_restart" skpush scan/again:v1
expect_eq "no_scan_after_restart" "$(scans upload) $(scans manifest)" "0 0"
expect_eq "after_restart_same_findings" "$(findings scan/again "$MD")" "$f1"

# ------------------------------------------------------------ other scan parameters
if skpush other/app:v1; then fail "other_policy_denies" "the push was accepted"; else
	grep -q "forbidden_paths.*root/.ssh/id_ed25519" "$LOGS/push-other_app_v1.log" &&
		pass "other_policy_denies" || fail "other_policy_denies" "$(tail -n 1 "$LOGS/push-other_app_v1.log")"
fi
expect_eq "other_parameters_scanned_once_more" "$(($(scans upload) + $(scans manifest)))" 3

finish
