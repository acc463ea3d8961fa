#!/usr/bin/env bash
# test_gate.sh: the push gate (issue 5): skopeo, podman and docker push through regslim into a
# real docker-registry upstream with basic auth, pushed with regslim's OWN credentials. A good
# image is accepted and lands optimized upstream (pulled from the upstream directly and unpacked
# with umoci: the tree equals the original minus the stripped paths); images that plant a private
# key (also when a later layer deletes it), an AWS key, run as root or exceed the size limit are
# refused with 403 DENIED naming the violation, layer and path; warn rules let the push through
# and show in the log and /metrics; the three modes; wrong credentials, a user without push
# permission and an upstream that refuses regslim's credentials.
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start
upstream_also auth
UP=$REG_AUTH

G=$REGSLIM_LAB/gate
mkdir -p "$G"
htpasswd -Bbc "$G/htpasswd" alice alicepw 2> /dev/null
htpasswd -Bb "$G/htpasswd" bob bobpw 2> /dev/null
export RS_UP_PASS=$LAB_PASS
cat > "$G/regslim.json" << EOF
{"upstreams": [{"name": "up", "url": "http://$UP", "default": true,
                "auth": {"username": "$LAB_USER", "password_env": "RS_UP_PASS"}}],
 "auth": {"htpasswd": "$G/htpasswd",
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]},
                  {"repository": "*", "users": ["bob"], "actions": ["pull"]}]},
 "push": {"policies": [
   {"repositories": ["based/*"], "mode": "check-only",
    "rules": {"allowed_bases": {"images": ["up/base/tiny:1"], "action": "deny"}}},
   {"repositories": ["pulled/*"], "mode": "check-only", "enforce_on_pull": true,
    "rules": {"secrets": {"action": "deny"}}},
   {"repositories": ["pulloff/*"], "mode": "check-only",
    "rules": {"secrets": {"action": "deny"}}},
   {"repositories": ["strict/*"], "mode": "optimize-and-push",
    "rules": {"non_root": {"action": "deny"},
              "secrets": {"action": "deny"},
              "max_compressed_size": {"limit": "1MiB", "action": "deny"},
              "forbidden_paths": {"paths": ["etc/shadow-*"], "action": "deny"},
              "required_labels": {"labels": ["org.opencontainers.image.source"], "action": "warn"},
              "max_layers": {"limit": 1, "action": "warn"}}},
   {"repositories": ["both/*"], "mode": "push-original-and-optimized", "optimized_tag_suffix": "-slim",
    "rules": {"secrets": {"action": "deny"}}},
   {"repositories": ["check/*"], "mode": "check-only",
    "rules": {"secrets": {"action": "warn"}}}]}}
EOF
RS_UPSTREAM="" start_regslim --config "$G/regslim.json"
H=127.0.0.1:$RS_PORT
SK=(timeout 180 skopeo)
UPC=(--creds "$LAB_USER:$LAB_PASS" --tls-verify=false)

# ------------------------------------------------------------ test images (python3 tarfile)
# mkimage DIR USER SEED LAYERSPEC...: an OCI layout DIR:latest with gzip layers; each LAYERSPEC is
# a python literal list of (path, content-or-None-for-dir, mode) or ("wh", path) for a whiteout.
mkimage() {
	python3 - "$@" << 'PY'
import gzip, hashlib, io, json, os, sys, tarfile, ast
out, user, seed = sys.argv[1], sys.argv[2], sys.argv[3]
specs = [eval(s, {}) for s in sys.argv[4:]]  # test input written by this script
os.makedirs(out + "/blobs/sha256", exist_ok=True)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(data)
    return "sha256:" + d, len(data)
layers, diffs = [], []
for spec in specs:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in spec:
            if e[0] == "wh":
                d, b = os.path.split(e[1])
                ti = tarfile.TarInfo(os.path.join(d, ".wh." + b)); ti.mtime = 1700000000
                t.addfile(ti, io.BytesIO(b""))
                continue
            path, content, mode = e
            ti = tarfile.TarInfo(path); ti.mtime = 1700000000; ti.mode = mode
            if content is None:
                ti.type = tarfile.DIRTYPE; t.addfile(ti)
            else:
                data = content.encode() if isinstance(content, str) else content
                if isinstance(content, str) and content.startswith("RANDOM:"):
                    import random
                    r = random.Random(seed); data = bytes(r.getrandbits(8) for _ in range(int(content[7:])))
                ti.size = len(data); t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
    gz = gzip.compress(raw, mtime=0)
    d, n = put(gz)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
cfg = {"architecture": "amd64", "os": "linux",
       "config": {"User": user, "Cmd": ["/app/run"], "Labels": {"seed": seed}},
       "rootfs": {"type": "layers", "diff_ids": diffs},
       "history": [{"created_by": "layer %d" % i} for i in range(len(diffs))]}
cd, cn = put(json.dumps(cfg).encode())
man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
       "layers": layers}
md, mn = put(json.dumps(man).encode())
open(out + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]},
          open(out + "/index.json", "w"))
print(md)
PY
}
KEY='-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n'
BASE_L="[('app', None, 0o755), ('app/run', '#!/bin/sh\\necho hi\\n', 0o755), ('usr', None, 0o755), ('usr/share', None, 0o755), ('usr/share/doc', None, 0o755), ('usr/share/doc/app', None, 0o755), ('usr/share/doc/app/README', 'docs ' * 200, 0o644), ('var', None, 0o755), ('var/cache', None, 0o755), ('var/cache/apt', None, 0o755), ('var/cache/apt/pkgcache.bin', 'cache' * 300, 0o644)]"
mk() { mkimage "$G/img/$1" "${@:2}" > "$G/img/$1.digest" 2> "$LOGS/mkimage-$1.log" || fail "mkimage_$1" "$(tail -n 2 "$LOGS/mkimage-$1.log")"; }
mkdir -p "$G/img"
mk good 1000 good "$BASE_L" "[('app/data.txt', 'good image data\\n', 0o644)]"
mk good2 1000 good2 "$BASE_L" "[('app/data.txt', 'second good image\\n', 0o644)]"
mk good3 1000 good3 "$BASE_L" "[('app/data.txt', 'third good image\\n', 0o644)]"
mk gooddocker 1000 gooddocker "$BASE_L" "[('app/data.txt', 'docker image\\n', 0o644)]"
mk deletedkey 1000 deletedkey "[('root', None, 0o700), ('root/.ssh', None, 0o700), ('root/.ssh/id_ed25519', '''$(printf '%b' "$KEY")''', 0o600), ('app', None, 0o755)]" "[('wh', 'root/.ssh/id_ed25519'), ('app/x', 'x', 0o644)]"
mk awskey 1000 awskey "[('app', None, 0o755), ('app/settings.env', 'AWS_ACCESS_KEY_ID=AKIAZ7QW3RT5YU8IO2PL\\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w\\n', 0o644)]"
mk rootuser "" rootuser "[('app', None, 0o755), ('app/run', 'root image', 0o755)]"
mk toobig 1000 toobig "[('app', None, 0o755), ('app/blob.bin', 'RANDOM:1500000', 0o644)]"
mk shadow 1000 shadow "[('etc', None, 0o755), ('etc/shadow-backup', 'root:x:::', 0o600)]"

push() { # push IMAGE DEST [creds] -> skopeo output in $LOGS/push-IMAGE.log, status
	"${SK[@]}" copy --dest-tls-verify=false --dest-creds "${3:-alice:alicepw}" "oci:$G/img/$1:latest" "docker://$H/$2" \
		> "$LOGS/push-$1.log" 2>&1
}
up_manifest() { "${SK[@]}" inspect --raw "${UPC[@]}" "docker://$UP/$1" 2> /dev/null; }

# ------------------------------------------------------------ accepted, optimized upstream
if push good strict/good:v1; then pass skopeo_push_good_accepted; else fail skopeo_push_good_accepted "$(tail -n 2 "$LOGS/push-good.log")"; fi
m=$(up_manifest strict/good:v1)
expect_eq "upstream_has_optimized_zstd" "$(echo "$m" | jq -r '[.layers[].mediaType] | unique | join(",")')" \
	"application/vnd.oci.image.layer.v1.tar+zstd"
expect_eq "upstream_optimized_names_source" "$(echo "$m" | jq -r '.annotations["io.regslim.source.digest"]')" \
	"$(cat "$G/img/good.digest")"
# the optimizer strips docs and apt caches; everything else is identical
expect_tree_minus upstream_tree_equals_original_minus_stripped "oci:$G/img/good:latest" "docker://$UP/strict/good:v1" \
	'usr/share/doc/app(/README)?|var/cache/apt(/pkgcache.bin)?' 'usr/share/doc/app/README|var/cache/apt/pkgcache.bin' \
	"$G/list" --src-creds "$LAB_USER:$LAB_PASS"
expect "stripped_paths_gone" "! grep -q -E '^(usr/share/doc/app/README|var/cache/apt/pkgcache.bin)[[:space:]]' '$G/list.opt'" \
	"$(grep -E '^(usr/share/doc|var/cache)' "$G/list.opt" | head -n 3)"
expect "kept_files_present" "grep -q '^app/data.txt' '$G/list.opt' && grep -q '^app/run' '$G/list.opt'" "app files missing"
expect "warn_rules_logged" "grep -q 'policy warning' '$RS_LOG' && grep -q 'lacks label org.opencontainers.image.source' '$RS_LOG'" \
	"no warning line in $RS_LOG"
expect_ge "warn_rules_counted" \
	"$(rs_curl "$RS_URL/metrics" | awk '/^regslim_gate_findings_total\{rule="required_labels",action="warn"\}/ {print $2}')" 1
expect_ge "accepted_pushes_counted" \
	"$(rs_curl "$RS_URL/metrics" | awk '/^regslim_gate_pushes_total\{result="accepted"\}/ {print $2}')" 1
expect_eq "local_tag_serves_pushed_original" \
	"sha256:$("${SK[@]}" inspect --raw --tls-verify=false --creds alice:alicepw "docker://$H/strict/good:v1" | sha256sum | cut -d' ' -f1)" \
	"$(cat "$G/img/good.digest")"

# ------------------------------------------------------------ refused
refused() { # refused NAME IMAGE DEST PATTERN...: the push fails, the message has every pattern, nothing upstream
	local name=$1 img=$2 dest=$3 p out
	shift 3
	if push "$img" "$dest"; then fail "$name" "push was accepted"; return; fi
	out=$(cat "$LOGS/push-$img.log")
	for p in denied "$@"; do
		echo "$out" | grep -qF -- "$p" || { fail "$name" "message lacks '$p': $(tail -n 1 "$LOGS/push-$img.log")"; return; }
	done
	if up_manifest "$dest" > /dev/null; then fail "$name" "$dest reached the upstream"; return; fi
	pass "$name"
}
dk=$(jq -r '.layers[0].digest' "$G/img/deletedkey/blobs/sha256/$(cut -d: -f2 < "$G/img/deletedkey.digest")")
refused "private_key_deleted_later_refused" deletedkey strict/deletedkey:v1 \
	"OpenSSH private key" "root/.ssh/id_ed25519" "layer 1 of 2 ($dk)" "[secrets]"
refused "aws_key_refused" awskey strict/awskey:v1 "AWS access key id" "app/settings.env"
refused "root_user_refused" rootuser strict/rootuser:v1 "runs as root" "[non_root]"
refused "size_limit_refused" toobig strict/toobig:v1 "bytes compressed, the limit is 1048576" "[max_compressed_size]"
refused "forbidden_path_refused" shadow strict/shadow:v1 "etc/shadow-backup: forbidden path" "[forbidden_paths]"
body=$(rs_curl -u alice:alicepw -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
	--data-binary "@$G/img/awskey/blobs/sha256/$(cut -d: -f2 < "$G/img/awskey.digest")" "$RS_URL/v2/strict/awskey/manifests/v2" -w '\n%{http_code}')
expect_eq "denied_is_403_registry_error" "$(echo "$body" | tail -n 1) $(echo "$body" | head -n 1 | jq -r '.errors[0].code')" "403 DENIED"
expect_ge "denied_pushes_counted" \
	"$(rs_curl "$RS_URL/metrics" | awk '/^regslim_gate_pushes_total\{result="denied"\}/ {print $2}')" 5

# ------------------------------------------------------------ stored reports
# Every gated push leaves a JSON report at /regslim/v1/reports/<name>/<digest>: verdict, each
# finding with its rule, action, layer and path (warnings included), what went upstream and the
# optimizer's report; it is also kept under the optimized digest that went upstream.
report() { rs_curl -u bob:bobpw "$RS_URL/regslim/v1/reports/$1"; }
gd=$(cat "$G/img/good.digest")
r=$(report "strict/good/$gd")
expect_eq "report_accepted_verdict" "$(echo "$r" | jq -r '[.kind, .verdict, .mode, .repository, .reference, .digest] | join(" ")')" \
	"push-policy accepted optimize-and-push strict/good v1 $gd"
expect_eq "report_lists_warnings" \
	"$(echo "$r" | jq -r '[.warnings, .denies, ([.findings[] | select(.action == "warn") | .rule] | sort | join(","))] | join(" ")')" \
	"2 0 max_layers,required_labels"
opt=$(echo "$r" | jq -r '.upstream[] | select(.optimized) | .digest')
expect_eq "report_names_upstream_digest" "$opt" "sha256:$(up_manifest strict/good:v1 | sha256sum | cut -d' ' -f1)"
expect "report_has_optimizer_report" "echo '$r' | jq -e '.optimization.totals.size_after > 0 and (.optimization.images | length) == 1' > /dev/null" \
	"$(echo "$r" | jq -c .optimization | head -c 200)"
expect_eq "report_under_optimized_digest" "$(report "strict/good/$opt" | jq -r .digest)" "$gd"
ad=$(cat "$G/img/awskey.digest")
al=$(jq -r '.layers[0].digest' "$G/img/awskey/blobs/sha256/$(cut -d: -f2 < "$G/img/awskey.digest")")
r=$(report "strict/awskey/$ad")
expect_eq "report_denied_finding_located" \
	"$(echo "$r" | jq -r '[.verdict, (.findings[] | select(.rule == "secrets") | .action, .layer, .layer_digest, .path)] | join(" ")')" \
	"denied deny 1 $al app/settings.env"
expect "denied_message_points_at_report" "grep -qF '(report: /regslim/v1/reports/strict/awskey/' '$LOGS/push-awskey.log'" \
	"$(tail -n 1 "$LOGS/push-awskey.log")"
expect_eq "denied_manifest_not_kept" \
	"$(rs_curl -u alice:alicepw -o /dev/null -w '%{http_code}' "$RS_URL/v2/strict/awskey/manifests/$ad")" "404"
expect_eq "report_unknown_digest_404" \
	"$(rs_curl -u bob:bobpw -o /dev/null -w '%{http_code}' "$RS_URL/regslim/v1/reports/strict/good/sha256:$(printf '%064d' 0)")" "404"
expect_eq "report_name_checked" \
	"$(rs_curl -u bob:bobpw -o /dev/null -w '%{http_code}' --path-as-is "$RS_URL/regslim/v1/reports/strict/../../gate/$gd")" "400"
expect_eq "report_wrong_credentials_401" \
	"$(rs_curl -u alice:wrong -o /dev/null -w '%{http_code}' "$RS_URL/regslim/v1/reports/strict/good/$gd")" "401"

# the same image to a second tag: the policy check is remembered, not run again
if push good strict/good:v2; then pass second_tag_accepted; else fail second_tag_accepted "$(tail -n 2 "$LOGS/push-good.log")"; fi
expect "second_tag_check_remembered" "grep -q 'push strict/good:v2 (.*policy check remembered' '$RS_LOG'" \
	"no 'remembered' line for strict/good:v2"
expect_eq "second_tag_report_lists_warnings" "$(report "strict/good/$gd" | jq -r '[.reference, .warnings] | join(" ")')" "v2 2"

# ------------------------------------------------------------ modes
if push good2 both/good2:v1; then pass push_both_accepted; else fail push_both_accepted "$(tail -n 2 "$LOGS/push-good2.log")"; fi
expect_eq "push_both_original_at_tag" "sha256:$(up_manifest both/good2:v1 | sha256sum | cut -d' ' -f1)" "$(cat "$G/img/good2.digest")"
expect_eq "push_both_optimized_at_suffix" \
	"$(up_manifest both/good2:v1-slim | jq -r '.annotations["io.regslim.source.digest"]')" "$(cat "$G/img/good2.digest")"
refused "push_both_secret_refused" awskey both/awskey:v1 "AWS access key id"

if client_usable podman; then
	if "${SK[@]}" copy --dest-tls-verify=false "oci:$G/img/good3:latest" "docker://$REG_PLAIN/src/good3:v1" > "$LOGS/podman-load.log" 2>&1 &&
		podman_pull -q --tls-verify=false "$REG_PLAIN/src/good3:v1" >> "$LOGS/podman-load.log" 2>&1 &&
		lpodman push --tls-verify=false --creds alice:alicepw --digestfile "$G/podman.digest" \
			"$REG_PLAIN/src/good3:v1" "docker://$H/check/good3:v1" > "$LOGS/podman-push.log" 2>&1; then
		pass podman_push_check_only
		expect_eq "check_only_original_upstream" "sha256:$(up_manifest check/good3:v1 | sha256sum | cut -d' ' -f1)" \
			"$(cat "$G/podman.digest")"
	else
		fail podman_push_check_only "$(tail -n 3 "$LOGS/podman-load.log" "$LOGS/podman-push.log" | tr '\n' ' ')"
	fi
else
	skip podman_push_check_only "$RS_CLIENT_WHY"
fi
# check-only with a warn-only secret rule: accepted, warned
if push awskey check/awskey:v1; then pass check_only_warn_secret_accepted; else fail check_only_warn_secret_accepted "$(tail -n 1 "$LOGS/push-awskey.log")"; fi
expect "check_only_secret_warning_logged" "grep -q 'check/awskey:v1.*AWS access key id' '$RS_LOG'" "no warning in log"

if client_usable docker; then
	if "${SK[@]}" copy --dest-tls-verify=false "oci:$G/img/gooddocker:latest" "docker://$REG_PLAIN/src/gooddocker:v1" > "$LOGS/docker-load.log" 2>&1 &&
		docker_pull "$REG_PLAIN/src/gooddocker:v1" >> "$LOGS/docker-load.log" 2>&1 &&
		ldocker tag "$REG_PLAIN/src/gooddocker:v1" "$H/strict/dgood:v1" >> "$LOGS/docker-load.log" 2>&1 &&
		ldocker login -u alice -p alicepw "$H" > "$LOGS/docker-login.log" 2>&1 &&
		timeout 300 env DOCKER_CONFIG="$DOCKER_DIR/client-config" /usr/bin/docker -H "unix://$DOCKER_SOCK" \
			push "$H/strict/dgood:v1" > "$LOGS/docker-push.log" 2>&1; then
		pass docker_push_good
		expect_eq "docker_push_optimized_upstream" \
			"$(up_manifest strict/dgood:v1 | jq -r '[.layers[].mediaType] | unique | join(",")')" \
			"application/vnd.oci.image.layer.v1.tar+zstd"
	else
		fail docker_push_good "$(tail -n 3 "$LOGS/docker-load.log" "$LOGS/docker-login.log" "$LOGS/docker-push.log" | tr '\n' ' ')"
	fi
else
	skip docker_push_good "$RS_CLIENT_WHY"
fi

# ------------------------------------------------------------ credentials
if push good3 strict/good3:wrong alice:nope; then fail wrong_credentials_refused "accepted"; else
	grep -qi 'unauthorized\|invalid username' "$LOGS/push-good3.log" && pass wrong_credentials_refused ||
		fail wrong_credentials_refused "$(tail -n 1 "$LOGS/push-good3.log")"; fi
if push good3 strict/good3:bob bob:bobpw; then fail no_push_permission_refused "accepted"; else
	grep -qi 'denied' "$LOGS/push-good3.log" && pass no_push_permission_refused ||
		fail no_push_permission_refused "$(tail -n 1 "$LOGS/push-good3.log")"; fi
# an upstream that refuses regslim's own credentials: 502 naming the upstream failure, no local tag
sed "s/\"RS_UP_PASS\"/\"RS_UP_BAD\"/" "$G/regslim.json" > "$G/bad.json"
export RS_UP_BAD=wrongpass
if regslim_spawn bad $((LAB_PORT_BASE + 51)) "" "$REGSLIM_LAB/rs-bad" --config "$G/bad.json" 2> "$LOGS/bad.err"; then
	# curl, not a client: a client's blob HEAD would be asked of the upstream too (docs/push.md)
	B=http://127.0.0.1:$((LAB_PORT_BASE + 51))
	M=$G/img/good3/blobs/sha256/$(cut -d: -f2 < "$G/img/good3.digest")
	for d in $(jq -r '.config.digest, .layers[].digest' "$M"); do
		rs_curl -o /dev/null -u alice:alicepw -X POST -H "Content-Type: application/octet-stream" \
			--data-binary "@$G/img/good3/blobs/sha256/${d#sha256:}" "$B/v2/check/good3/blobs/uploads/?digest=$d"
	done
	out=$(rs_curl -u alice:alicepw -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
		--data-binary "@$M" "$B/v2/check/good3/manifests/v9" -w '\n%{http_code}')
	expect_eq "upstream_refusal_502" "$(echo "$out" | tail -n 1) $(echo "$out" | head -n 1 | jq -r '.errors[0].code')" "502 UNAVAILABLE"
	echo "$out" | head -n 1 | grep "forwarding to the upstream failed: upstream up: .*401" > /dev/null &&
		pass upstream_refusal_is_reported || fail upstream_refusal_is_reported "$(echo "$out" | head -n 1)"
	expect_eq "upstream_refusal_sets_no_local_tag" "$(find "$REGSLIM_LAB/rs-bad/push/tags" -name 'v9.json' 2> /dev/null)" ""
	lab_stop regslim-bad 15
else
	fail upstream_refusal_is_reported "$(head -n 2 "$LOGS/bad.err")"
fi
# ------------------------------------------------------------ allowed base by image reference
# base/tiny:1 in the upstream is the approved base; onbase = tiny's layers + one more layer.
onbase() { # onbase SRC_LAYOUT OUT: an OCI layout OUT:latest = SRC's image plus one gzip layer
	python3 - "$@" << 'PY'
import gzip, hashlib, io, json, os, shutil, sys, tarfile
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out + "/blobs/sha256", exist_ok=True)
def blob(d): return open(f"{src}/blobs/sha256/{d.split(':')[1]}", "rb").read()
def put(data):
    d = hashlib.sha256(data).hexdigest(); open(f"{out}/blobs/sha256/{d}", "wb").write(data); return "sha256:" + d, len(data)
idx = json.load(open(src + "/index.json"))
m = json.loads(blob(idx["manifests"][0]["digest"]))
if "manifests" in m:  # an index: take linux/amd64
    m = json.loads(blob([x for x in m["manifests"] if x.get("platform", {}).get("architecture") == "amd64"][0]["digest"]))
cfg = json.loads(blob(m["config"]["digest"]))
for l in m["layers"]: put(blob(l["digest"]))
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    ti = tarfile.TarInfo("onbase.txt"); data = b"built on the approved base\n"; ti.size = len(data); ti.mtime = 1700000000
    t.addfile(ti, io.BytesIO(data))
raw = buf.getvalue(); d, n = put(gzip.compress(raw, mtime=0))
m["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append("sha256:" + hashlib.sha256(raw).hexdigest())
cfg.setdefault("config", {})["User"] = "1000"
cd, cn = put(json.dumps(cfg).encode())
m["config"] = {"mediaType": m["config"]["mediaType"], "digest": cd, "size": cn}
md, mn = put(json.dumps(m).encode())
open(out + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": m.get("mediaType", "application/vnd.oci.image.manifest.v1+json"),
           "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, open(out + "/index.json", "w"))
PY
}
TINY=$REGSLIM_LAB/fixtures/oci/tiny
if "${SK[@]}" copy --dest-creds "$LAB_USER:$LAB_PASS" --dest-tls-verify=false "oci:$TINY:latest" "docker://$UP/base/tiny:1" \
	> "$LOGS/base-copy.log" 2>&1 && onbase "$TINY" "$G/img/onbase" > "$LOGS/onbase.log" 2>&1; then
	if push onbase based/app:1; then pass approved_base_reference_accepted; else
		fail approved_base_reference_accepted "$(tail -n 2 "$LOGS/push-onbase.log")"; fi
	if push good based/other:1; then fail other_base_denied "accepted"; else
		grep -q "allowed_bases.*not built on an allowed base" "$LOGS/push-good.log" && pass other_base_denied ||
			fail other_base_denied "$(tail -n 1 "$LOGS/push-good.log")"; fi
	expect "approved_base_resolution_cached" "[ \"\$(grep -c 'approved base up/base/tiny:1' '$RS_LOG')\" = 1 ]" \
		"$(grep -c 'approved base up/base/tiny:1' "$RS_LOG") resolutions logged"
else
	fail approved_base_reference_accepted "setup: $(tail -n 2 "$LOGS/base-copy.log" "$LOGS/onbase.log")"
fi

# ------------------------------------------------------------ policy on pull (enforce_on_pull)
for x in "deletedkey pulled/keyed:1" "deletedkey pulloff/keyed:1" "good2 pulled/clean:1"; do
	set -- $x
	"${SK[@]}" copy --dest-creds "$LAB_USER:$LAB_PASS" --dest-tls-verify=false "oci:$G/img/$1:latest" "docker://$UP/$2" \
		>> "$LOGS/pull-setup.log" 2>&1 || fail pull_setup "$(tail -n 2 "$LOGS/pull-setup.log")"
done
pull_m() { rs_curl -u alice:alicepw -H "Accept: application/vnd.oci.image.manifest.v1+json" "$RS_URL/v2/$1/manifests/$2" -w '\n%{http_code}'; }
out=$(pull_m pulled/keyed 1)
expect_eq "pull_with_key_refused" "$(echo "$out" | tail -n 1) $(echo "$out" | head -n 1 | jq -r '.errors[0].code')" "403 DENIED"
echo "$out" | head -n 1 | grep "refused by policy: 1 violation(s): \[secrets\] layer 1 of 2 (sha256:[0-9a-f]*) root/.ssh/id_ed25519: OpenSSH private key" > /dev/null &&
	pass pull_refusal_names_violation || fail pull_refusal_names_violation "$(echo "$out" | head -c 300)"
out=$(pull_m pulled/keyed 1)
expect_eq "second_pull_refused_too" "$(echo "$out" | tail -n 1)" 403
expect_eq "second_pull_not_rescanned" "$(grep -c 'pull policy check of pulled/keyed:1' "$RS_LOG")" 1
out=$(pull_m pulloff/keyed 1)
expect_eq "pull_served_when_enforcement_off" "$(echo "$out" | tail -n 1) $(echo "$out" | head -n -1 | jq -r '.layers | length')" "200 2"
out=$(pull_m pulled/clean 1)
expect_eq "clean_pull_served_under_enforcement" "$(echo "$out" | tail -n 1) $(echo "$out" | head -n -1 | jq -r '.schemaVersion')" "200 2"
if timeout 120 skopeo copy --src-tls-verify=false --src-creds alice:alicepw "docker://$H/pulled/keyed:1" "oci:$G/pulled-keyed:latest" \
	> "$LOGS/pull-keyed.log" 2>&1; then fail skopeo_pull_refused "skopeo pulled it"; else
	grep -q "OpenSSH private key" "$LOGS/pull-keyed.log" && pass skopeo_pull_refused || fail skopeo_pull_refused "$(tail -n 1 "$LOGS/pull-keyed.log")"; fi
expect "no_gate_temp_dirs_left" "[ -z \"\$(find '$RS_DATA/tmp' -maxdepth 1 -name 'gate-*' 2> /dev/null)\" ]" "gate-* left in tmp"

finish
