#!/usr/bin/env bash
# test_sig_verify.sh - verification of originals before optimization (docs/signatures.md
# "Verifying originals", issue 15): cosign signatures in the upstream, GPG signatures from the
# upstream's signature extension, pass-through of signatures and referrers, and the push gate's
# optimized image signed.
#
# The test is the publisher: it makes ECDSA P-256 keys with openssl, builds cosign's
# simple-signing payloads, signs them with `openssl dgst -sha256 -sign`, and pushes the payload,
# the config and the signature manifest with curl into the lab's docker-registry, in both of
# cosign's forms: the tag sha256-<hex>.sig and a referrer (subject + artifactType, listed by the
# referrers tag sha256-<hex>, since distribution 2.8 has no referrers API). regslim (the docker.io
# mirror, optimizing) verifies with cosign_public_keys [k1, k2]:
#   - cs/* (serve-original): signed by k1 -> optimized; by k2 (rotation) -> optimized; unsigned
#     or by another key -> the original, counted
#   - cr/* (refuse): another key, a payload naming another digest, another repository or another
#     tag, a tampered signature, no signature -> 403 DENIED naming why; the referrers form ->
#     optimized
#   - mix/* (gpg_keyring and cosign keys): a cosign signature alone, or a GPG signature alone in
#     the lookaside, is enough; neither -> 403 naming both
#   - pass-through: the .sig, .att and .sbom tags, the referrers tag, a referrer and the payload
#     are served byte for byte as the upstream has them (also under refuse), and the referrers
#     list names the upstream's descriptor unchanged
# The signature extension: a small registry (tests/lab/sigext_registry.py, on loopback) that
# answers manifests with X-Registry-Supports-Signatures: 1 and serves GPG signatures made by the
# test's gpg at /extensions/v2/<repo>/signatures/<digest>: a good one verifies, a tampered one
# is refused. The push gate with a signing key: the optimized image pushed upstream has regslim's
# GPG signature for the pushed reference, checked with gpg (optimize-and-push: the tag;
# push-original-and-optimized: tag + suffix, and the original gets none of regslim's); with a
# cosign key too, the upstream itself (read directly with curl) has the sha256-<hex>.sig manifest
# of the optimized manifest, of an optimized index and of each of its platform manifests (subject,
# payload naming the pushed reference and digest), whose signature the test checks with
# `openssl dgst -sha256 -verify` and the gate's public key (a tampered signature or payload
# fails); a gate whose upstream cannot take the signature answers the push with an error naming
# the cosign signature.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

export RS_OPTIMIZE=1
lab_setup
upstream_start
U=$REG_PLAIN
S=$REGSLIM_LAB/sv
W=$S/work
mkdir -p "$S/pub" "$S/lookaside" "$S/sigext" "$W"
chmod 700 "$S/pub"
GPGT=60
OCI_M=application/vnd.oci.image.manifest.v1+json
OCI_I=application/vnd.oci.image.index.v1+json
COSIGN_MT=application/vnd.dev.cosign.simplesigning.v1+json
COSIGN_AT=application/vnd.dev.cosign.artifact.sig.v1+json
UA=skopeo/1.9.3

stop_agents() {
	local h
	for h in "$S/pub" "$S/org"; do
		[ -d "$h" ] && timeout 20 gpgconf --homedir "$h" --kill gpg-agent > /dev/null 2>&1
	done
	true
}
lab_on_exit stop_agents

# ---------------------------------------------------------------- keys
ok=1
for k in k1 k2 k3; do
	timeout 30 openssl ecparam -name prime256v1 -genkey -noout -out "$S/$k.pem" 2>> "$LOGS/keys.log" &&
		timeout 30 openssl ec -in "$S/$k.pem" -pubout -out "$S/$k.pub" 2>> "$LOGS/keys.log" || ok=0
done
expect "publisher cosign keys (ECDSA P-256) made with openssl" "[ $ok = 1 ]" "$(tail -n 2 "$LOGS/keys.log")"
if timeout $GPGT gpg --homedir "$S/pub" --batch --passphrase '' \
	--quick-gen-key "Lab Publisher <publisher@example.com>" default sign never > "$LOGS/gpg-pub.log" 2>&1; then
	PUB=$(gpg --homedir "$S/pub" --with-colons -K 2> /dev/null | awk -F: '$1 == "fpr" { print $10; exit }')
	timeout $GPGT gpg --homedir "$S/pub" --export "$PUB" > "$S/publisher.gpg"
	pass "publisher gpg key made"
else
	fail "publisher gpg key" "$(tail -n 2 "$LOGS/gpg-pub.log")"
	finish
fi
ORG=$(timeout $GPGT "$REGSLIM_BIN" keygen --gpg "$S/org" --uid "Lab Org <org@example.com>" 2> "$LOGS/keygen.err")
[[ $ORG =~ ^[0-9A-F]{40}$ ]] || { fail "org key" "$(tail -n 1 "$LOGS/keygen.err")"; finish; }
timeout $GPGT gpg --homedir "$S/org" --export "$ORG" > "$S/org.gpg"

# ---------------------------------------------------------------- publishing
# push_blob HOSTPORT REPO FILE: POST then PUT ?digest=; prints the final status
push_blob() {
	local hp=$1 repo=$2 f=$3 loc sep
	loc=$(rs_curl -o /dev/null -D - -X POST "http://$hp/v2/$repo/blobs/uploads/" | tr -d '\r' | header_value Location)
	[[ $loc == http* ]] || loc=http://$hp$loc
	sep='?'
	[[ $loc != *'?'* ]] || sep='&'
	rs_curl -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: application/octet-stream" \
		--data-binary "@$f" "$loc${sep}digest=$(sha256_of "$f")"
}
# put_manifest HOSTPORT REPO REF FILE TYPE: prints the status
put_manifest() {
	rs_curl -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $5" --data-binary "@$4" \
		"http://$1/v2/$2/manifests/$3"
}
copy_tiny() {
	timeout 300 skopeo --insecure-policy copy --src-tls-verify=false --dest-tls-verify=false \
		"docker://$U/library/tiny:latest" "docker://$U/$1" >> "$LOGS/publish.log" 2>&1
}
# cosign_sign REPO KEY [FORM [IDENTITY [DIGEST]]]: publish a cosign signature of the original of
# REPO:1.0 made with KEY, naming IDENTITY (default docker.io/REPO) and DIGEST (default the
# original's); FORM "tag" (sha256-<hex>.sig), "referrer" (subject + referrers tag) or "tampered"
# (the .sig tag with one byte of the signature changed). Prints the signature manifest's file.
cosign_sign() {
	local repo=$1 key=$2 form=${3:-tag} id=${4:-docker.io/$1} d=${5:-$ORIG} dir=$W/$1 st=0
	mkdir -p "$dir"
	printf '{"critical":{"identity":{"docker-reference":"%s"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}' \
		"$id" "$d" > "$dir/payload"
	timeout 30 openssl dgst -sha256 -sign "$S/$key.pem" -out "$dir/sig.der" "$dir/payload" || st=1
	if [ "$form" = tampered ]; then
		$PY - "$dir/sig.der" << 'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) - 5] ^= 0x55
open(p, "wb").write(bytes(b))
EOF
	fi
	local sig pd ps
	sig=$(base64 -w0 "$dir/sig.der")
	pd=$(sha256_of "$dir/payload")
	ps=$(stat -c %s "$dir/payload")
	printf '{"architecture":"","config":{},"created":"0001-01-01T00:00:00Z","os":"","rootfs":{"type":"layers","diff_ids":["%s"]}}' \
		"$pd" > "$dir/config"
	[ "$(push_blob "$U" "$repo" "$dir/payload")" = 201 ] || st=1
	[ "$(push_blob "$U" "$repo" "$dir/config")" = 201 ] || st=1
	local extra=''
	[ "$form" = referrer ] && extra=",\"artifactType\":\"$COSIGN_AT\",\"subject\":{\"mediaType\":\"$ORIG_MT\",\"digest\":\"$ORIG\",\"size\":$ORIG_SIZE}"
	printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"%s","digest":"%s","size":%s,"annotations":{"dev.cosignproject.cosign/signature":"%s"}}]%s}' \
		"$OCI_M" "$(sha256_of "$dir/config")" "$(stat -c %s "$dir/config")" "$COSIGN_MT" "$pd" "$ps" "$sig" "$extra" \
		> "$dir/sig.json"
	if [ "$form" = referrer ]; then
		local md
		md=$(sha256_of "$dir/sig.json")
		[ "$(put_manifest "$U" "$repo" "$md" "$dir/sig.json" "$OCI_M")" = 201 ] || st=1
		jq -c -n --arg mt "$OCI_M" --arg d "$md" --argjson s "$(stat -c %s "$dir/sig.json")" --arg at "$COSIGN_AT" \
			--arg i "$OCI_I" '{schemaVersion: 2, mediaType: $i, manifests: [{mediaType: $mt, digest: $d, size: $s, artifactType: $at}]}' \
			> "$dir/referrers.json"
		[ "$(put_manifest "$U" "$repo" "sha256-${ORIG#sha256:}" "$dir/referrers.json" "$OCI_I")" = 201 ] || st=1
	else
		[ "$(put_manifest "$U" "$repo" "sha256-${ORIG#sha256:}.sig" "$dir/sig.json" "$OCI_M")" = 201 ] || st=1
	fi
	return $st
}

ok=1
for r in cs/app cs/rotated cs/unsigned cs/otherkey cr/otherkey cr/wrongdigest cr/wrongrepo cr/wrongtag cr/tampered \
	cr/referrer cr/unsigned mix/cosign mix/gpg mix/none; do
	copy_tiny "$r:1.0" || ok=0
done
expect "originals copied into the upstream" "[ $ok = 1 ]" "$(tail -n 2 "$LOGS/publish.log")"
ORIG=$(manifest_digest "$U" cs/app 1.0)
manifest_get "$U" cs/app 1.0 > "$W/orig.json"
ORIG_MT=$(jq -r '.mediaType // "application/vnd.docker.distribution.manifest.v2+json"' "$W/orig.json")
ORIG_SIZE=$(stat -c %s "$W/orig.json")
OTHER=sha256:$(printf 'another image' | sha256sum | cut -d' ' -f1)
ok=1
cosign_sign cs/app k1 || ok=0
cosign_sign cs/rotated k2 || ok=0
cosign_sign cs/otherkey k3 || ok=0
cosign_sign cr/otherkey k3 || ok=0
cosign_sign cr/wrongdigest k1 tag docker.io/cr/wrongdigest "$OTHER" || ok=0
cosign_sign cr/wrongrepo k1 tag docker.io/cr/other || ok=0
cosign_sign cr/wrongtag k1 tag docker.io/cr/wrongtag:2.0 || ok=0
cosign_sign cr/tampered k1 tampered || ok=0
cosign_sign cr/referrer k1 referrer || ok=0
cosign_sign mix/cosign k1 || ok=0
expect "the publisher pushed cosign signatures (tag and referrer forms)" "[ $ok = 1 ]" "see $LOGS"
# mix/gpg: a GPG simple-signing signature in the publisher's lookaside, no cosign signature
mkdir -p "$S/lookaside/mix/gpg@sha256=${ORIG#sha256:}"
printf '{"critical":{"identity":{"docker-reference":"docker.io/mix/gpg:1.0"},"image":{"docker-manifest-digest":"%s"},"type":"atomic container signature"},"optional":{}}' \
	"$ORIG" > "$W/mix-gpg.payload"
expect "the publisher signs mix/gpg with gpg into its lookaside" \
	"timeout $GPGT gpg --homedir '$S/pub' --batch --yes --output '$S/lookaside/mix/gpg@sha256=${ORIG#sha256:}/signature-1' \
	 --sign '$W/mix-gpg.payload'" "gpg --sign failed"
# an independent check of the test's own signature: openssl verifies it with k1.pub
expect "openssl verifies the publisher's signature of cs/app" \
	"timeout 30 openssl dgst -sha256 -verify '$S/k1.pub' -signature '$W/cs/app/sig.der' '$W/cs/app/payload'" "bad signature"
# an attestation and an SBOM of the original, in cosign's tag scheme (cs/app, and cr/app under refuse)
copy_tiny cr/app:1.0
push_blob "$U" cr/app "$W/cs/app/payload" > /dev/null
push_blob "$U" cr/app "$W/cs/app/config" > /dev/null
for kind in att sbom; do
	printf '{"kind":"%s of %s"}' "$kind" "$ORIG" > "$W/$kind.layer"
	push_blob "$U" cs/app "$W/$kind.layer" > /dev/null
	push_blob "$U" cr/app "$W/$kind.layer" > /dev/null
	printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.dsse.envelope.v1+json","digest":"%s","size":%s}]}' \
		"$OCI_M" "$(sha256_of "$W/cs/app/config")" "$(stat -c %s "$W/cs/app/config")" "$(sha256_of "$W/$kind.layer")" \
		"$(stat -c %s "$W/$kind.layer")" > "$W/$kind.json"
	put_manifest "$U" cs/app "sha256-${ORIG#sha256:}.$kind" "$W/$kind.json" "$OCI_M" > /dev/null
	put_manifest "$U" cr/app "sha256-${ORIG#sha256:}.$kind" "$W/$kind.json" "$OCI_M" > /dev/null
done
put_manifest "$U" cr/app "sha256-${ORIG#sha256:}.sig" "$W/cs/app/sig.json" "$OCI_M" > /dev/null

# ---------------------------------------------------------------- the signature extension's upstream
EXT_PORT=$((LAB_PORT_BASE + 61))
ext_sig() { # ext_sig REPO [tampered]: the extension's answer for REPO, a GPG signature by the publisher
	local f=$W/ext-${1//\//_}
	printf '{"critical":{"identity":{"docker-reference":"ext.lab/%s"},"image":{"docker-manifest-digest":"%s"},"type":"atomic container signature"},"optional":{}}' \
		"$1" "$EXT_DIGEST" > "$f.payload"
	timeout $GPGT gpg --homedir "$S/pub" --batch --yes --output "$f.sig" --sign "$f.payload" 2>> "$LOGS/gpg-ext.log" ||
		return 1
	if [ "${2:-}" = tampered ]; then
		$PY - "$f.sig" << 'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x55
open(p, "wb").write(bytes(b))
EOF
	fi
	jq -c -n --arg c "$(base64 -w0 "$f.sig")" --arg n "$EXT_DIGEST@test" \
		'{signatures: [{version: 2, type: "atomic", name: $n, content: $c}]}' > "$S/sigext/${1//\//_}.json"
}
EXT_DIGEST=$(jq -r '.manifests[0].digest' "$REGSLIM_LAB/fixtures/oci/tiny/index.json")
ok=1
ext_sig sig/app || ok=0
ext_sig sig/tampered tampered || ok=0
expect "the extension's signatures made with the publisher's gpg key" "[ $ok = 1 ]" "$(tail -n 2 "$LOGS/gpg-ext.log")"
lab_spawn aux-sigext "$LOGS/sigext.log" timeout 900 "$PY" "$RS_LAB_DIR/sigext_registry.py" --port "$EXT_PORT" \
	--layout "$REGSLIM_LAB/fixtures/oci/tiny" --sigdir "$S/sigext"
wait_port "$EXT_PORT" || fail "signature extension registry" "$(tail -n 2 "$LOGS/sigext.log")"

# ---------------------------------------------------------------- regslim
cat > "$S/regslim.json" << EOF
{
  "upstreams": [{"name": "docker.io", "url": "http://$U", "default": true},
                {"name": "ext.lab", "url": "http://127.0.0.1:$EXT_PORT"}],
  "signatures": {
    "verify": [
      {"upstream": "docker.io", "repositories": ["cs/*"], "cosign_public_keys": ["$S/k1.pub", "$S/k2.pub"],
       "on_unverified": "serve-original"},
      {"upstream": "docker.io", "repositories": ["cr/*"], "cosign_public_keys": ["$S/k1.pub", "$S/k2.pub"],
       "on_unverified": "refuse"},
      {"upstream": "docker.io", "repositories": ["mix/*"], "gpg_keyring": "$S/publisher.gpg",
       "lookaside": "file://$S/lookaside", "cosign_public_keys": ["$S/k1.pub"], "on_unverified": "refuse"},
      {"upstream": "ext.lab", "repositories": ["sig/*"], "gpg_keyring": "$S/publisher.gpg",
       "lookaside": "file://$S/lookaside", "on_unverified": "refuse"}
    ]
  }
}
EOF
RS_UPSTREAM="" start_regslim --config "$S/regslim.json"
expect "regslim loaded the cosign keys at start (named by their id)" \
	"regslim_log_has 'cosign_public_keys\\[1\\]: cosign public key sha256:[0-9a-f]{64} from .*k2.pub accepted'" \
	"$(tail -n 3 "$RS_LOG")"

# denied REPO: the body and status of a tag pull of REPO:1.0 into $W/denied.{json,code}
denied() {
	curl -s -o "$W/denied.json" -w '%{http_code}' --max-time "$HTTP_TIMEOUT" -A "$UA" "${RS_ACCEPT_ALL[@]}" \
		"$RS_URL/v2/$1/manifests/1.0" > "$W/denied.code"
}
expect_refused() { # expect_refused NAME REPO PATTERN
	denied "$2"
	if [ "$(cat "$W/denied.code")" = 403 ] && grep -q '"DENIED"' "$W/denied.json" && grep -qE -- "$3" "$W/denied.json"; then
		pass "$1"
	else
		fail "$1" "$(cat "$W/denied.code") $(head -c 300 "$W/denied.json")"
	fi
}

# ---------------------------------------------------------------- cosign: serve-original
d=$(manifest_digest "$MIRROR" cs/app 1.0 -A "$UA")
expect "cs/app:1.0 signed with k1 (.sig tag): verified and served optimized" "[ -n '$d' ] && [ '$d' != '$ORIG' ]" "got '$d'"
expect "... the log names the cosign signature and key that verified it" \
	"regslim_log_has 'verified docker.io/cs/app:1.0 .*cosign signature \\(tag\\) sha256:[0-9a-f]{64} by key sha256:'" \
	"$(grep 'cs/app' "$RS_LOG" | tail -n 2)"
d=$(manifest_digest "$MIRROR" cs/rotated 1.0 -A "$UA")
expect "cs/rotated:1.0 signed with k2 (key rotation): served optimized" "[ -n '$d' ] && [ '$d' != '$ORIG' ]" "got '$d'"
before=$(metric regslim_signature_unverified_total 'action="serve-original"')
d=$(manifest_digest "$MIRROR" cs/unsigned 1.0 -A "$UA")
expect_eq "cs/unsigned:1.0 (no cosign signature): the original is served" "$d" "$ORIG"
d=$(manifest_digest "$MIRROR" cs/otherkey 1.0 -A "$UA")
expect_eq "cs/otherkey:1.0 (signed with a key not configured): the original is served" "$d" "$ORIG"
expect_eq "... both counted as serve-original" \
	"$(metric regslim_signature_unverified_total 'action="serve-original"')" "$((before + 2))"
expect "... and logged with the reason" \
	"regslim_log_has 'cs/otherkey:1.0 .* is not verified \\(served original.*not signed by a key of cosign_public_keys'" \
	"$(grep 'cs/otherkey' "$RS_LOG" | tail -n 1)"

# ---------------------------------------------------------------- cosign: refuse
expect_refused "cr/otherkey: another key, 403 DENIED" cr/otherkey "not signed by a key of cosign_public_keys"
expect_refused "cr/wrongdigest: the payload names another digest, 403" cr/wrongdigest "signed digest $OTHER is not sha"
expect_refused "cr/wrongrepo: the payload names another repository, 403" cr/wrongrepo \
	"signed identity docker.io/cr/other is not of docker.io/cr/wrongrepo"
expect_refused "cr/wrongtag: the payload names another tag, 403" cr/wrongtag \
	"signed identity docker.io/cr/wrongtag:2.0 is not tag 1.0"
expect_refused "cr/tampered: a tampered signature, 403" cr/tampered "not signed by a key of cosign_public_keys"
expect_refused "cr/unsigned: no signature, 403" cr/unsigned "no cosign signature of $ORIG"
d=$(manifest_digest "$MIRROR" cr/referrer 1.0 -A "$UA")
expect "cr/referrer:1.0 signed in the referrers form: verified and served optimized" \
	"[ -n '$d' ] && [ '$d' != '$ORIG' ]" "got '$d': $(grep 'cr/referrer' "$RS_LOG" | tail -n 1)"
expect "... by the referrer" "regslim_log_has 'verified docker.io/cr/referrer:1.0 .*cosign signature \\(referrer\\)'" \
	"$(grep 'cr/referrer' "$RS_LOG" | tail -n 1)"

# ---------------------------------------------------------------- gpg and cosign keys in one rule
d=$(manifest_digest "$MIRROR" mix/cosign 1.0 -A "$UA")
expect "mix/cosign:1.0 (gpg_keyring + cosign keys, only a cosign signature): either is enough, optimized" \
	"[ -n '$d' ] && [ '$d' != '$ORIG' ]" "got '$d': $(grep 'mix/cosign' "$RS_LOG" | tail -n 1)"
d=$(manifest_digest "$MIRROR" mix/gpg 1.0 -A "$UA")
expect "mix/gpg:1.0 (only a GPG signature): either is enough, optimized" "[ -n '$d' ] && [ '$d' != '$ORIG' ]" \
	"got '$d': $(grep 'mix/gpg' "$RS_LOG" | tail -n 1)"
expect "... by the GPG key, from the lookaside" \
	"regslim_log_has 'verified docker.io/mix/gpg:1.0 .*gpg signature 1 of file://$S/lookaside by key $PUB'" \
	"$(grep 'mix/gpg' "$RS_LOG" | tail -n 1)"
expect_refused "mix/none: neither kind, 403 naming both" mix/none "gpg: no signature of .*; cosign: no cosign signature"

# ---------------------------------------------------------------- pass-through, byte for byte
# same HOSTPORT_A HOSTPORT_B PATH: GET both (all manifest types accepted); identical bytes and 200
same() {
	local a b
	a=$(curl -s -o "$W/a.bin" -w '%{http_code}' --max-time "$HTTP_TIMEOUT" -A "$UA" "${RS_ACCEPT_ALL[@]}" \
		-H "Accept: $OCI_I" "http://$1$3")
	b=$(curl -s -o "$W/b.bin" -w '%{http_code}' --max-time "$HTTP_TIMEOUT" -A "$UA" "${RS_ACCEPT_ALL[@]}" \
		-H "Accept: $OCI_I" "http://$2$3")
	[ "$a" = 200 ] && [ "$b" = 200 ] && cmp -s "$W/a.bin" "$W/b.bin"
}
H=${ORIG#sha256:}
for kind in sig att sbom; do
	expect "cs/app sha256-<hex>.$kind through regslim: the upstream's bytes" \
		"same '$U' '$MIRROR' /v2/cs/app/manifests/sha256-$H.$kind" "differs or not 200"
	expect "cr/app sha256-<hex>.$kind under refuse: the upstream's bytes (not verified, not refused)" \
		"same '$U' '$MIRROR' /v2/cr/app/manifests/sha256-$H.$kind" "$(head -c 200 "$W/b.bin")"
done
expect "the cosign payload blob through regslim: the upstream's bytes" \
	"same '$U' '$MIRROR' /v2/cs/app/blobs/$(sha256_of "$W/cs/app/payload")" "differs"
expect "the referrers tag sha256-<hex> through regslim: the upstream's bytes" \
	"same '$U' '$MIRROR' /v2/cr/referrer/manifests/sha256-$H" "differs"
RD=$(sha256_of "$W/cr/referrer/sig.json")
expect "the referrer (cosign signature manifest) by digest through regslim: the upstream's bytes" \
	"same '$U' '$MIRROR' /v2/cr/referrer/manifests/$RD" "differs"
code=$(curl -s -o "$W/refs.json" -w '%{http_code}' --max-time "$HTTP_TIMEOUT" "$RS_URL/v2/cr/referrer/referrers/$ORIG")
expect_eq "GET /v2/cr/referrer/referrers/<original>: 200" "$code" 200
expect_eq "... lists the upstream's descriptor unchanged" "$(jq -cS '.manifests' "$W/refs.json")" \
	"$(jq -cS '.manifests' "$W/cr/referrer/referrers.json")"
expect_eq "a pull by digest of the original is the original" "$(manifest_digest "$MIRROR" cs/app "$ORIG")" "$ORIG"
expect "no key material in regslim's log" "! grep -qE 'BEGIN (EC |PGP )?(PUBLIC|PRIVATE)' '$RS_LOG'" "found in $RS_LOG"

# ---------------------------------------------------------------- the signature extension
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time "$HTTP_TIMEOUT" -A "$UA" "${RS_ACCEPT_ALL[@]}" \
	"$RS_URL/v2/ext.lab/sig/app/manifests/1.0")
expect_eq "ext.lab/sig/app:1.0: the GPG signature from the upstream's extension verifies (200)" "$code" 200
expect "... regslim asked the extension" "grep -q 'GET /extensions/v2/sig/app/signatures/$EXT_DIGEST' '$LOGS/sigext.log'" \
	"$(tail -n 3 "$LOGS/sigext.log")"
expect "... and logged which key" "regslim_log_has 'verified ext.lab/sig/app:1.0 .*gpg signature 1 of the upstream.s signature extension by key $PUB'" \
	"$(grep 'sig/app' "$RS_LOG" | tail -n 1)"
expect_refused "ext.lab/sig/tampered: a tampered signature in the extension, 403" ext.lab/sig/tampered \
	"the upstream's extension: signature 1 of $EXT_DIGEST: not signed by a key of the keyring"
expect_refused "ext.lab/sig/none: the extension has no signature, 403" ext.lab/sig/none "no signature of $EXT_DIGEST"

# ---------------------------------------------------------------- the push gate signs what it pushes
G=$S/gate
mkdir -p "$G"
htpasswd -Bbc "$G/htpasswd" alice alicepw 2> /dev/null
cat > "$G/regslim.json" << EOF
{"upstreams": [{"name": "docker.io", "url": "http://$U", "default": true}],
 "auth": {"htpasswd": "$G/htpasswd", "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]},
 "push": {"policies": [{"repositories": ["gated/*"], "mode": "optimize-and-push", "rules": {"secrets": {"action": "deny"}}},
                       {"repositories": ["both/*"], "mode": "push-original-and-optimized", "optimized_tag_suffix": "-slim",
                        "rules": {"secrets": {"action": "deny"}}}]},
 "signatures": {"sign": {"gpg_home": "$S/org", "gpg_key": "$ORG", "cosign_key_file": "$G/cosign.key"}}}
EOF
expect "the gate's cosign key pair made with openssl" \
	"timeout 30 openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out '$G/cosign.key' 2> /dev/null &&
	 timeout 30 openssl pkey -in '$G/cosign.key' -pubout -out '$G/cosign.pub' 2> /dev/null" "openssl failed"
G_PORT=$((LAB_PORT_BASE + 52))
if regslim_spawn gate "$G_PORT" "" "$REGSLIM_LAB/rs-gate" --config "$G/regslim.json" 2> "$LOGS/gate-start.err"; then
	pass "regslim with a push policy and a signing key started"
else
	fail "regslim gate start" "$(head -n 3 "$LOGS/gate-start.err")"
	finish
fi
: > "$LOGS/gate-push.log"
expect "skopeo pushes gated/app:1 through the gate (optimize-and-push)" \
	"timeout 300 skopeo --insecure-policy copy --src-tls-verify=false --dest-tls-verify=false --dest-creds alice:alicepw \
	 'docker://$U/library/tiny:latest' 'docker://127.0.0.1:$G_PORT/gated/app:1' > '$LOGS/gate-push.log' 2>&1" \
	"$(tail -n 2 "$LOGS/gate-push.log")"
PD=$(manifest_digest "$U" gated/app 1)
expect "the upstream's gated/app:1 is the optimized image" "[ -n '$PD' ] && [ '$PD' != '$ORIG' ]" "got '$PD'"
code=$(curl -s -u alice:alicepw -o "$W/gate.sig" -w '%{http_code}' --max-time "$HTTP_TIMEOUT" \
	"http://127.0.0.1:$G_PORT/sigstore/gated/app@sha256=${PD#sha256:}/signature-1")
expect_eq "regslim's lookaside has a signature of the pushed optimized image" "$code" 200
mkdir -p "$S/check" && chmod 700 "$S/check"
timeout $GPGT gpg --homedir "$S/check" --batch --import "$S/org.gpg" > /dev/null 2>&1
if timeout $GPGT gpg --homedir "$S/check" --batch --status-fd 1 --output "$W/gate.payload" --decrypt "$W/gate.sig" \
	2> /dev/null | grep -q "VALIDSIG $ORG"; then
	pass "... it verifies with gpg and the org key"
else
	fail "... it verifies with gpg and the org key" "no VALIDSIG $ORG"
fi
expect_eq "... names the pushed reference" "$(jq -r '.critical.identity["docker-reference"]' "$W/gate.payload" 2> /dev/null)" \
	"docker.io/gated/app:1"
expect_eq "... and the optimized digest" "$(jq -r '.critical.image["docker-manifest-digest"]' "$W/gate.payload" 2> /dev/null)" \
	"$PD"
# the cosign signature went upstream with the image: read from the upstream directly, checked with openssl
# cosign_upstream REPO DIGEST PREFIX: the upstream's sha256-<hex>.sig of DIGEST in REPO into PREFIX.json, its
# first layer's payload blob into PREFIX.payload and its signature (DER) into PREFIX.der
cosign_upstream() {
	manifest_get "$U" "$1" "sha256-${2#sha256:}.sig" > "$3.json" &&
		http_get "http://$U/v2/$1/blobs/$(jq -r '.layers[0].digest' "$3.json")" > "$3.payload" &&
		jq -r '.layers[0].annotations["dev.cosignproject.cosign/signature"]' "$3.json" | base64 -d > "$3.der"
}
# cosign_ok PREFIX DIGEST IDENTITY: the .sig of cosign_upstream is cosign's (one simple-signing layer whose blob is
# the payload, subject DIGEST), the payload names IDENTITY and DIGEST, and its signature verifies with the gate's key
cosign_ok() {
	[ "$(jq -r '.layers | length' "$1.json")" = 1 ] &&
		[ "$(jq -r '.layers[0].mediaType' "$1.json")" = "$COSIGN_MT" ] &&
		[ "$(jq -r '.layers[0].digest' "$1.json")" = "$(sha256_of "$1.payload")" ] &&
		[ "$(jq -r '"\(.subject.digest) \(.artifactType)"' "$1.json")" = "$2 $COSIGN_AT" ] &&
		[ "$(jq -r .critical.type "$1.payload")" = "cosign container image signature" ] &&
		[ "$(jq -r '.critical.image["docker-manifest-digest"]' "$1.payload")" = "$2" ] &&
		[ "$(jq -r '.critical.identity["docker-reference"]' "$1.payload")" = "$3" ] &&
		timeout 30 openssl dgst -sha256 -verify "$G/cosign.pub" -signature "$1.der" "$1.payload" > /dev/null 2>&1
}
expect "the upstream has the sha256-<optimized hex>.sig tag of gated/app (read from the upstream directly)" \
	"cosign_upstream gated/app '$PD' '$W/gcos'" "$(head -c 300 "$W/gcos.json" 2> /dev/null)"
expect_eq "... its subject is the pushed optimized manifest (digest, size, type)" \
	"$(jq -r '"\(.subject.digest) \(.subject.size) \(.subject.mediaType)"' "$W/gcos.json" 2> /dev/null)" \
	"$PD $(manifest_get "$U" gated/app 1 | wc -c) $(manifest_get "$U" gated/app 1 | jq -r .mediaType)"
expect_eq "... its payload names the optimized digest" \
	"$(jq -r '.critical.image["docker-manifest-digest"]' "$W/gcos.payload" 2> /dev/null)" "$PD"
expect_eq "... and the pushed reference" \
	"$(jq -r '.critical.identity["docker-reference"]' "$W/gcos.payload" 2> /dev/null)" "docker.io/gated/app:1"
expect "... its signature verifies over the payload with the gate's public key (openssl dgst -verify)" \
	"timeout 30 openssl dgst -sha256 -verify '$G/cosign.pub' -signature '$W/gcos.der' '$W/gcos.payload'" \
	"Verification failure"
expect "... and the whole .sig is cosign's layout" "cosign_ok '$W/gcos' '$PD' docker.io/gated/app:1" \
	"$(head -c 300 "$W/gcos.json" 2> /dev/null)"
http_get "http://$U/v2/gated/app/blobs/$(jq -r .config.digest "$W/gcos.json" 2> /dev/null)" > "$W/gcos.config" || true
expect_eq "... whose config names the payload as its one diff_id" \
	"$(jq -r '.rootfs.diff_ids | join(" ")' "$W/gcos.config" 2> /dev/null)" "$(sha256_of "$W/gcos.payload")"
$PY - "$W/gcos.der" "$W/gcos-t.der" << 'EOF'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[len(b) // 2] ^= 1
open(sys.argv[2], "wb").write(bytes(b))
EOF
expect "a tampered signature fails the same check" \
	"! timeout 30 openssl dgst -sha256 -verify '$G/cosign.pub' -signature '$W/gcos-t.der' '$W/gcos.payload' > /dev/null 2>&1" \
	"the tampered signature verified"
sed "s/${PD#sha256:}/${ORIG#sha256:}/" "$W/gcos.payload" > "$W/gcos-t.payload"
expect "... and so does the signature over a payload naming the original digest" \
	"! timeout 30 openssl dgst -sha256 -verify '$G/cosign.pub' -signature '$W/gcos.der' '$W/gcos-t.payload' > /dev/null 2>&1" \
	"it verified"
expect_eq "the original has no .sig of regslim's upstream (404)" \
	"$(http_code "http://$U/v2/gated/app/manifests/sha256-${ORIG#sha256:}.sig" "${RS_ACCEPT_ALL[@]}")" 404
# an index: the optimized index and each platform manifest get their .sig upstream
: > "$LOGS/gate-push3.log"
expect "skopeo pushes the multi-platform gated/multi:1 through the gate (optimize-and-push, --all)" \
	"timeout 300 skopeo --insecure-policy copy --all --src-tls-verify=false --dest-tls-verify=false --dest-creds alice:alicepw \
	 'docker://$U/library/multi:latest' 'docker://127.0.0.1:$G_PORT/gated/multi:1' > '$LOGS/gate-push3.log' 2>&1" \
	"$(tail -n 2 "$LOGS/gate-push3.log")"
MD=$(manifest_digest "$U" gated/multi 1)
manifest_get "$U" gated/multi 1 > "$W/gmulti.json" 2> /dev/null || true
n=0
for d in "$MD" $(jq -r '.manifests[].digest' "$W/gmulti.json" 2> /dev/null); do
	if [ -n "$d" ] && cosign_upstream gated/multi "$d" "$W/gmulti-$n" &&
		cosign_ok "$W/gmulti-$n" "$d" docker.io/gated/multi:1; then
		pass "upstream .sig of $([ $n = 0 ] && echo the optimized index || echo platform manifest $n) of gated/multi:1 verifies (subject, identity, digest)"
	else
		fail "upstream .sig of gated/multi:1 document $n ($d)" "$(head -c 300 "$W/gmulti-$n.json" 2> /dev/null)"
	fi
	n=$((n + 1))
done
expect_ge "the index and at least two platform manifests checked" "$n" 3
# push-original-and-optimized: the optimized image is signed as tag + suffix, the original is not regslim's to sign
: > "$LOGS/gate-push2.log"
expect "skopeo pushes both/app:1 through the gate (push-original-and-optimized)" \
	"timeout 300 skopeo --insecure-policy copy --src-tls-verify=false --dest-tls-verify=false --dest-creds alice:alicepw \
	 'docker://$U/library/tiny:latest' 'docker://127.0.0.1:$G_PORT/both/app:1' > '$LOGS/gate-push2.log' 2>&1" \
	"$(tail -n 2 "$LOGS/gate-push2.log")"
BD=$(manifest_digest "$U" both/app 1-slim)
curl -s -u alice:alicepw -o "$W/both.sig" --max-time "$HTTP_TIMEOUT" \
	"http://127.0.0.1:$G_PORT/sigstore/both/app@sha256=${BD#sha256:}/signature-1"
if [ -n "$BD" ] && timeout $GPGT gpg --homedir "$S/check" --batch --status-fd 1 --output "$W/both.payload" --yes \
	--decrypt "$W/both.sig" 2> /dev/null | grep -q "VALIDSIG $ORG"; then
	pass "the optimized both/app:1-slim is signed with the org key"
else
	fail "the optimized both/app:1-slim is signed with the org key" "digest '$BD'"
fi
expect_eq "... for the reference it is pushed as (with the suffix)" \
	"$(jq -r '.critical.identity["docker-reference"]' "$W/both.payload" 2> /dev/null)" "docker.io/both/app:1-slim"
code=$(curl -s -u alice:alicepw -o /dev/null -w '%{http_code}' --max-time "$HTTP_TIMEOUT" \
	"http://127.0.0.1:$G_PORT/sigstore/both/app@sha256=${ORIG#sha256:}/signature-1")
expect_eq "the original pushed at both/app:1 has no signature of regslim's: 404" "$code" 404
expect "the upstream has the cosign .sig of both/app:1-slim, for the reference with the suffix" \
	"cosign_upstream both/app '$BD' '$W/bcos' && cosign_ok '$W/bcos' '$BD' docker.io/both/app:1-slim" \
	"$(head -c 300 "$W/bcos.json" 2> /dev/null)"
expect_eq "... and none of the original pushed at both/app:1 (404)" \
	"$(http_code "http://$U/v2/both/app/manifests/sha256-${ORIG#sha256:}.sig" "${RS_ACCEPT_ALL[@]}")" 404
lab_stop regslim-gate 15

# a gate (cosign key only) whose push upstream, another than the one it mirrors, does not answer
# (nothing listens on its port): the forward fails on the signature, the first thing it sends there
DOWN_PORT=$((LAB_PORT_BASE + 63))
cat > "$G/down.json" << EOF
{"upstreams": [{"name": "docker.io", "url": "http://$U", "default": true},
               {"name": "down.lab", "url": "http://127.0.0.1:$DOWN_PORT", "timeout_s": 10}],
 "auth": {"htpasswd": "$G/htpasswd", "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]},
 "push": {"upstream": "down.lab",
          "policies": [{"repositories": ["gated/*"], "mode": "optimize-and-push", "rules": {"secrets": {"action": "deny"}}}]},
 "signatures": {"sign": {"cosign_key_file": "$G/cosign.key"}}}
EOF
if regslim_spawn gate-down "$G_PORT" "" "$REGSLIM_LAB/rs-gate-down" --config "$G/down.json" 2> "$LOGS/gate-down.err"; then
	: > "$LOGS/gate-push4.log"
	expect "a push through a gate whose upstream cannot take the cosign signature fails" \
		"! timeout 300 skopeo --insecure-policy copy --retry-times 0 --src-tls-verify=false --dest-tls-verify=false \
		 --dest-creds alice:alicepw 'docker://$U/library/tiny:latest' 'docker://127.0.0.1:$G_PORT/gated/down:1' \
		 > '$LOGS/gate-push4.log' 2>&1" "$(tail -n 2 "$LOGS/gate-push4.log")"
	# the same manifest again with curl (skopeo uploaded its blobs), to read the answer's body
	manifest_get "$U" library/tiny latest > "$W/down-m.json" 2> /dev/null || true
	code=$(curl -s -u alice:alicepw -o "$W/down.answer" -w '%{http_code}' --max-time "$HTTP_TIMEOUT" -X PUT \
		-H "Content-Type: $(jq -r '.mediaType // "application/vnd.docker.distribution.manifest.v2+json"' "$W/down-m.json")" \
		--data-binary "@$W/down-m.json" "http://127.0.0.1:$G_PORT/v2/gated/down/manifests/1")
	expect "... the client is told why: 502, the forward failed on the cosign signature" \
		"[ '$code' = 502 ] && grep -q 'forwarding to the upstream failed: signing the optimized image .*cosign signature gated/down:sha256-' '$W/down.answer'" \
		"$code $(head -c 300 "$W/down.answer")"
	expect "... and regslim says the cosign signature could not be pushed" \
		"grep -qE 'push gated/down:1 .*not forwarded: signing the optimized image sha256:[0-9a-f]{64}: cosign signature gated/down:sha256-[0-9a-f]{64}[.]sig: upstream down.lab' '$LOGS/regslim-gate-down.log'" \
		"$(grep 'gated/down' "$LOGS/regslim-gate-down.log" | tail -n 1)"
	lab_stop regslim-gate-down 15
else
	fail "regslim gate-down start" "$(head -n 3 "$LOGS/gate-down.err")"
fi

finish
