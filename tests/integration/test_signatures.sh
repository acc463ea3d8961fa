#!/usr/bin/env bash
# test_signatures.sh - GPG simple signing through regslim (docs/signatures.md) with real GPG and
# real clients (skopeo, podman).
#
# Set-up, all made by the test: a publisher key (gpg --batch, no passphrase) in a temporary
# GNUPGHOME, and the organisation's key made by `regslim keygen --gpg`. The publisher signs
# originals in the lab's docker-registry with `skopeo copy --sign-by` (identity
# docker.io/<repo>:<tag>, the reference the clients pull through their docker.io mirror) into a
# file:// lookaside (a registries.d of the test). regslim is the docker.io mirror: it signs
# optimized images with the org key and verifies originals with the publisher's keyring and that
# lookaside: org/* under on_unverified serve-original, strict/* under refuse, web/* under refuse
# with the same lookaside served over http on loopback. Checks:
#   - the optimized tag's signature from regslim's /sigstore/ verifies with gpg (org key) and
#     names the pulled reference and the optimized digest; for an index (multi), the index's and
#     each platform manifest's
#   - originals verified through the http lookaside; its signatures proxied by /sigstore/
#   - skopeo and podman with policy.json signedBy the ORG key pull the optimized tag; with
#     signedBy the PUBLISHER key the optimized tag is refused, and the original by digest is
#     accepted (the publisher's signature proxied by regslim's /sigstore/)
#   - an unsigned original: served original under serve-original (counted), 403 DENIED under
#     refuse; a tampered signature in the lookaside: 403 DENIED
# Clients read only the test's policy.json and registries.d (skopeo --policy/--registries.d,
# podman through its HOME); the machine's /etc/containers is never touched.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

export RS_OPTIMIZE=1
lab_setup
upstream_start
U=$REG_PLAIN
S=$REGSLIM_LAB/sig
mkdir -p "$S/pub" "$S/lookaside" "$S/rd-publish" "$S/rd-pull"
chmod 700 "$S/pub"
GPGT=60

# gpg agents started in the test's homes are stopped by their home, at exit
stop_agents() {
	local h
	for h in "$S/pub" "$S/org"; do
		[ -d "$h" ] && timeout 20 gpgconf --homedir "$h" --kill gpg-agent > /dev/null 2>&1
	done
	true
}
lab_on_exit stop_agents

# ---------------------------------------------------------------- keys
if timeout $GPGT gpg --homedir "$S/pub" --batch --passphrase '' \
	--quick-gen-key "Lab Publisher <publisher@example.com>" default sign never > "$LOGS/gpg-pub.log" 2>&1; then
	PUB=$(gpg --homedir "$S/pub" --with-colons -K 2> /dev/null | awk -F: '$1 == "fpr" { print $10; exit }')
	pass "publisher key made with gpg --batch"
else
	fail "publisher key" "$(tail -n 2 "$LOGS/gpg-pub.log")"
	finish
fi
ORG=$(timeout $GPGT "$REGSLIM_BIN" keygen --gpg "$S/org" --uid "Lab Org <org@example.com>" 2> "$LOGS/keygen.err")
expect "regslim keygen --gpg prints the new key's fingerprint" \
	"[[ '$ORG' =~ ^[0-9A-F]{40}$ ]] && gpg --homedir '$S/org' -K '$ORG'" "got '$ORG': $(tail -n 1 "$LOGS/keygen.err")"
[ -n "$ORG" ] || finish
timeout $GPGT gpg --homedir "$S/pub" --export "$PUB" > "$S/publisher.gpg"
timeout $GPGT gpg --homedir "$S/org" --export "$ORG" > "$S/org.gpg"

# ---------------------------------------------------------------- the publisher signs originals
# registries.d for the publisher's writes: the lab registry's signatures go to the lookaside
cat > "$S/rd-publish/lab.yaml" << EOF
docker:
  $U:
    lookaside: file://$S/lookaside
EOF
# publish SRC REPO:TAG [sign [--all]]: copy a lab fixture to REPO:TAG, signed by the publisher when asked
publish() {
	local sign=()
	[ "${3:-}" = sign ] && sign=(--sign-by "$PUB" --sign-identity "docker.io/$2")
	timeout 300 env GNUPGHOME="$S/pub" skopeo --insecure-policy --registries.d "$S/rd-publish" --tmpdir "$REGSLIM_LAB/tmp" \
		copy --src-tls-verify=false --dest-tls-verify=false "${sign[@]}" ${4:+"$4"} \
		"docker://$U/$1" "docker://$U/$2" >> "$LOGS/publish.log" 2>&1
}
ok=1
publish library/tiny:latest org/app:1.0 sign || ok=0
publish library/tiny:latest org/unsigned:1.0 || ok=0
publish library/tiny:latest strict/app:1.0 sign || ok=0
publish library/tiny:latest strict/unsigned:1.0 || ok=0
publish library/tiny:latest strict/tampered:1.0 sign || ok=0
publish library/tiny:latest web/app:1.0 sign || ok=0
publish library/tiny:latest web/unsigned:1.0 || ok=0
publish library/multi:latest org/multi:1.0 sign --all || ok=0
expect "publisher copies and signs originals with skopeo copy --sign-by" "[ $ok = 1 ]" "$(tail -n 3 "$LOGS/publish.log")"
orig=$(manifest_digest "$U" org/app 1.0)
sigfile=$S/lookaside/org/app@sha256=${orig#sha256:}/signature-1
expect "the publisher's signature is in the file:// lookaside" "[ -s '$sigfile' ]" "no $sigfile"
# the tampered one: one byte of the signed message changed
tf=$S/lookaside/strict/tampered@sha256=${orig#sha256:}/signature-1
if [ -s "$tf" ]; then
	$PY - "$tf" << 'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x55
open(p, "wb").write(bytes(b))
EOF
fi

# the publisher's lookaside over http too (web/*), from a static server on loopback
WEB=127.0.0.1:$((LAB_PORT_BASE + 60))
lab_spawn aux-sig-http "$LOGS/sig-http.log" timeout 900 "$PY" -m http.server --bind 127.0.0.1 --directory "$S/lookaside" \
	"${WEB#*:}"
wait_port "${WEB#*:}" || fail "lookaside http server" "$(tail -n 2 "$LOGS/sig-http.log")"

# ---------------------------------------------------------------- regslim
cat > "$S/regslim.json" << EOF
{
  "signatures": {
    "sign": {"gpg_home": "$S/org", "gpg_key": "$ORG"},
    "verify": [
      {"upstream": "docker.io", "repositories": ["strict/*"], "gpg_keyring": "$S/publisher.gpg",
       "lookaside": "file://$S/lookaside", "on_unverified": "refuse"},
      {"upstream": "docker.io", "repositories": ["web/*"], "gpg_keyring": "$S/publisher.gpg",
       "lookaside": "http://$WEB/", "on_unverified": "refuse"},
      {"upstream": "docker.io", "repositories": ["org/*"], "gpg_keyring": "$S/publisher.gpg",
       "lookaside": "file://$S/lookaside", "on_unverified": "serve-original"}
    ]
  }
}
EOF
start_regslim --config "$S/regslim.json"
expect "regslim imported the publisher keyring at start" "regslim_log_has 'key\\(s\\) from .*publisher.gpg'" \
	"$(tail -n 3 "$RS_LOG")"

# ---------------------------------------------------------------- regslim's own signature (gpg)
UA=skopeo/1.9.3
opt=$(manifest_digest "$MIRROR" org/app 1.0 -A "$UA")
expect_ne "org/app:1.0 (verified) is served optimized" "$opt" "$orig"
code=$(curl -s -o "$S/own.sig" -w '%{http_code}' --max-time "$HTTP_TIMEOUT" \
	"$RS_URL/sigstore/org/app@sha256=${opt#sha256:}/signature-1")
expect_eq "GET /sigstore/<repo>@sha256=<optimized>/signature-1: 200" "$code" 200
mkdir -p "$S/check" && chmod 700 "$S/check"
timeout $GPGT gpg --homedir "$S/check" --batch --import "$S/org.gpg" > /dev/null 2>&1
if timeout $GPGT gpg --homedir "$S/check" --batch --status-fd 1 --output "$S/own.payload" --decrypt "$S/own.sig" \
	> "$LOGS/gpg-own.status" 2> /dev/null && grep -q "VALIDSIG $ORG" "$LOGS/gpg-own.status"; then
	pass "regslim's signature verifies with gpg and the org key"
else
	fail "regslim's signature verifies with gpg and the org key" "$(tr '\n' ' ' < "$LOGS/gpg-own.status")"
fi
expect_eq "signed identity is the reference the client pulls" \
	"$(jq -r '.critical.identity["docker-reference"]' "$S/own.payload" 2> /dev/null)" "docker.io/org/app:1.0"
expect_eq "signed digest is the optimized manifest" \
	"$(jq -r '.critical.image["docker-manifest-digest"]' "$S/own.payload" 2> /dev/null)" "$opt"
expect_eq "signature type" "$(jq -r '.critical.type' "$S/own.payload" 2> /dev/null)" "atomic container signature"
code=$(http_code "$RS_URL/sigstore/org/app@sha256=${opt#sha256:}/signature-2")
expect_eq "no second signature: 404" "$code" 404
code=$(curl -s -o "$S/proxied.sig" -w '%{http_code}' --max-time "$HTTP_TIMEOUT" \
	"$RS_URL/sigstore/org/app@sha256=${orig#sha256:}/signature-1")
expect "the publisher's signature of the original is proxied byte for byte" \
	"[ '$code' = 200 ] && cmp -s '$S/proxied.sig' '$sigfile'" "code $code"
code=$(http_code "$RS_URL/sigstore/org/app@sha256=${opt#sha256:}/signature-1" -I)
expect_eq "HEAD on a signature: 200" "$code" 200
code=$(http_code "$RS_URL/sigstore/org/app@sha256=${opt#sha256:}/signature-1" -X DELETE)
expect_eq "DELETE on a signature: 405" "$code" 405
code=$(http_code "$RS_URL/sigstore/org/app@sha256=${opt#sha256:}/signature-0")
expect_eq "signature-0 names nothing: 404" "$code" 404
code=$(http_code "$RS_URL/sigstore/org/app@sha256=zz/signature-1")
expect_eq "a malformed signature path: 404" "$code" 404
code=$(http_code "$RS_URL/sigstore/Org/App@sha256=${opt#sha256:}/signature-1")
expect_eq "an invalid repository name: 400" "$code" 400
expect "no key material in regslim's log" "! grep -qE 'BEGIN PGP|PRIVATE KEY' '$RS_LOG'" "found in $RS_LOG"

# verify_sig FILE IDENTITY DIGEST: FILE is a signature by the org key of IDENTITY and DIGEST (gpg, jq)
verify_sig() {
	local out=$1.payload
	timeout $GPGT gpg --homedir "$S/check" --batch --status-fd 1 --output "$out" --yes --decrypt "$1" 2> /dev/null |
		grep -q "VALIDSIG $ORG" &&
		[ "$(jq -r '.critical.identity["docker-reference"]' "$out")" = "$2" ] &&
		[ "$(jq -r '.critical.image["docker-manifest-digest"]' "$out")" = "$3" ]
}

# ---------------------------------------------------------------- an index: the index and each platform
omulti=$(manifest_digest "$U" org/multi 1.0)
manifest_get "$MIRROR" org/multi 1.0 -A "$UA" > "$S/multi.json" || true
imulti=$(sha256_of "$S/multi.json")
expect "org/multi:1.0 is served as an optimized index" \
	"[ '$imulti' != '$omulti' ] && [ \"\$(jq -r '.manifests | length' '$S/multi.json')\" -ge 2 ]" "got $imulti"
n=0
for d in "$imulti" $(jq -r '.manifests[].digest' "$S/multi.json" 2> /dev/null); do
	curl -s -o "$S/m-$n.sig" --max-time "$HTTP_TIMEOUT" "$RS_URL/sigstore/org/multi@sha256=${d#sha256:}/signature-1"
	if verify_sig "$S/m-$n.sig" docker.io/org/multi:1.0 "$d"; then
		pass "signature of $([ $n = 0 ] && echo the index || echo platform manifest $n) verifies (org key, identity, digest)"
	else
		fail "signature of index document $n ($d)" "does not verify"
	fi
	n=$((n + 1))
done

# ---------------------------------------------------------------- an http(s) lookaside
d=$(manifest_digest "$MIRROR" web/app 1.0 -A "$UA")
expect "web/app:1.0, verified through the http lookaside, is served optimized" "[ -n '$d' ] && [ '$d' != '$orig' ]" \
	"got '$d'"
code=$(http_code "$RS_URL/v2/web/unsigned/manifests/1.0" -A "$UA" "${RS_ACCEPT_ALL[@]}")
expect_eq "web/unsigned:1.0 (nothing in the http lookaside) is refused: 403" "$code" 403
code=$(curl -s -o "$S/web-proxied.sig" -w '%{http_code}' --max-time "$HTTP_TIMEOUT" \
	"$RS_URL/sigstore/web/app@sha256=${orig#sha256:}/signature-1")
expect "the publisher's signature is proxied from the http lookaside" \
	"[ '$code' = 200 ] && cmp -s '$S/web-proxied.sig' '$S/lookaside/web/app@sha256=${orig#sha256:}/signature-1'" "code $code"

# ---------------------------------------------------------------- client configuration
# policy-KEY.json: docker.io images must be signed by KEY (default identity rule:
# matchRepoDigestOrExact); everything else is refused
policy() {
	cat > "$S/policy-$1.json" << EOF
{"default": [{"type": "reject"}],
 "transports": {"docker": {"docker.io": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "$S/$1.gpg"}]}}}
EOF
}
policy org
policy publisher
# registries.d for pulls: docker.io and the mirror read signatures from regslim's lookaside
cat > "$S/rd-pull/regslim.yaml" << EOF
docker:
  docker.io:
    lookaside: $RS_URL/sigstore
  $MIRROR:
    lookaside: $RS_URL/sigstore
EOF
# registries.conf: docker.io through regslim (nothing listens at the fallback)
cat > "$S/registries.conf" << EOF
[[registry]]
prefix = "docker.io"
location = "127.0.0.1:$((LAB_PORT_BASE + 99))"
insecure = true
[[registry.mirror]]
location = "$MIRROR"
insecure = true
EOF
: > "$LOGS/spull.log"
: > "$LOGS/ppull.log"
# spull KEY REF DIR: skopeo copy through regslim under policy-KEY.json
spull() {
	rm -rf "$3"
	timeout 300 skopeo --policy "$S/policy-$1.json" --registries.d "$S/rd-pull" --registries-conf "$S/registries.conf" \
		--tmpdir "$REGSLIM_LAB/tmp" copy "docker://$2" "dir:$3" > "$LOGS/spull.log" 2>&1
}

# ---------------------------------------------------------------- skopeo
if client_usable skopeo; then
	expect "skopeo, signedBy org: the optimized tag is accepted" "spull org docker.io/org/app:1.0 '$S/s1'" \
		"$(tail -n 2 "$LOGS/spull.log")"
	expect "skopeo got the optimized manifest" "[ \"\$(sha256_of '$S/s1/manifest.json')\" = '$opt' ]" \
		"got $(sha256_of "$S/s1/manifest.json" 2> /dev/null)"
	if spull publisher docker.io/org/app:1.0 "$S/s2"; then
		fail "skopeo, signedBy publisher: the optimized tag is refused" "it was accepted"
	else
		cp "$LOGS/spull.log" "$LOGS/spull-refused.log"
		expect "skopeo, signedBy publisher: the optimized tag is refused (signature check)" \
			"grep -qE 'Source image rejected: .*[Ss]ignature' '$LOGS/spull-refused.log'" "$(tail -n 1 "$LOGS/spull.log")"
	fi
	expect "skopeo, signedBy publisher: the original by digest is accepted" \
		"spull publisher docker.io/org/app@$orig '$S/s3'" "$(tail -n 2 "$LOGS/spull.log")"
	expect "skopeo, signedBy org: the optimized index's tag is accepted" "spull org docker.io/org/multi:1.0 '$S/s4'" \
		"$(tail -n 2 "$LOGS/spull.log")"
else
	skip skopeo "$RS_CLIENT_WHY"
fi

# ---------------------------------------------------------------- podman
if client_usable podman; then
	podman_setup
	mkdir -p "$PODMAN_DIR/home/.config/containers"
	ln -sfn "$S/rd-pull" "$PODMAN_DIR/home/.config/containers/registries.d"
	ppull() {
		cp "$S/policy-$1.json" "$PODMAN_DIR/home/.config/containers/policy.json"
		podman_clean
		lpodman pull "$2" > "$LOGS/ppull.log" 2>&1
	}
	expect "podman, signedBy org: the optimized tag is accepted" "ppull org docker.io/org/app:1.0" \
		"$(tail -n 2 "$LOGS/ppull.log")"
	if ppull publisher docker.io/org/app:1.0; then
		fail "podman, signedBy publisher: the optimized tag is refused" "it was accepted"
	else
		cp "$LOGS/ppull.log" "$LOGS/ppull-refused.log"
		expect "podman, signedBy publisher: the optimized tag is refused (signature check)" \
			"grep -qE 'Source image rejected: .*[Ss]ignature' '$LOGS/ppull-refused.log'" "$(tail -n 1 "$LOGS/ppull.log")"
	fi
	expect "podman, signedBy publisher: the original by digest is accepted" \
		"ppull publisher docker.io/org/app@$orig" "$(tail -n 2 "$LOGS/ppull.log")"
	expect "podman, signedBy org: the optimized index's tag is accepted" "ppull org docker.io/org/multi:1.0" \
		"$(tail -n 2 "$LOGS/ppull.log")"
	rm -f "$PODMAN_DIR/home/.config/containers/policy.json"
	podman_clean
else
	skip podman "$RS_CLIENT_WHY"
fi

# ---------------------------------------------------------------- unverified originals
before=$(metric regslim_signature_unverified_total 'action="serve-original"')
d=$(manifest_digest "$MIRROR" org/unsigned 1.0 -A "$UA")
expect_eq "unsigned original under serve-original: the original digest is served" "$d" "$orig"
expect_eq "... and counted" "$(metric regslim_signature_unverified_total 'action="serve-original"')" "$((before + 1))"
expect "... and logged" "regslim_log_has 'org/unsigned:1.0 .* is not verified \\(served original'" "$(tail -n 2 "$RS_LOG")"
body=$(curl -s -w '\n%{http_code}' --max-time "$HTTP_TIMEOUT" -A "$UA" "${RS_ACCEPT_ALL[@]}" \
	"$RS_URL/v2/strict/unsigned/manifests/1.0")
expect_eq "unsigned original under refuse: 403" "$(tail -n 1 <<< "$body")" 403
expect "... DENIED naming why" "grep -q '\"DENIED\".*no signature of sha256' <<< '$body'" "$(head -n 1 <<< "$body" | cut -c1-200)"
body=$(curl -s -w '\n%{http_code}' --max-time "$HTTP_TIMEOUT" -A "$UA" "${RS_ACCEPT_ALL[@]}" \
	"$RS_URL/v2/strict/tampered/manifests/1.0")
expect_eq "tampered signature under refuse: 403" "$(tail -n 1 <<< "$body")" 403
expect "... DENIED: not signed by a key of the keyring" "grep -q 'DENIED.*not signed by a key of the keyring' <<< '$body'" \
	"$(head -n 1 <<< "$body" | cut -c1-200)"
d=$(manifest_digest "$MIRROR" strict/app 1.0 -A "$UA")
expect "a signed original under refuse is served optimized" "[ -n '$d' ] && [ '$d' != '$orig' ]" "got '$d'"
expect_eq "refusals counted (web/unsigned, strict/unsigned, strict/tampered)" \
	"$(metric regslim_signature_unverified_total 'action="refuse"')" 3

finish
