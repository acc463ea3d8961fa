#!/usr/bin/env bash
# test_gate_token.sh: the push gate (issue 5) in front of a BEARER-TOKEN upstream (the lab's
# docker-registry with token auth and tokenserver.py), and multi-arch indexes in every mode.
# Clients push to regslim as an htpasswd user of regslim's own; regslim logs in to the upstream
# with its configured account (lab) through the token server, asking for a push scope, and the
# client's user and password never reach the upstream. A good image lands optimized (pulled from
# the upstream directly and unpacked with umoci: the original's tree minus the stripped paths); the
# `multi` fixture (an OCI index, linux/amd64 + linux/arm64/v8) pushed with `skopeo copy --all`
# lands as an optimized index (optimize-and-push), as the byte-identical original plus an
# optimized index at <tag>-slim (push-original-and-optimized), or as the original (check-only);
# a secret planted in the arm64 image only refuses the whole index, naming the platform, layer and
# path; wrong upstream credentials are a 502 registry error naming the token endpoint's refusal.
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-300}
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start
upstream_also token
UP=$REG_TOKEN
UP_LOG=$LOGS/registry-${UP##*:}.log
TOK_LOG=$LOGS/tokenserver.log
FIX=$REGSLIM_LAB/fixtures/oci

G=$REGSLIM_LAB/gate
mkdir -p "$G"
# the client's account: names that must never show up at the upstream
CLIENT_USER=ci-pusher-7f3a
CLIENT_PASS=client-secret-91c2
htpasswd -Bbc "$G/htpasswd" "$CLIENT_USER" "$CLIENT_PASS" 2> /dev/null
export RS_UP_PASS=$LAB_PASS RS_UP_BAD=not-the-password
cat > "$G/regslim.json" << EOF
{"upstreams": [{"name": "tok", "url": "http://$UP", "default": true,
                "auth": {"username": "$LAB_USER", "password_env": "RS_UP_PASS"}}],
 "auth": {"htpasswd": "$G/htpasswd"},
 "push": {"policies": [
   {"repositories": ["opt/*"], "mode": "optimize-and-push", "rules": {"secrets": {"action": "deny"}}},
   {"repositories": ["both/*"], "mode": "push-original-and-optimized", "optimized_tag_suffix": "-slim",
    "rules": {"secrets": {"action": "deny"}}},
   {"repositories": ["check/*"], "mode": "check-only", "rules": {"secrets": {"action": "deny"}}}]}}
EOF
RS_UPSTREAM="" start_regslim --config "$G/regslim.json"
H=127.0.0.1:$RS_PORT
SK=(timeout 120 skopeo)
UPC=(--creds "$LAB_USER:$LAB_PASS" --tls-verify=false)
ZSTD=application/vnd.oci.image.layer.v1.tar+zstd
# what the default optimizer policy strips from tiny (docs, apt caches) and their directories
STRIP='usr/share/doc/tiny(/README)?|var/cache/apt(/pkgcache.bin)?'
GONE='usr/share/doc/tiny/README|var/cache/apt/pkgcache.bin'

# push SRC DEST [skopeo copy args...]: skopeo copy through regslim as the client; log in
# $LOGS/push-<dest with / and : as _>.log; the pushed manifest's digest in that name + .digest.
push() {
	local src=$1 dest=$2 n=${2//[\/:]/_}
	shift 2
	"${SK[@]}" copy --dest-tls-verify=false --dest-creds "$CLIENT_USER:$CLIENT_PASS" --digestfile "$G/$n.digest" \
		"$@" "$src" "docker://$H/$dest" > "$LOGS/push-$n.log" 2>&1
}
push_log() { cat "$LOGS/push-${1//[\/:]/_}.log"; }
pushed_digest() { cat "$G/${1//[\/:]/_}.digest" 2> /dev/null; }
# up_manifest REPO:REF [DIGEST]: the upstream's manifest bytes, read directly with the lab account
up_manifest() { "${SK[@]}" inspect --raw "${UPC[@]}" "docker://$UP/$1" 2> /dev/null; }
# up_digest REPO:REF or REPO@DIGEST: the sha256 of the upstream's manifest bytes (not through a variable: $(...) would eat
# a trailing newline)
up_digest() { "${SK[@]}" inspect --raw "${UPC[@]}" "docker://$UP/$1" 2> /dev/null | sha256sum | sed 's/^/sha256:/; s/ .*//'; }
# up_child REPO INDEX_JSON ARCH: the platform manifest for ARCH of an index, read from the upstream
up_child() { up_manifest "$1@$(printf '%s' "$2" | jq -r --arg a "$3" '.manifests[] | select(.platform.architecture == $a) | .digest')"; }

# ------------------------------------------------------------ a good image over bearer auth
MULTI_IDX=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "index") | .digest' "$FIX/multi/index.json")
TINY_M=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "latest") | .digest' "$FIX/tiny/index.json")
TOK_MARK=$(wc -l < "$TOK_LOG")
upstream_mark "$UP_LOG"
if push "oci:$FIX/tiny:latest" opt/tiny:v1; then pass token_upstream_push_accepted; else
	fail token_upstream_push_accepted "$(push_log opt/tiny:v1 | tail -n 2)"; fi
m=$(up_manifest opt/tiny:v1)
expect_eq "token_upstream_has_optimized_zstd" "$(echo "$m" | jq -r '[.layers[].mediaType] | unique | join(",")')" "$ZSTD"
expect_eq "token_upstream_optimized_names_source" "$(echo "$m" | jq -r '.annotations["io.regslim.source.digest"]')" "$TINY_M"
expect_tree_minus token_upstream_tree_equals_original_minus_stripped "oci:$FIX/tiny:latest" "docker://$UP/opt/tiny:v1" \
	"$STRIP" "$GONE" "$G/tiny" --src-creds "$LAB_USER:$LAB_PASS"
# the token server issued regslim an authenticated token with push on opt/tiny
tok_new=$(tail -n +"$((TOK_MARK + 1))" "$TOK_LOG")
expect "token_push_scope_requested" \
	"echo \"\$tok_new\" | grep -qi 'GET /token?[^ ]*scope=repository%3Aopt%2Ftiny%3Apull%2Cpush'" \
	"no GET /token with scope repository:opt/tiny:pull,push in tokenserver.log: $(echo "$tok_new" | grep -m 2 token | tr '\n' ' ' | cut -c1-300)"
expect "token_push_scope_granted_to_regslims_account" \
	"echo \"\$tok_new\" | grep -q 'issued token authed=True access=.*\"name\": \"opt/tiny\", \"actions\": \[\"pull\", \"push\"\]'" \
	"no authenticated push token for opt/tiny: $(echo "$tok_new" | grep -m 2 issued | cut -c1-300)"
expect_eq "token_upstream_manifest_put_by_regslim" \
	"$(upstream_requests "$UP_LOG" | awk '$1 == "PUT" && $2 == "/v2/opt/tiny/manifests/v1" { print $3, $4 }')" "201 regslim-push/1"
leak=$(grep -l -e "$CLIENT_USER" -e "$CLIENT_PASS" -e "$(printf '%s' "$CLIENT_USER:$CLIENT_PASS" | base64)" \
	"$UP_LOG" "$TOK_LOG" 2> /dev/null)
expect_eq "client_credentials_never_sent_upstream" "$leak" ""
expect_eq "token_upstream_put_requests_ok" \
	"$(upstream_requests "$UP_LOG" | awk '$1 == "PUT" && $3 >= 400' | head -n 3 | tr '\n' ' ')" ""

# ------------------------------------------------------------ wrong upstream credentials
sed 's/"RS_UP_PASS"/"RS_UP_BAD"/' "$G/regslim.json" > "$G/bad.json"
if regslim_spawn bad $((LAB_PORT_BASE + 51)) "" "$REGSLIM_LAB/rs-bad" --config "$G/bad.json" 2> "$LOGS/bad.err"; then
	B=http://127.0.0.1:$((LAB_PORT_BASE + 51))
	# curl, not a client: a client's blob HEAD is asked of the upstream too (docs/push.md)
	M=$FIX/tiny/blobs/sha256/${TINY_M#sha256:}
	for d in $(jq -r '.config.digest, .layers[].digest' "$M"); do
		rs_curl -o /dev/null -u "$CLIENT_USER:$CLIENT_PASS" -X POST -H "Content-Type: application/octet-stream" \
			--data-binary "@$FIX/tiny/blobs/sha256/${d#sha256:}" "$B/v2/check/tiny/blobs/uploads/?digest=$d"
	done
	out=$(rs_curl -u "$CLIENT_USER:$CLIENT_PASS" -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
		--data-binary "@$M" "$B/v2/check/tiny/manifests/v9" -w '\n%{http_code}')
	expect_eq "wrong_upstream_credentials_502" \
		"$(echo "$out" | tail -n 1) $(echo "$out" | head -n 1 | jq -r '.errors[0].code')" "502 UNAVAILABLE"
	msg=$(echo "$out" | head -n 1 | jq -r '.errors[0].message')
	expect "wrong_upstream_credentials_named" \
		"echo \"\$msg\" | grep -q 'forwarding to the upstream failed: upstream tok: token endpoint answered 401 for scope repository:check/tiny:pull,push (check the upstream.s username and password)'" \
		"message: $msg"
	expect_eq "wrong_upstream_credentials_no_tag_upstream" "$(up_manifest check/tiny:v9 | head -c 20)" ""
	lab_stop regslim-bad 15
else
	fail wrong_upstream_credentials_502 "$(head -n 2 "$LOGS/bad.err")"
fi

# ------------------------------------------------------------ multi-arch index, every mode
# optimize-and-push: the tag is an optimized index; every platform optimized
if push "oci:$FIX/multi:index" opt/multi:v1 --all; then pass index_optimize_push_accepted; else
	fail index_optimize_push_accepted "$(push_log opt/multi:v1 | tail -n 2)"; fi
expect_eq "index_pushed_byte_for_byte_by_skopeo" "$(pushed_digest opt/multi:v1)" "$MULTI_IDX"
x=$(up_manifest opt/multi:v1)
expect_eq "index_optimize_tag_is_index" \
	"$(echo "$x" | jq -r '.mediaType') $(echo "$x" | jq -r '[.manifests[].platform | .os + "/" + .architecture] | join(",")')" \
	"application/vnd.oci.image.index.v1+json linux/amd64,linux/arm64"
expect_ne "index_optimize_tag_differs_from_original" "$(up_digest opt/multi:v1)" "$MULTI_IDX"
orig_layers=$(jq -r '.layers[].digest' "$FIX/tiny/blobs/sha256/${TINY_M#sha256:}" | sort | tr '\n' ' ')
for arch in amd64 arm64; do
	c=$(up_child opt/multi "$x" "$arch")
	expect_eq "index_optimize_${arch}_layers_zstd" \
		"$(echo "$c" | jq -r '[.layers[].mediaType] | unique | join(",")') $(echo "$c" | jq -r '.layers | length')" "$ZSTD 1"
	expect "index_optimize_${arch}_layers_differ_from_original" \
		"[ -n \"\$(echo \"\$c\" | jq -r '.layers[0].digest // empty')\" ] && ! echo '$orig_layers' | grep -qF \"\$(echo \"\$c\" | jq -r '.layers[0].digest')\"" \
		"layers $(echo "$c" | jq -r '[.layers[].digest] | join(",")') (original: $orig_layers)"
done
c=$(up_child opt/multi "$x" arm64)
expect_eq "index_optimize_arm64_config_kept" \
	"$("${SK[@]}" inspect --raw --config "${UPC[@]}" "docker://$UP/opt/multi@$(echo "$x" | jq -r '.manifests[1].digest')" 2> /dev/null |
		jq -r '.architecture + " " + .config.Labels["org.example.arch"]')" "arm64 arm64"
for arch in amd64 arm64; do
	expect_tree_minus "index_optimize_${arch}_tree_equals_original_minus_stripped" "oci:$FIX/multi:index" \
		"docker://$UP/opt/multi:v1" "$STRIP" "$GONE" "$G/multi-$arch" --override-arch "$arch" --src-creds "$LAB_USER:$LAB_PASS"
done

# push-original-and-optimized: the original index byte for byte at the tag, the optimized at -slim
if push "oci:$FIX/multi:index" both/multi:v1 --all; then pass index_push_both_accepted; else
	fail index_push_both_accepted "$(push_log both/multi:v1 | tail -n 2)"; fi
expect_eq "index_push_both_original_at_tag" "$(up_digest both/multi:v1)" "$MULTI_IDX"
s=$(up_manifest both/multi:v1-slim)
expect_eq "index_push_both_optimized_at_suffix" \
	"$(echo "$s" | jq -r '.mediaType') $(echo "$s" | jq -r '.manifests | length')" "application/vnd.oci.image.index.v1+json 2"
expect_eq "index_push_both_suffix_platforms_zstd" \
	"$(for a in amd64 arm64; do up_child both/multi "$s" "$a" | jq -r '[.layers[].mediaType] | unique | join(",")'; done | tr '\n' ' ')" \
	"$ZSTD $ZSTD "

# check-only: the original index, same digest, and its platform manifests by digest
if push "oci:$FIX/multi:index" check/multi:v1 --all; then pass index_check_only_accepted; else
	fail index_check_only_accepted "$(push_log check/multi:v1 | tail -n 2)"; fi
expect_eq "index_check_only_original_at_tag" "$(up_digest check/multi:v1)" "$MULTI_IDX"
expect_eq "index_check_only_platforms_original" \
	"$(for d in $(jq -r '.manifests[].digest' "$FIX/multi/blobs/sha256/${MULTI_IDX#sha256:}"); do up_digest "check/multi@$d"; done | tr '\n' ' ')" \
	"$(jq -r '.manifests[].digest' "$FIX/multi/blobs/sha256/${MULTI_IDX#sha256:}" | tr '\n' ' ')"

# a private key planted in the arm64 image only: the whole index is refused
KEY='-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n'
# arm_secret SRC_LAYOUT OUT: OUT:index = SRC's index whose arm64 image has one more gzip layer
# holding root/.ssh/id_ed25519; prints that layer's digest and the arm64 manifest's digest
arm_secret() {
	"$PY" - "$@" "$(printf '%b' "$KEY")" << 'PY'
import gzip, hashlib, io, json, os, shutil, sys, tarfile
src, out, key = sys.argv[1], sys.argv[2], sys.argv[3].encode()
shutil.copytree(src, out)
B = out + "/blobs/sha256/"
def blob(d): return open(B + d.split(":")[1], "rb").read()
def put(data):
    d = hashlib.sha256(data).hexdigest(); open(B + d, "wb").write(data); return "sha256:" + d, len(data)
ij = json.load(open(out + "/index.json"))
ent = [m for m in ij["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "index"][0]
idx = json.loads(blob(ent["digest"]))
arm = [m for m in idx["manifests"] if m["platform"]["architecture"] == "arm64"][0]
man = json.loads(blob(arm["digest"])); cfg = json.loads(blob(man["config"]["digest"]))
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    for name, data, mode in (("root", None, 0o700), ("root/.ssh", None, 0o700), ("root/.ssh/id_ed25519", key, 0o600)):
        ti = tarfile.TarInfo(name); ti.mtime = 1700000000; ti.mode = mode
        if data is None: ti.type = tarfile.DIRTYPE; t.addfile(ti)
        else: ti.size = len(data); t.addfile(ti, io.BytesIO(data))
raw = buf.getvalue(); ld, ln = put(gzip.compress(raw, mtime=0))
man["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ln})
cfg["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(raw).hexdigest())
cfg.setdefault("history", []).append({"created_by": "COPY id_ed25519 /root/.ssh/"})
cd, cn = put(json.dumps(cfg).encode()); man["config"]["digest"], man["config"]["size"] = cd, cn
arm["digest"], arm["size"] = put(json.dumps(man).encode())
ent["digest"], ent["size"] = put(json.dumps(idx).encode())
json.dump(ij, open(out + "/index.json", "w"))
print(ld, arm["digest"])
PY
}
if sl=$(arm_secret "$FIX/multi" "$G/multi-armkey" 2> "$LOGS/arm-secret.log"); then
	read -r sl am <<< "$sl"
	if push "oci:$G/multi-armkey:index" opt/armkey:v1 --all; then fail index_one_platform_secret_refused "accepted"; else
		out=$(push_log opt/armkey:v1)
		miss=
		# skopeo PUTs each platform manifest by digest before the index: the arm64 one is refused
		for p in denied "refused by policy: 1 violation(s)" "$am" "layer 3 of 3 ($sl)" \
			"root/.ssh/id_ed25519: OpenSSH private key"; do
			echo "$out" | grep -qF -- "$p" || miss="$miss '$p'"
		done
		if [ -z "$miss" ]; then pass index_one_platform_secret_refused; else
			fail index_one_platform_secret_refused "message lacks$miss: $(echo "$out" | tail -n 1 | cut -c1-400)"; fi
		# skopeo PUTs the platform manifests by digest first: the gate names such a manifest by its
		# config's platform
		if echo "$out" | grep -qF "[secrets] platform linux/arm64"; then pass index_one_platform_refusal_names_platform; else
			fail index_one_platform_refusal_names_platform "$(echo "$out" | grep denied | cut -c1-400)"; fi
	fi
	expect "index_one_platform_amd64_not_named" "! push_log opt/armkey:v1 | grep 'denied:' | grep -qF \"\$(jq -r '.manifests[0].digest' '$FIX/multi/blobs/sha256/${MULTI_IDX#sha256:}')\"" \
		"the clean amd64 image is named in the refusal"
	# the platform manifests already upstream (another builder pushed them there), the index alone
	# through regslim: the gate checks the index and names the platform
	if "${SK[@]}" copy --all --dest-tls-verify=false --dest-creds "$LAB_USER:$LAB_PASS" "oci:$G/multi-armkey:index" \
		"docker://$UP/opt/armkey2:src" > "$LOGS/armkey2-src.log" 2>&1; then
		ai=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "index") | .digest' "$G/multi-armkey/index.json")
		out=$(rs_curl -u "$CLIENT_USER:$CLIENT_PASS" -X PUT -H "Content-Type: application/vnd.oci.image.index.v1+json" \
			--data-binary "@$G/multi-armkey/blobs/sha256/${ai#sha256:}" "$RS_URL/v2/opt/armkey2/manifests/v1" -w '\n%{http_code}')
		msg=$(echo "$out" | head -n 1 | jq -r '.errors[0].message')
		expect_eq "index_refusal_is_403_denied" "$(echo "$out" | tail -n 1) $(echo "$out" | head -n 1 | jq -r '.errors[0].code')" "403 DENIED"
		want="refused by policy: 1 violation(s): [secrets] platform linux/arm64/v8 ($am): layer 3 of 3 ($sl) root/.ssh/id_ed25519: OpenSSH private key"
		if echo "$msg" | grep -qF -- "$want"; then pass index_refusal_names_platform_layer_path; else
			fail index_refusal_names_platform_layer_path "message: $msg"; fi
		expect_eq "index_refusal_report_locates_finding" \
			"$(rs_curl -u "$CLIENT_USER:$CLIENT_PASS" "$RS_URL/regslim/v1/reports/opt/armkey2/$ai" |
				jq -r '[.verdict, (.findings[] | .platform, .layer, .layer_digest, .path)] | join(" ")')" \
			"denied linux/arm64/v8 3 $sl root/.ssh/id_ed25519"
		expect_eq "index_refusal_nothing_at_tag_upstream" "$(up_manifest opt/armkey2:v1 | head -c 20)" ""
	else
		fail index_refusal_names_platform_layer_path "setup: $(tail -n 2 "$LOGS/armkey2-src.log")"
	fi
	expect_eq "index_refused_nothing_upstream" "$(up_manifest opt/armkey:v1 | head -c 20)" ""
else
	fail index_one_platform_secret_refused "setup: $(tail -n 2 "$LOGS/arm-secret.log")"
fi
expect "no_gate_temp_dirs_left" "[ -z \"\$(find '$RS_DATA/tmp' -maxdepth 1 -name 'gate-*' 2> /dev/null)\" ]" "gate-* left in tmp"

finish
