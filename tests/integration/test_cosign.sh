#!/usr/bin/env bash
# test_cosign.sh - cosign-format signatures of optimized images and the attestation linking an
# optimized image to its original (docs/signatures.md), checked through the registry API with the
# test's own verifier: `openssl dgst -sha256 -verify` and, when Debian's python3-cryptography is
# installed, Python's cryptography (ECDSA P-256 / SHA-256 over the payload bytes), never regslim's
# code.
#
# Set-up, all made by the test: a publisher GPG key that signs originals in the lab's
# docker-registry with `skopeo copy --sign-by` into a file:// lookaside; the organisation's GPG
# key (`regslim keygen --gpg`) and cosign key pair (`regslim keygen --cosign`). regslim is the
# docker.io mirror, optimizing; org/* has a verify rule (the publisher's keyring), plain/* none.
# Checks:
#   - keygen --cosign: the key file is 0600, both PEM files are a P-256 key pair (openssl)
#   - a wrong-curve or non-key cosign_key_file stops regslim at start naming the setting, and
#     check-config refuses it
#   - the optimized tag's `sha256-<hex>.sig`: cosign's layout (simple-signing layer, signature
#     annotation, config whose diff_ids name the layer), subject = the optimized manifest; the
#     payload names the pulled reference and the optimized digest; its signature verifies with the
#     public key; a tampered signature or payload does not
#   - the referrers API of the optimized digest lists the .sig manifest and the attestation, and
#     filters by artifactType
#   - the attestation records the original digest, the publisher's key that verified it, the
#     policy digest, the optimizer version and the report's digest; its cosign signature and its
#     GPG simple-signing signature (regslim's /sigstore/) verify, and so does the .sig of its digest
#   - made once: a second pull changes nothing; a second tag of the same image adds a layer to the
#     .sig manifest (the replaced manifest leaves the referrers list); an index's .sig and each
#     platform manifest's; everything survives a restart
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

export RS_OPTIMIZE=1
lab_setup
upstream_start
U=$REG_PLAIN
S=$REGSLIM_LAB/cos
mkdir -p "$S/pub" "$S/lookaside" "$S/rd-publish"
chmod 700 "$S/pub"
GPGT=60
UA=skopeo/1.9.3
SIG_AT=application/vnd.dev.cosign.artifact.sig.v1+json
ATT_AT=application/vnd.regslim.optimization.v1+json

stop_agents() {
	local h
	for h in "$S/pub" "$S/org" "$S/check"; do
		[ -d "$h" ] && timeout 20 gpgconf --homedir "$h" --kill gpg-agent > /dev/null 2>&1
	done
	true
}
lab_on_exit stop_agents

# ---------------------------------------------------------------- the test's own verifier
# ecdsa_ok PUB.pem SIG_BASE64 FILE: the signature verifies over FILE's bytes with openssl and,
# when Debian's python3 has the cryptography module, with it too
HAVE_PYCRYPTO=0
"$PY" -c 'import cryptography.hazmat.primitives.asymmetric.ec' > /dev/null 2>&1 && HAVE_PYCRYPTO=1
ecdsa_ok() {
	local der=$S/sig.der
	printf '%s' "$2" | base64 -d > "$der" 2> /dev/null || return 1
	timeout 30 openssl dgst -sha256 -verify "$1" -signature "$der" "$3" > /dev/null 2>&1 || return 1
	[ "$HAVE_PYCRYPTO" = 1 ] || return 0
	timeout 30 "$PY" - "$1" "$2" "$3" << 'EOF'
import base64, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
key = serialization.load_pem_public_key(open(sys.argv[1], "rb").read())
assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
key.verify(base64.b64decode(sys.argv[2], validate=True), open(sys.argv[3], "rb").read(), ec.ECDSA(hashes.SHA256()))
EOF
}
# blob REPO DIGEST FILE: GET a blob through regslim into FILE; it hashes to DIGEST
blob() { http_get "$RS_URL/v2/$1/blobs/$2" -o "$3" && [ "$(sha256_of "$3")" = "$2" ]; }
# sig_manifest REPO DIGEST FILE: GET the sha256-<hex>.sig manifest of DIGEST into FILE
sig_manifest() { manifest_get "$MIRROR" "$1" "sha256-${2#sha256:}.sig" > "$3"; }
# sig_layers_ok REPO DIGEST FILE IDENTITY...: every layer of the .sig manifest FILE is a payload
# blob naming DIGEST whose signature verifies; their identities are exactly IDENTITY...
sig_layers_ok() {
	local repo=$1 digest=$2 m=$3 i n ids=()
	shift 3
	n=$(jq '.layers | length' "$m") || return 1
	[ "$n" = $# ] || return 1
	for ((i = 0; i < n; i++)); do
		[ "$(jq -r ".layers[$i].mediaType" "$m")" = application/vnd.dev.cosign.simplesigning.v1+json ] || return 1
		blob "$repo" "$(jq -r ".layers[$i].digest" "$m")" "$S/payload-$i" || return 1
		[ "$(jq -r '.critical.type' "$S/payload-$i")" = "cosign container image signature" ] || return 1
		[ "$(jq -r '.critical.image["docker-manifest-digest"]' "$S/payload-$i")" = "$digest" ] || return 1
		ecdsa_ok "$S/cosign/cosign.pub" "$(jq -r ".layers[$i].annotations[\"dev.cosignproject.cosign/signature\"]" "$m")" \
			"$S/payload-$i" || return 1
		ids+=("$(jq -r '.critical.identity["docker-reference"]' "$S/payload-$i")")
	done
	[ "${ids[*]}" = "$*" ]
}

# ---------------------------------------------------------------- keys
if timeout $GPGT gpg --homedir "$S/pub" --batch --passphrase '' \
	--quick-gen-key "Lab Publisher <publisher@example.com>" default sign never > "$LOGS/gpg-pub.log" 2>&1; then
	PUB=$(gpg --homedir "$S/pub" --with-colons -K 2> /dev/null | awk -F: '$1 == "fpr" { print $10; exit }')
	pass "publisher key made with gpg --batch"
else
	fail "publisher key" "$(tail -n 2 "$LOGS/gpg-pub.log")"
	finish
fi
timeout $GPGT gpg --homedir "$S/pub" --export "$PUB" > "$S/publisher.gpg"
ORG=$(timeout $GPGT "$REGSLIM_BIN" keygen --gpg "$S/org" 2> "$LOGS/keygen-gpg.err")
[[ $ORG =~ ^[0-9A-F]{40}$ ]] || { fail "regslim keygen --gpg" "$(tail -n 1 "$LOGS/keygen-gpg.err")"; finish; }
timeout $GPGT gpg --homedir "$S/org" --export "$ORG" > "$S/org.gpg"
KEY=$(timeout 30 "$REGSLIM_BIN" keygen --cosign "$S/cosign" 2> "$LOGS/keygen-cosign.err")
expect_eq "regslim keygen --cosign prints the private key's path" "$KEY" "$S/cosign/cosign.key"
expect_eq "... mode 0600" "$(stat -c %a "$S/cosign/cosign.key" 2> /dev/null)" 600
expect "... an ECDSA P-256 private key (openssl)" \
	"openssl pkey -in '$S/cosign/cosign.key' -noout -text | grep -q 'NIST CURVE: P-256'" "$(head -c 300 "$S/cosign/cosign.key" | head -n 1)"
expect "... and its public key in cosign.pub" \
	"cmp -s <(openssl pkey -in '$S/cosign/cosign.key' -pubout) <(openssl pkey -pubin -in '$S/cosign/cosign.pub')" \
	"the public key does not match"
expect "... never over an existing key" "! timeout 30 '$REGSLIM_BIN' keygen --cosign '$S/cosign' 2> /dev/null" "it overwrote"
[ -s "$S/cosign/cosign.key" ] || finish

# ---------------------------------------------------------------- a bad key stops regslim
touch "$LOGS/bad.log"
badkey() { # badkey NAME: regslim with cosign_key_file NAME exits non-zero naming the setting
	printf '{"signatures": {"sign": {"cosign_key_file": "%s"}}}\n' "$1" > "$S/bad.json"
	! timeout 30 "$REGSLIM_BIN" serve --config "$S/bad.json" --listen "127.0.0.1:$((LAB_PORT_BASE + 61))" \
		--data-dir "$REGSLIM_LAB/bad" --upstream "http://$U" > "$LOGS/bad.log" 2>&1 &&
		grep -q 'signatures.sign.cosign_key_file' "$LOGS/bad.log"
}
timeout 30 openssl ecparam -name secp384r1 -genkey -noout -out "$S/p384.pem" 2> /dev/null
expect "a P-384 cosign_key_file stops regslim at start, naming the setting" "badkey '$S/p384.pem'" \
	"$(tail -n 2 "$LOGS/bad.log")"
expect "... and says why" "grep -q 'is not an ECDSA P-256 key' '$LOGS/bad.log'" "$(tail -n 1 "$LOGS/bad.log")"
expect "a public key as cosign_key_file stops regslim at start" "badkey '$S/cosign/cosign.pub'" \
	"$(tail -n 2 "$LOGS/bad.log")"
printf '{"signatures": {"sign": {"cosign_key_file": "%s"}}}\n' "$S/p384.pem" > "$S/bad.json"
expect "regslim check-config refuses the P-384 key too" \
	"! timeout 30 '$REGSLIM_BIN' check-config '$S/bad.json' > /dev/null 2> '$LOGS/cc.err' && grep -q 'cosign_key_file: .* is not an ECDSA P-256 key' '$LOGS/cc.err'" \
	"$(cat "$LOGS/cc.err" 2> /dev/null)"
printf '{"signatures": {"sign": {"cosign_key_file": "%s"}}}\n' "$S/cosign/cosign.key" > "$S/good.json"
expect "regslim check-config accepts the key keygen made" \
	"timeout 30 '$REGSLIM_BIN' check-config '$S/good.json' > /dev/null 2> '$LOGS/cc.err'" "$(cat "$LOGS/cc.err" 2> /dev/null)"

# ---------------------------------------------------------------- originals
cat > "$S/rd-publish/lab.yaml" << EOF
docker:
  $U:
    lookaside: file://$S/lookaside
EOF
publish() { # publish SRC REPO:TAG [sign [--all]]
	local sign=()
	[ "${3:-}" = sign ] && sign=(--sign-by "$PUB" --sign-identity "docker.io/$2")
	timeout 300 env GNUPGHOME="$S/pub" skopeo --insecure-policy --registries.d "$S/rd-publish" --tmpdir "$REGSLIM_LAB/tmp" \
		copy --src-tls-verify=false --dest-tls-verify=false "${sign[@]}" ${4:+"$4"} \
		"docker://$U/$1" "docker://$U/$2" >> "$LOGS/publish.log" 2>&1
}
ok=1
# two tags of one original: skopeo writes each tag's signature as signature-1 of the digest, so
# the 2.0 one is kept aside and put back as signature-2
publish library/tiny:latest org/app:2.0 sign || ok=0
sigdir=$(ls -d "$S"/lookaside/org/app@sha256=* 2> /dev/null | head -n 1)
[ -n "$sigdir" ] && mv "$sigdir/signature-1" "$S/app-2.0.sig"
publish library/tiny:latest org/app:1.0 sign || ok=0
[ -n "$sigdir" ] && mv "$S/app-2.0.sig" "$sigdir/signature-2"
publish library/multi:latest org/multi:1.0 sign --all || ok=0
publish library/tiny:latest plain/app:1.0 || ok=0
expect "publisher copies and signs originals with skopeo copy --sign-by" "[ $ok = 1 ]" "$(tail -n 3 "$LOGS/publish.log")"

cat > "$S/regslim.json" << EOF
{
  "signatures": {
    "sign": {"gpg_home": "$S/org", "gpg_key": "$ORG", "cosign_key_file": "$S/cosign/cosign.key"},
    "verify": [
      {"upstream": "docker.io", "repositories": ["org/*"], "gpg_keyring": "$S/publisher.gpg",
       "lookaside": "file://$S/lookaside", "on_unverified": "refuse"}
    ]
  }
}
EOF
start_regslim --config "$S/regslim.json"
KEYID=sha256:$(openssl pkey -pubin -in "$S/cosign/cosign.pub" -outform DER 2> /dev/null | sha256sum | cut -d' ' -f1)
expect "regslim names the cosign key by its public key's digest" "regslim_log_has 'cosign signing key $KEYID'" \
	"$(grep -m1 cosign "$RS_LOG")"
expect "regslim does not warn that cosign signing is unsupported" "! regslim_log_has 'not yet supported; optimized'" \
	"$(grep -m1 'not yet' "$RS_LOG")"

# ---------------------------------------------------------------- the .sig of an optimized tag
orig=$(manifest_digest "$U" org/app 1.0)
opt=$(manifest_digest "$MIRROR" org/app 1.0 -A "$UA")
expect "org/app:1.0 (verified) is served optimized" "[ -n '$opt' ] && [ '$opt' != '$orig' ]" "got '$opt'"
[ -n "$opt" ] || { log_tail "$RS_LOG" 5; finish; }
manifest_get "$MIRROR" org/app 1.0 -A "$UA" > "$S/opt.json" || true
code=$(http_code "$RS_URL/v2/org/app/manifests/sha256-${opt#sha256:}.sig" "${RS_ACCEPT_ALL[@]}")
expect_eq "GET /v2/org/app/manifests/sha256-<optimized hex>.sig: 200" "$code" 200
sig_manifest org/app "$opt" "$S/sig1.json" || true
expect_eq "... an OCI image manifest" "$(jq -r .mediaType "$S/sig1.json" 2> /dev/null)" \
	application/vnd.oci.image.manifest.v1+json
expect_eq "... whose subject is the optimized manifest" "$(jq -r .subject.digest "$S/sig1.json" 2> /dev/null)" "$opt"
expect_eq "... subject size and type" "$(jq -r '"\(.subject.size) \(.subject.mediaType)"' "$S/sig1.json" 2> /dev/null)" \
	"$(wc -c < "$S/opt.json") $(jq -r .mediaType "$S/opt.json")"
expect "... one simple-signing layer with the signature annotation" \
	"[ \"\$(jq -r '.layers[0].mediaType' '$S/sig1.json')\" = application/vnd.dev.cosign.simplesigning.v1+json ] &&
	 jq -e '.layers[0].annotations[\"dev.cosignproject.cosign/signature\"] | length > 60' '$S/sig1.json'" \
	"$(head -c 300 "$S/sig1.json")"
pd=$(jq -r '.layers[0].digest' "$S/sig1.json" 2> /dev/null)
expect "the payload blob is served under org/app and hashes to its digest" "blob org/app '$pd' '$S/payload.json'" "$pd"
expect_eq "payload type" "$(jq -r .critical.type "$S/payload.json" 2> /dev/null)" "cosign container image signature"
expect_eq "payload identity is the reference the client pulls" \
	"$(jq -r '.critical.identity["docker-reference"]' "$S/payload.json" 2> /dev/null)" docker.io/org/app:1.0
expect_eq "payload digest is the optimized manifest" \
	"$(jq -r '.critical.image["docker-manifest-digest"]' "$S/payload.json" 2> /dev/null)" "$opt"
expect_eq "payload has cosign's optional: null" "$(jq -c .optional "$S/payload.json" 2> /dev/null)" null
SIG=$(jq -r '.layers[0].annotations["dev.cosignproject.cosign/signature"]' "$S/sig1.json" 2> /dev/null)
expect "the signature verifies with cosign.pub (openssl$([ $HAVE_PYCRYPTO = 1 ] && echo ' and python3-cryptography'))" \
	"ecdsa_ok '$S/cosign/cosign.pub' '$SIG' '$S/payload.json'" "does not verify"
# tampered: one byte of the DER signature changed; one byte of the payload changed
TSIG=$(printf '%s' "$SIG" | base64 -d | "$PY" -c 'import sys; b = bytearray(sys.stdin.buffer.read()); b[len(b) // 2] ^= 1; sys.stdout.buffer.write(b)' | base64 -w0)
expect "a tampered signature fails the same check" "! ecdsa_ok '$S/cosign/cosign.pub' '$TSIG' '$S/payload.json'" \
	"the tampered signature verified"
sed "s/${opt#sha256:}/${orig#sha256:}/" "$S/payload.json" > "$S/payload-orig.json"
expect "the signature does not cover the original digest" \
	"! ecdsa_ok '$S/cosign/cosign.pub' '$SIG' '$S/payload-orig.json'" "it verified"
openssl ecparam -name prime256v1 -genkey -noout 2> /dev/null | openssl pkey -pubout > "$S/other.pub" 2> /dev/null
expect "another key's public key does not verify it" "! ecdsa_ok '$S/other.pub' '$SIG' '$S/payload.json'" "it verified"
cd_=$(jq -r .config.digest "$S/sig1.json" 2> /dev/null)
expect "the .sig config is served and names the payload as its one diff_id (cosign's config)" \
	"blob org/app '$cd_' '$S/sigconf.json' && [ \"\$(jq -r '.rootfs.diff_ids | join(\" \")' '$S/sigconf.json')\" = '$pd' ] &&
	 [ \"\$(jq -r '.history | length' '$S/sigconf.json')\" = 1 ]" "$(head -c 300 "$S/sigconf.json" 2> /dev/null)"
code=$(http_code "$RS_URL/v2/org/app/manifests/sha256-${orig#sha256:}.sig" "${RS_ACCEPT_ALL[@]}")
expect_eq "no .sig of the original is made by regslim (404 from the upstream)" "$code" 404
expect "no key material in regslim's log" "! grep -qE 'BEGIN|PRIVATE KEY' '$RS_LOG'" "found in $RS_LOG"

# ---------------------------------------------------------------- referrers and the attestation
http_get "$RS_URL/v2/org/app/referrers/$opt" > "$S/refs.json" || true
expect "the referrers API of the optimized digest lists the .sig manifest" \
	"jq -e --arg d \"\$(sha256_of '$S/sig1.json')\" '[.manifests[] | select(.digest == \$d and .artifactType == \"$SIG_AT\")] | length == 1' '$S/refs.json'" \
	"$(head -c 400 "$S/refs.json")"
expect_eq "... and one attestation" "$(jq "[.manifests[] | select(.artifactType == \"$ATT_AT\")] | length" "$S/refs.json" 2> /dev/null)" 1
att=$(jq -r ".manifests[] | select(.artifactType == \"$ATT_AT\") | .digest" "$S/refs.json" 2> /dev/null)
[ -n "$att" ] || finish
http_get "$RS_URL/v2/org/app/referrers/$opt?artifactType=application/vnd.regslim.optimization.v1%2Bjson" \
	-D "$S/refs-f.h" > "$S/refs-f.json" || true
expect "?artifactType= the attestation's type lists only it" \
	"[ \"\$(jq -r '[.manifests[].digest] | join(\" \")' '$S/refs-f.json')\" = '$att' ] && grep -qi '^OCI-Filters-Applied: artifactType' '$S/refs-f.h'" \
	"$(head -c 300 "$S/refs-f.json")"
manifest_get "$MIRROR" org/app "$att" > "$S/att.json" || true
expect_eq "the attestation manifest is served by digest" "$(sha256_of "$S/att.json")" "$att"
expect_eq "... its subject is the optimized manifest" "$(jq -r .subject.digest "$S/att.json" 2> /dev/null)" "$opt"
expect_eq "... its own artifactType" "$(jq -r .artifactType "$S/att.json" 2> /dev/null)" "$ATT_AT"
ad=$(jq -r '.layers[0].digest' "$S/att.json" 2> /dev/null)
expect "... its record is served" "blob org/app '$ad' '$S/record.json'" "$ad"
expect_eq "the record names the original digest" "$(jq -r .original.digest "$S/record.json" 2> /dev/null)" "$orig"
expect_eq "... the optimized digest" "$(jq -r .optimized.digest "$S/record.json" 2> /dev/null)" "$opt"
expect_eq "... the signature of the original that verified, with the publisher's key" \
	"$(jq -r '.verification.verified[0] | "\(.method) \(.key) \(.signature)"' "$S/record.json" 2> /dev/null)" \
	"gpg $PUB signature-1"
expect_eq "... the verify rule" "$(jq -r .verification.rule "$S/record.json" 2> /dev/null)" "signatures.verify[0]"
expect "... the policy digest" "jq -e '.policy_digest | test(\"^sha256:[0-9a-f]{64}$\")' '$S/record.json'" \
	"$(jq -c .policy_digest "$S/record.json")"
expect "... the optimizer version" "jq -e '.optimizer_version | startswith(\"regslim \")' '$S/record.json'" \
	"$(jq -c .optimizer_version "$S/record.json")"
http_get "$RS_URL/regslim/v1/reports/org/app/$opt" > "$S/report.json" || true
expect_eq "... the digest of the optimization report regslim serves" \
	"$(jq -r .report_digest "$S/record.json" 2> /dev/null)" "$(sha256_of "$S/report.json")"
ASIG=$(jq -r '.layers[0].annotations["dev.cosignproject.cosign/signature"]' "$S/att.json" 2> /dev/null)
expect "the attestation's cosign signature verifies over the record with cosign.pub" \
	"ecdsa_ok '$S/cosign/cosign.pub' '$ASIG' '$S/record.json'" "does not verify"
sed 's/signature-1/signature-2/' "$S/record.json" > "$S/record-t.json"
expect "... and not over a tampered record" "! ecdsa_ok '$S/cosign/cosign.pub' '$ASIG' '$S/record-t.json'" "it verified"
mkdir -p "$S/check" && chmod 700 "$S/check"
timeout $GPGT gpg --homedir "$S/check" --batch --import "$S/org.gpg" > /dev/null 2>&1
curl -s -o "$S/att.sig" --max-time "$HTTP_TIMEOUT" "$RS_URL/sigstore/org/app@sha256=${att#sha256:}/signature-1"
if timeout $GPGT gpg --homedir "$S/check" --batch --status-fd 1 --output "$S/att.payload" --decrypt "$S/att.sig" \
	> "$LOGS/gpg-att.status" 2> /dev/null && grep -q "VALIDSIG $ORG" "$LOGS/gpg-att.status"; then
	pass "the attestation's GPG signature in regslim's lookaside verifies with the org key"
else
	fail "the attestation's GPG signature in regslim's lookaside verifies with the org key" \
		"$(tr '\n' ' ' < "$LOGS/gpg-att.status")"
fi
expect_eq "... it signs the attestation manifest's digest for the repository" \
	"$(jq -r '"\(.critical.image["docker-manifest-digest"]) \(.critical.identity["docker-reference"])"' "$S/att.payload" 2> /dev/null)" \
	"$att docker.io/org/app"

sig_manifest org/app "$att" "$S/attsig.json" || true
expect "the attestation has its own .sig (cosign verify of its digest): subject, identity, signature" \
	"sig_layers_ok org/app '$att' '$S/attsig.json' docker.io/org/app && [ \"\$(jq -r .subject.digest '$S/attsig.json')\" = '$att' ]" \
	"$(head -c 300 "$S/attsig.json" 2> /dev/null)"

# ---------------------------------------------------------------- made once; a second tag
manifest_digest "$MIRROR" org/app 1.0 -A "$UA" > /dev/null
sig_manifest org/app "$opt" "$S/sig1b.json" || true
expect "a second pull of the tag keeps the .sig manifest byte for byte" "cmp -s '$S/sig1.json' '$S/sig1b.json'" \
	"it changed"
expect_eq "... and makes no second attestation" \
	"$(http_get "$RS_URL/v2/org/app/referrers/$opt" | jq -c '[.manifests[].digest] | sort')" \
	"$(jq -c '[.manifests[].digest] | sort' "$S/refs.json")"
opt2=$(manifest_digest "$MIRROR" org/app 2.0 -A "$UA")
expect_eq "org/app:2.0 (same original) is the same optimized manifest" "$opt2" "$opt"
[ "$opt2" = "$opt" ] || finish
sig_manifest org/app "$opt" "$S/sig2.json" || true
expect "its .sig manifest has both identities' signatures, each verifying" \
	"sig_layers_ok org/app '$opt' '$S/sig2.json' docker.io/org/app:1.0 docker.io/org/app:2.0" "$(head -c 400 "$S/sig2.json")"
http_get "$RS_URL/v2/org/app/referrers/$opt" > "$S/refs2.json" || true
expect "the referrers list names the new .sig manifest only (the replaced one left)" \
	"[ \"\$(jq -r '[.manifests[] | select(.artifactType == \"$SIG_AT\") | .digest] | join(\" \")' '$S/refs2.json')\" = \"\$(sha256_of '$S/sig2.json')\" ]" \
	"$(jq -c '[.manifests[] | .digest]' "$S/refs2.json")"
code=$(http_code "$RS_URL/v2/org/app/manifests/$(sha256_of "$S/sig1.json")" "${RS_ACCEPT_ALL[@]}")
expect_eq "... and is no longer served" "$code" 404

# ---------------------------------------------------------------- an index
manifest_get "$MIRROR" org/multi 1.0 -A "$UA" > "$S/multi.json" || true
imulti=$(sha256_of "$S/multi.json")
n=0
for d in "$imulti" $(jq -r '.manifests[].digest' "$S/multi.json" 2> /dev/null); do
	if sig_manifest org/multi "$d" "$S/msig-$n.json" && sig_layers_ok org/multi "$d" "$S/msig-$n.json" docker.io/org/multi:1.0 &&
		[ "$(jq -r .subject.digest "$S/msig-$n.json")" = "$d" ]; then
		pass ".sig of $([ $n = 0 ] && echo the optimized index || echo platform manifest $n) verifies (subject, identity, digest)"
	else
		fail ".sig of index document $n ($d)" "$(head -c 300 "$S/msig-$n.json" 2> /dev/null)"
	fi
	n=$((n + 1))
done
expect_ge "the index and at least two platform manifests checked" "$n" 3
expect_eq "the index's attestation is listed by its referrers" \
	"$(http_get "$RS_URL/v2/org/multi/referrers/$imulti?artifactType=application/vnd.regslim.optimization.v1%2Bjson" | jq '.manifests | length')" 1

# ---------------------------------------------------------------- no verify rule
popt=$(manifest_digest "$MIRROR" plain/app 1.0 -A "$UA")
patt=$(http_get "$RS_URL/v2/plain/app/referrers/$popt?artifactType=application/vnd.regslim.optimization.v1%2Bjson" |
	jq -r '.manifests[0].digest')
manifest_get "$MIRROR" plain/app "$patt" > "$S/patt.json" || true
blob plain/app "$(jq -r '.layers[0].digest' "$S/patt.json" 2> /dev/null)" "$S/precord.json" || true
expect_eq "without a verify rule the attestation records none (rule null, nothing verified)" \
	"$(jq -c .verification "$S/precord.json" 2> /dev/null)" '{"rule":null,"verified":[]}'
expect_eq "... and the original digest" "$(jq -r .original.digest "$S/precord.json" 2> /dev/null)" \
	"$(manifest_digest "$U" plain/app 1.0)"

# ---------------------------------------------------------------- kept across a restart
restart_regslim
sig_manifest org/app "$opt" "$S/sig3.json" || true
expect "after a restart the .sig manifest is the same" "cmp -s '$S/sig2.json' '$S/sig3.json'" "it changed"
expect_eq "... and so is the referrers list" \
	"$(http_get "$RS_URL/v2/org/app/referrers/$opt" | jq -c '[.manifests[].digest] | sort')" \
	"$(jq -c '[.manifests[].digest] | sort' "$S/refs2.json")"

finish
