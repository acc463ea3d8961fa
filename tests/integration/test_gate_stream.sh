#!/usr/bin/env bash
# test_gate_stream.sh: the push gate scans a layer while its upload arrives (issue 16): each PATCH
# chunk (and a monolithic body) goes through the layer scan as the store takes it, and the final
# PUT, once the digest verified, keeps the result, so the scan is done when the manifest PUT comes.
# regslim with a check-only push policy in front of a real docker-registry; one gzip layer of a
# few MB holding a private key, uploaded with curl:
#  - in chunks (1, 9, 90 and 900 bytes: cuts inside the gzip header and the first tar header, then
#    two large PATCHes): after each PATCH, regslim_gate_layer_scan_streamed_bytes_total says the
#    scan has taken every byte so far (once the first two tell gzip), and no scan has a result yet; the final PUT's 201 comes
#    with the result stored (a layer scan counted before any wait), the log says so before the
#    manifest PUT's request line, and the report names the key as the inline scan words it;
#  - an upload of the same bytes under a wrong digest: 400, no scan result kept from it;
#  - an upload resumed after a restart (the first chunk arrived in the old process): no stream,
#    the layer is scanned once complete (by a worker) with the same findings;
#  - a client faster than the scan (one 40 MB monolithic body on loopback, its key at the end):
#    what the 2 MiB ring cannot take waits in a spill file (regslim_gate_layer_scan_spilled_bytes_total
#    grows), the report still names the key, and no scratch file is left in the data directory.
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
 "log": {"level": "debug"},
 "auth": {"htpasswd": "$G/htpasswd",
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]},
 "push": {"policies": [
   {"repositories": ["stream/*"], "mode": "check-only", "rules": {$rules}},
   {"repositories": ["resume/*"], "mode": "check-only",
    "rules": {"secrets": {"action": "warn"}, "forbidden_paths": {"paths": ["**/*.bak"], "action": "deny"}}}]}}
EOF
RS_UPSTREAM="" start_regslim --config "$G/regslim.json"

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
r = random.Random(7)
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    for path, data in [("app", None), ("app/a.bin", r.randbytes(3000000)), ("root/.ssh/id_ed25519", KEY),
                       ("app/b.bin", r.randbytes(2000000))]:
        ti = tarfile.TarInfo(path); ti.mtime = 1700000000
        if data is None:
            ti.type = tarfile.DIRTYPE; t.addfile(ti); continue
        ti.size = len(data); t.addfile(ti, io.BytesIO(data))
raw = buf.getvalue()
ld, ln = put(gzip.compress(raw, compresslevel=1, mtime=0))
cfg = {"architecture": "amd64", "os": "linux", "config": {"User": "1000"},
       "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}
cd, cn = put(json.dumps(cfg).encode())
man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ln}]}
open(out + "/manifest.json", "wb").write(json.dumps(man).encode())
PY
MAN=$IMG/manifest.json
MD=sha256:$(sha256sum < "$MAN" | cut -d' ' -f1)
LAYER=$(jq -r '.layers[0].digest' "$MAN")
CFG=$(jq -r .config.digest "$MAN")
blob() { echo "$IMG/blobs/sha256/${1#sha256:}"; }
L=$(blob "$LAYER")
LSIZE=$(stat -c %s "$L")

token() { rs_curl -u alice:alicepw "$RS_URL/auth/token?service=regslim&scope=repository:$1:pull,push" | jq -r .token; }
scans() { metric regslim_gate_layer_scans_total "when=\"$1\""; }
streamed() { metric regslim_gate_layer_scan_streamed_bytes_total; }
findings() { # findings REPO DIGEST: the report's findings, one "rule action layer path" a line
	rs_curl -u alice:alicepw "$RS_URL/regslim/v1/reports/$1/$2" |
		jq -r '.verdict, (.findings[] | "\(.rule) \(.action) \(.layer) \(.path)")'
}
# piece FROM LEN: bytes [FROM, FROM+LEN) of the layer into $G/piece
piece() { tail -c "+$(($1 + 1))" "$L" | head -c "$2" > "$G/piece"; }

# ------------------------------------------------------------ chunked: scanned as it arrives
TOK=$(token stream/app)
AUTH=(-H "Authorization: Bearer $TOK")
rs_curl -o /dev/null -X POST "${AUTH[@]}" -H "Content-Type: application/octet-stream" --data-binary "@$(blob "$CFG")" \
	"$RS_URL/v2/stream/app/blobs/uploads/?digest=$CFG"
expect_eq "config_is_no_layer_scan" "$(streamed) $(scans upload)" "0 0"
loc=$(upload_start stream/app)
at=0 ok=1
half=$(((LSIZE - 1000) / 2))
for n in 1 9 90 900 "$half" "$((LSIZE - 1000 - half))"; do
	piece "$at" "$n"
	loc=$(upload_patch "$loc" "$G/piece")
	at=$((at + n))
	want=$at
	[ "$at" -ge 2 ] || want=0 # one byte does not tell gzip yet: held until the next
	[ "$(streamed)" = "$want" ] || { ok=0; fail "scanned_as_each_chunk_arrives" "after $at bytes the scan took $(streamed)"; }
done
[ $ok = 0 ] || pass "scanned_as_each_chunk_arrives"
expect_eq "no_result_before_the_digest_verified" "$(scans upload) $(scans manifest)" "0 0"
expect_eq "final_put_201" "$(upload_finish "$loc" "$LAYER")" 201
# no wait: the manifest PUT joins the scan that took the bytes as they came (it scans nothing)
code=$(rs_curl -o "$LOGS/put1.out" -w '%{http_code}' -X PUT "${AUTH[@]}" \
	-H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary "@$MAN" "$RS_URL/v2/stream/app/manifests/v1")
expect_eq "manifest_put_201" "$code" 201
expect_eq "manifest_put_scans_nothing" "$(scans upload) $(scans manifest)" "1 0"
scan_line=$(grep -n "gate: layer $LAYER scanned as its upload arrived" "$RS_LOG" | head -n 1 | cut -d: -f1)
put_line=$(grep -n '"method":"PUT"' "$RS_LOG" | grep -F '/manifests/v1' | head -n 1 | cut -d: -f1)
expect "scan_logged_before_the_manifest_put" "[ -n '$scan_line' ] && [ -n '$put_line' ] && [ '$scan_line' -lt '$put_line' ]" \
	"scan line '${scan_line:-none}', manifest PUT line '${put_line:-none}' in $RS_LOG"
f1=$(findings stream/app "$MD")
expect_eq "report_names_the_key" "$(echo "$f1" | tr '\n' '|')" "accepted|secrets warn 1 root/.ssh/id_ed25519|"
grep -F "push stream/app:v1 ($MD): 1 policy warning(s): [secrets] layer 1 of 1 ($LAYER) root/.ssh/id_ed25519: OpenSSH private key" \
	"$RS_LOG" > /dev/null && pass "warning_text_as_the_inline_scan" || fail "warning_text_as_the_inline_scan" "no such warning in $RS_LOG"

# ------------------------------------------------------------ a wrong digest keeps nothing
TOK=$(token resume/app)
AUTH=(-H "Authorization: Bearer $TOK")
s0=$(streamed)
loc=$(upload_start resume/app)
loc=$(upload_patch "$loc" "$L")
expect_eq "wrong_digest_scanned_as_it_arrived" "$(($(streamed) - s0))" "$LSIZE"
wrong=sha256:0000000000000000000000000000000000000000000000000000000000000000
expect_eq "wrong_digest_400" "$(upload_finish "$loc" "$wrong")" 400
sleep 1
expect_eq "wrong_digest_keeps_no_result" "$(scans upload) $(scans manifest)" "1 0"

# ------------------------------------------------------------ resumed after a restart: scanned once complete
loc=$(upload_start resume/app)
piece 0 100000
loc=$(upload_patch "$loc" "$G/piece")
restart_regslim
TOK=$(token resume/app)
AUTH=(-H "Authorization: Bearer $TOK")
piece 100000 "$LSIZE"
loc=$(upload_patch "$loc" "$G/piece")
expect_eq "resumed_upload_not_streamed" "$(streamed)" 0
expect_eq "resumed_final_put_201" "$(upload_finish "$loc" "$LAYER")" 201
wait_upload_scan() {
	local i
	for ((i = 0; i < 300; i++)); do [ "$(scans upload)" -ge 1 ] && return 0; sleep 0.2; done
	return 1
}
check "resumed_upload_scanned_once_complete" wait_upload_scan
rs_curl -o /dev/null -X POST "${AUTH[@]}" -H "Content-Type: application/octet-stream" --data-binary "@$(blob "$CFG")" \
	"$RS_URL/v2/resume/app/blobs/uploads/?digest=$CFG"
code=$(rs_curl -o "$LOGS/put2.out" -w '%{http_code}' -X PUT "${AUTH[@]}" \
	-H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary "@$MAN" "$RS_URL/v2/resume/app/manifests/v1")
expect_eq "resumed_manifest_put_201" "$code" 201
expect_eq "resumed_same_findings" "$(findings resume/app "$MD")" "$f1"
expect_eq "resumed_scanned_once" "$(scans upload) $(scans manifest)" "1 0"

# ------------------------------------------------------------ a client faster than the scan: the spill
"$PY" - "$G/fast" << 'PY' > "$LOGS/mkfast.log" 2>&1 || fail mkfast "$(tail -n 2 "$LOGS/mkfast.log")"
import gzip, hashlib, io, json, os, random, sys, tarfile
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
       "-----END OPENSSH PRIVATE KEY-----\n").encode()
r = random.Random(11)
words = [bytes(r.choices(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=r.randint(2, 12)))
         for _ in range(300)]
text = b" ".join(r.choices(words, k=6000000))[:40000000]
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    for path, data in [("srv/words.txt", text), ("srv/keys/deploy", KEY)]:
        ti = tarfile.TarInfo(path); ti.mtime = 1700000000; ti.size = len(data); t.addfile(ti, io.BytesIO(data))
gz = gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)
open(out + "/layer", "wb").write(gz)
open(out + "/digest", "w").write("sha256:" + hashlib.sha256(gz).hexdigest())
PY
FAST=$(cat "$G/fast/digest")
TOK=$(token stream/fast)
AUTH=(-H "Authorization: Bearer $TOK")
sp0=$(metric regslim_gate_layer_scan_spilled_bytes_total)
code=$(rs_curl -o /dev/null -w '%{http_code}' -X POST "${AUTH[@]}" -H "Content-Type: application/octet-stream" \
	--data-binary "@$G/fast/layer" "$RS_URL/v2/stream/fast/blobs/uploads/?digest=$FAST")
expect_eq "fast_upload_201" "$code" 201
sp1=$(metric regslim_gate_layer_scan_spilled_bytes_total)
echo "# the fast upload: $((sp1 - sp0)) of $(stat -c %s "$G/fast/layer") bytes waited in the spill"
expect "fast_upload_spilled_what_the_ring_could_not_take" "[ '$sp1' -gt '$sp0' ]" \
	"spilled bytes $sp0 -> $sp1 for a $(stat -c %s "$G/fast/layer") byte body"
jq --arg d "$FAST" --argjson n "$(stat -c %s "$G/fast/layer")" '.layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": $d, "size": $n}]' \
	"$MAN" > "$G/fast/manifest.json"
rs_curl -o /dev/null -X POST "${AUTH[@]}" -H "Content-Type: application/octet-stream" --data-binary "@$(blob "$CFG")" \
	"$RS_URL/v2/stream/fast/blobs/uploads/?digest=$CFG"
code=$(rs_curl -o "$LOGS/put3.out" -w '%{http_code}' -X PUT "${AUTH[@]}" \
	-H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary "@$G/fast/manifest.json" \
	"$RS_URL/v2/stream/fast/manifests/v1")
expect_eq "fast_manifest_put_201" "$code" 201
FMD=sha256:$(sha256sum < "$G/fast/manifest.json" | cut -d' ' -f1)
expect_eq "fast_report_names_the_key_behind_the_spill" "$(findings stream/fast "$FMD" | tr '\n' '|')" \
	"accepted|secrets warn 1 srv/keys/deploy|"
left=$(find "$RS_DATA/tmp" -mindepth 1 2> /dev/null | wc -l)
expect "no_spill_file_left" "[ -d '$RS_DATA/tmp' ] && [ '$left' = 0 ]" "$left entries in $RS_DATA/tmp"

finish
