#!/usr/bin/env bash
# test_tls.sh - regslim's native TLS listener (configuration "tls", serve --tls-cert/--tls-key/
# --tls-client-ca), against a real upstream (docker-registry, plain) and real clients.
#
# A test CA and server certificates (openssl, subjectAltName IP:127.0.0.1 and IP:::1) are made in
# the lab directory. Every https call verifies regslim's certificate against that CA (curl
# --cacert, never -k). Checked:
#   check-config   a good tls section passes; missing, non-PEM, swapped and mismatched files and a
#                  client CA file without a certificate are refused naming the file and the reason;
#                  serve refuses them at start-up the same way
#   https          /v2/ and a pull (manifest + config and layer blobs, digests == upstream's)
#   mix-ups        plain HTTP to the TLS port gets a readable 400 ("use https://") and TLS to a
#                  plain port fails with a clear client error, both in well under 2 s, each with a
#                  warning line in regslim's JSON log
#   mutual TLS     a client certificate from the CA is accepted; none, or one from another CA, is
#                  refused in the handshake (and logged)
#   SIGHUP         new handshakes get the new certificate's serial while a slow download begun
#                  before the reload completes intact; bad new files keep the current certificate
#                  and log the file and the reason
#   clients        skopeo, podman, ctr and dockerd pull tiny through the TLS mirror trusting the
#                  test CA (clients.sh MIRROR_CA), no insecure setting; skopeo is refused with a
#                  CA that did not sign the certificate. dockerd counts every 127.0.0.0/8
#                  registry as insecure, so it pulls through a second instance on [::1]
#                  (DOCKER_MIRROR) where it does verify.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

lab_setup
upstream_start
U=$REG_PLAIN
PKI=$REGSLIM_LAB/pki
mkdir -p "$PKI"

# ---------------------------------------------------------------- certificates

# make_ca NAME: a self-signed CA, $PKI/NAME.crt + .key
make_ca() {
	timeout 30 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=regslim test $1" -keyout "$PKI/$1.key" -out "$PKI/$1.crt" 2> "$LOGS/openssl-$1.log"
}
# make_cert NAME CA SERIAL: a server+client certificate for 127.0.0.1 and ::1 signed by CA
make_cert() {
	printf 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth,clientAuth\n' > "$PKI/$1.ext"
	timeout 30 openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=regslim test $1" \
		-keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2> "$LOGS/openssl-$1.log" &&
		timeout 30 openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$2.crt" -CAkey "$PKI/$2.key" -set_serial "$3" \
			-days 2 -extfile "$PKI/$1.ext" -out "$PKI/$1.crt" 2>> "$LOGS/openssl-$1.log"
}
if ! { make_ca ca && make_ca otherca && make_cert server ca 0x1001 && make_cert server2 ca 0x2002 &&
	make_cert client ca 0x3003 && make_cert stranger otherca 0x4004; }; then
	fail pki "openssl failed: $(tail -n 2 "$LOGS"/openssl-*.log | tr '\n' ' ')"
	finish
fi
CA=$PKI/ca.crt
# the certificate files regslim serves; replaced in place for the reload checks
cp "$PKI/server.crt" "$PKI/live.crt" && cp "$PKI/server.key" "$PKI/live.key"

# served_serial PORT: the serial number of the certificate a new handshake on PORT gets (upper-case
# hex, as openssl prints it), verified against the CA
served_serial() {
	timeout 10 openssl s_client -connect "127.0.0.1:$1" -CAfile "$CA" -verify_return_error < /dev/null 2> /dev/null |
		timeout 10 openssl x509 -noout -serial 2> /dev/null | sed 's/^serial=//'
}

# ms_since T0: milliseconds since T0 (from `date +%s%N`)
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# tls_spawn NAME LISTEN CURL_ARGS SERVE_ARGS...: regslim serve on LISTEN over TLS (the SERVE_ARGS
# name the files), waiting up to 20 s for https /healthz = 200 with curl --cacert CA plus
# CURL_ARGS (a string, e.g. the client certificate). Log $LOGS/regslim-NAME.log.
tls_spawn() {
	local name=$1 listen=$2 cargs=$3 i code=
	shift 3
	local url="https://$listen/healthz"
	# shellcheck disable=SC2086 # CURL_ARGS are words
	lab_spawn "regslim-$name" "$LOGS/regslim-$name.log" "$REGSLIM_BIN" serve --listen "$listen" \
		--upstream "http://$U" --data-dir "$REGSLIM_LAB/rs-$name" --no-optimize "$@"
	for ((i = 0; i < 100; i++)); do
		lab_alive "regslim-$name" || break
		# shellcheck disable=SC2086
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$CA" $cargs "$url") || true
		[ "$code" = 200 ] && return 0
		sleep 0.2
	done
	fail "start $name" "regslim did not answer https on $listen (last code '$code')"
	log_tail "$LOGS/regslim-$name.log"
	return 1
}

# ---------------------------------------------------------------- check-config and start-up

# conf FILE CERT KEY [CLIENT_CA]: a configuration with a tls section
conf() {
	local ca=
	[ -z "${4:-}" ] || ca=", \"client_ca_file\": \"$4\""
	printf '{"listen": "127.0.0.1:%s", "upstreams": [{"name": "docker.io", "url": "http://%s"}],\n "tls": {"cert_file": "%s", "key_file": "%s"%s}}\n' \
		"$((LAB_PORT_BASE + 50))" "$U" "$2" "$3" "$ca" > "$1"
}
# refused NAME CERT KEY CLIENT_CA WANT: check-config exits 1 with WANT (ERE) in its message
refused() {
	local f=$REGSLIM_LAB/conf-$1.json out rc=0
	conf "$f" "$2" "$3" "$4"
	out=$(timeout 20 "$REGSLIM_BIN" check-config "$f" 2>&1 > /dev/null) || rc=$?
	if [ "$rc" = 1 ] && grep -Eq -- "$5" <<< "$out"; then
		pass "check-config refuses $1: ${out#regslim: }"
	else
		fail "check-config refuses $1" "exit $rc, message '$out', expected /$5/"
	fi
}

conf "$REGSLIM_LAB/conf-good.json" "$PKI/live.crt" "$PKI/live.key" "$CA"
check "check-config accepts a good tls section" timeout 20 "$REGSLIM_BIN" check-config "$REGSLIM_LAB/conf-good.json"
expect "check-config prints the tls section" \
	"timeout 20 '$REGSLIM_BIN' check-config '$REGSLIM_LAB/conf-good.json' | jq -e '.tls.client_ca_file == \"$CA\"'" \
	"no tls.client_ca_file in the printed configuration"
printf 'not a certificate\n' > "$PKI/garbage.pem"
refused missing-cert "$PKI/nope.crt" "$PKI/live.key" "" "tls.cert_file: cannot read \"$PKI/nope.crt\": No such file"
refused non-pem-cert "$PKI/garbage.pem" "$PKI/live.key" "" "tls.cert_file \"$PKI/garbage.pem\": no certificate in the file: the file is not PEM"
refused key-as-cert "$PKI/live.key" "$PKI/live.key" "" "tls.cert_file \"$PKI/live.key\": no certificate in the file: found only \"PRIVATE KEY\""
refused cert-as-key "$PKI/live.crt" "$PKI/live.crt" "" "tls.key_file \"$PKI/live.crt\": no private key in the file"
refused mismatched-key "$PKI/live.crt" "$PKI/server2.key" "" "tls.key_file \"$PKI/server2.key\" does not belong to the certificate in tls.cert_file \"$PKI/live.crt\""
refused client-ca-without-cert "$PKI/live.crt" "$PKI/live.key" "$PKI/live.key" "tls.client_ca_file \"$PKI/live.key\": no CA certificate in the file"

rc=0
out=$(timeout 20 "$REGSLIM_BIN" serve --listen "127.0.0.1:$((LAB_PORT_BASE + 59))" --data-dir "$REGSLIM_LAB/rs-bad" \
	--upstream "http://$U" --tls-cert "$PKI/live.crt" --tls-key "$PKI/server2.key" 2>&1) || rc=$?
expect "serve refuses a key of another certificate at start-up" \
	"[ $rc = 1 ] && grep -q 'does not belong to the certificate' <<< \"\$out\"" "exit $rc: $(tail -n 1 <<< "$out")"
rc=0
out=$(timeout 20 "$REGSLIM_BIN" serve --listen "127.0.0.1:$((LAB_PORT_BASE + 59))" --data-dir "$REGSLIM_LAB/rs-bad" \
	--tls-cert "$PKI/live.crt" 2>&1) || rc=$?
expect "serve --tls-cert without --tls-key is refused" \
	"[ $rc = 1 ] && grep -q -- '--tls-cert: needs --tls-key too' <<< \"\$out\"" "exit $rc: $(tail -n 1 <<< "$out")"

# ---------------------------------------------------------------- https: /v2/ and a pull

TP=$((LAB_PORT_BASE + 50))
TLS_HP=127.0.0.1:$TP
tls_spawn tls "$TLS_HP" "" --tls-cert "$PKI/live.crt" --tls-key "$PKI/live.key" || finish
TLS_LOG=$LOGS/regslim-tls.log
expect_eq "https /v2/ with --cacert" "$(http_code "https://$TLS_HP/v2/" --cacert "$CA")" 200
expect_eq "new handshakes get serial 1001" "$(served_serial "$TP")" 1001

# pull_over_https NAME HOSTPORT [CURL ARGS]: manifest + blobs of library/tiny:latest through
# regslim over https; digests must be the upstream's
pull_over_https() {
	local name=$1 hp=$2 m=$REGSLIM_LAB/tiny-manifest.json d bad= want got
	shift 2
	want=$(manifest_digest "$U" library/tiny latest)
	if ! http_get "https://$hp/v2/library/tiny/manifests/latest" "${RS_ACCEPT_ALL[@]}" --cacert "$CA" "$@" > "$m"; then
		fail "$name: manifest over https" "GET failed"
		return
	fi
	got=$(sha256_of "$m")
	expect_eq "$name: manifest over https == upstream's" "$got" "$want"
	for d in $(manifest_blobs "$m"); do
		if ! http_get "https://$hp/v2/library/tiny/blobs/$d" --cacert "$CA" "$@" > "$REGSLIM_LAB/blob" ||
			[ "$(sha256_of "$REGSLIM_LAB/blob")" != "$d" ]; then
			bad="$bad $d"
		fi
	done
	if [ -z "$bad" ]; then pass "$name: config and layer blobs over https hash to their digests"; else fail "$name: blobs over https" "wrong or missing:$bad"; fi
}
pull_over_https "pull" "$TLS_HP"

# ---------------------------------------------------------------- protocol mix-ups

t0=$(date +%s%N)
body=$(curl -sS --max-time 10 "http://$TLS_HP/v2/" 2>&1) || true
ms=$(ms_since "$t0")
expect "plain HTTP to the TLS port: readable 400 in ${ms} ms" \
	"[ $ms -lt 2000 ] && [ \"\$(http_code http://$TLS_HP/v2/)\" = 400 ] && grep -q 'this port speaks TLS, use https://' <<< \"\$body\"" \
	"${ms} ms, body '$body'"
expect "plain HTTP to the TLS port: logged" \
	"regslim_log_has '\"level\":\"warn\".*plain HTTP from 127.0.0.1:[0-9]+ on the TLS listener' '$TLS_LOG'" \
	"no warning line in $TLS_LOG"

PP=$((LAB_PORT_BASE + 52))
if regslim_spawn plain "$PP" "http://$U" "$REGSLIM_LAB/rs-plain" 2> "$LOGS/plain-start.err"; then
	t0=$(date +%s%N)
	rc=0
	err=$(curl -sS --max-time 10 --cacert "$CA" "https://127.0.0.1:$PP/v2/" 2>&1 > /dev/null) || rc=$?
	ms=$(ms_since "$t0")
	# curl (OpenSSL) reads the plain 400 as a record of a wrong version; Go clients say
	# "server gave HTTP response to HTTPS client"
	expect "TLS to a plain port: curl fails in ${ms} ms with a TLS error (exit $rc: ${err##*: })" \
		"[ $ms -lt 2000 ] && [ $rc = 35 ] && grep -q 'wrong version number' <<< \"\$err\"" "${ms} ms, exit $rc, '$err'"
	expect "TLS to a plain port: logged" \
		"regslim_log_has '\"level\":\"warn\".*TLS handshake from 127.0.0.1:[0-9]+ on the plain-HTTP listener' '$LOGS/regslim-plain.log'" \
		"no warning line in regslim-plain.log"
	expect_eq "the plain port still serves plain HTTP" "$(http_code "http://127.0.0.1:$PP/v2/")" 200
	lab_stop regslim-plain 15 > /dev/null
else
	fail "start plain" "$(head -n 1 "$LOGS/plain-start.err")"
fi

# ---------------------------------------------------------------- mutual TLS

MP=$((LAB_PORT_BASE + 51))
MTLS_HP=127.0.0.1:$MP
CLIENT=(--cert "$PKI/client.crt" --key "$PKI/client.key")
if tls_spawn mtls "$MTLS_HP" "--cert $PKI/client.crt --key $PKI/client.key" \
	--tls-cert "$PKI/server.crt" --tls-key "$PKI/server.key" --tls-client-ca "$CA"; then
	expect_eq "mTLS: /v2/ with a client certificate from the CA" "$(http_code "https://$MTLS_HP/v2/" --cacert "$CA" "${CLIENT[@]}")" 200
	pull_over_https "mTLS pull" "$MTLS_HP" "${CLIENT[@]}"
	t0=$(date +%s%N)
	rc=0
	curl -sS --max-time 10 --cacert "$CA" -o /dev/null "https://$MTLS_HP/v2/" 2> "$LOGS/mtls-none.err" || rc=$?
	ms=$(ms_since "$t0")
	expect "mTLS: refused without a client certificate (curl exit $rc, ${ms} ms)" "[ $rc != 0 ] && [ $ms -lt 2000 ]" \
		"exit $rc: $(cat "$LOGS/mtls-none.err")"
	rc=0
	curl -sS --max-time 10 --cacert "$CA" --cert "$PKI/stranger.crt" --key "$PKI/stranger.key" -o /dev/null \
		"https://$MTLS_HP/v2/" 2> "$LOGS/mtls-stranger.err" || rc=$?
	expect "mTLS: refused with a certificate from another CA (curl exit $rc)" "[ $rc != 0 ]" "exit $rc"
	expect "mTLS: refusals logged" \
		"regslim_log_has 'client certificate from 127.0.0.1:[0-9]+ refused: The certificate is NOT trusted' '$LOGS/regslim-mtls.log' &&
		 regslim_log_has 'closed before any request .*client certificates are required' '$LOGS/regslim-mtls.log'" \
		"no refusal lines in regslim-mtls.log"
	lab_stop regslim-mtls 15 > /dev/null
fi

# ---------------------------------------------------------------- SIGHUP reload

# A 24 MiB blob on the upstream, read slowly through regslim while the certificate changes.
BIG=$REGSLIM_LAB/big.bin
head -c $((24 * 1024 * 1024)) /dev/urandom > "$BIG"
BIG_D=$(sha256_of "$BIG")
loc=$(curl -sS -f --max-time 30 -X POST -D - -o /dev/null "http://$U/v2/lab/big/blobs/uploads/" | header_value Location)
[ "${loc#http}" != "$loc" ] || loc="http://$U$loc"
case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
if ! curl -sS -f --max-time 60 -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$BIG" \
	"$loc${sep}digest=$BIG_D" -o /dev/null 2> "$LOGS/big-upload.err"; then
	fail "upload the big blob to the upstream" "$(cat "$LOGS/big-upload.err")"
fi
# warm regslim's cache so the slow read below is regslim's own sending
http_get "https://$TLS_HP/v2/lab/big/blobs/$BIG_D" --cacert "$CA" -o /dev/null ||
	fail "warm the big blob" "GET failed"

# a range of a cached blob over TLS (read in pieces, not sendfile)
if curl -sS -f --max-time 30 --cacert "$CA" -r 1000000-3099999 -o "$REGSLIM_LAB/range.bin" \
	"https://$TLS_HP/v2/lab/big/blobs/$BIG_D" 2> "$LOGS/range.err"; then
	expect_eq "a range of a cached blob over https" "$(sha256sum < "$REGSLIM_LAB/range.bin")" \
		"$(tail -c +1000001 "$BIG" | head -c 2100000 | sha256sum)"
else
	fail "a range of a cached blob over https" "$(cat "$LOGS/range.err")"
fi

RS_PID=$(lab_pid regslim-tls)
SLOW=$REGSLIM_LAB/big-slow.bin
curl -sS --max-time 60 --limit-rate 4M --cacert "$CA" -o "$SLOW" "https://$TLS_HP/v2/lab/big/blobs/$BIG_D" \
	2> "$LOGS/slow.err" &
slow_pid=$!
sleep 1
cp "$PKI/server2.crt" "$PKI/live.crt" && cp "$PKI/server2.key" "$PKI/live.key"
kill -HUP "$RS_PID"
for ((i = 0; i < 50; i++)); do regslim_log_has 'tls: reloaded certificate serial 2002' "$TLS_LOG" && break; sleep 0.1; done
expect "SIGHUP: reload logged" "regslim_log_has 'tls: reloaded certificate serial 2002' '$TLS_LOG'" "no reload line"
expect_eq "SIGHUP: new handshakes get the new serial 2002" "$(served_serial "$TP")" 2002
expect "SIGHUP: the download begun before the reload is still running" "kill -0 $slow_pid" \
	"it ended before the reload check (too fast to prove anything): $(cat "$LOGS/slow.err")"
rc=0
timeout 60 tail --pid="$slow_pid" -f /dev/null || true
wait "$slow_pid" || rc=$?
expect "SIGHUP: the download begun before the reload completed intact (curl exit $rc)" \
	"[ $rc = 0 ] && [ \"\$(sha256_of '$SLOW')\" = '$BIG_D' ]" "exit $rc: $(cat "$LOGS/slow.err")"
expect_eq "SIGHUP: regslim still runs" "$(kill -0 "$RS_PID" 2> /dev/null && echo yes)" yes

# bad new files: the current certificate stays, the log names the file and the reason
printf 'garbage\n' > "$PKI/live.crt"
kill -HUP "$RS_PID"
for ((i = 0; i < 50; i++)); do regslim_log_has 'certificate reload failed' "$TLS_LOG" && break; sleep 0.1; done
expect "SIGHUP with a bad certificate file: logged with the file and the reason" \
	"regslim_log_has '\"level\":\"error\".*certificate reload failed, keeping serial 2002: tls.cert_file ..$PKI/live.crt..: no certificate in the file: the file is not PEM' '$TLS_LOG'" \
	"no such line: $(grep 'reload failed' "$TLS_LOG" | tail -n 1)"
expect_eq "SIGHUP with a bad certificate file: serial 2002 still served" "$(served_serial "$TP")" 2002
cp "$PKI/server.crt" "$PKI/live.crt" && cp "$PKI/server2.key" "$PKI/live.key"
kill -HUP "$RS_PID"
sleep 1
expect "SIGHUP with a key of another certificate: refused, logged" \
	"regslim_log_has 'keeping serial 2002: tls.key_file .*does not belong to the certificate' '$TLS_LOG'" "no such line"
expect_eq "SIGHUP with a mismatched key: serial 2002 still served" "$(served_serial "$TP")" 2002
cp "$PKI/server2.crt" "$PKI/live.crt"
expect_eq "https still answers after the failed reloads" "$(http_code "https://$TLS_HP/v2/" --cacert "$CA")" 200

# ---------------------------------------------------------------- real clients over TLS

export MIRROR=$TLS_HP MIRROR_CA=$CA
# The lab's clients.sh configures every client for a TLS mirror when MIRROR_CA is set; an older
# one would reach the mirror with insecure settings, which proves nothing here.
if ! grep -q MIRROR_CA <<< "$(declare -f skopeo_pull)"; then
	for c in skopeo podman ctr docker; do
		fail "$c over TLS" "this lab's clients.sh has no MIRROR_CA support (tests/lab/clients.sh)"
	done
	finish
fi

if client_usable skopeo; then
	d=$REGSLIM_LAB/pulls/skopeo-tls
	if skopeo_pull "docker://$MIRROR/library/tiny:latest" "dir:$d" > "$LOGS/skopeo-tls.log" 2>&1 &&
		[ "$(sha256_of "$d/manifest.json")" = "$(manifest_digest "$U" library/tiny latest)" ]; then
		pass "skopeo pulls tiny over TLS (--src-cert-dir with the test CA)"
	else
		fail "skopeo over TLS" "$(tail -n 2 "$LOGS/skopeo-tls.log" | tr '\n' ' ')"
	fi
	rm -rf "$d"
	rc=0
	MIRROR_CA=$PKI/otherca.crt skopeo_pull "docker://$MIRROR/library/tiny:latest" "dir:$d" \
		> "$LOGS/skopeo-tls-wrong.log" 2>&1 || rc=$?
	expect "skopeo refuses the mirror when it trusts another CA" \
		"[ $rc != 0 ] && grep -q 'certificate signed by unknown authority' '$LOGS/skopeo-tls-wrong.log'" \
		"exit $rc: $(tail -n 1 "$LOGS/skopeo-tls-wrong.log")"
	rm -rf "$d"
else
	skip skopeo "$RS_CLIENT_WHY"
fi

if client_usable podman; then
	podman_clean
	if podman_pull -q docker.io/library/tiny:latest > "$LOGS/podman-tls.log" 2>&1; then
		pass "podman pulls docker.io/library/tiny:latest through the TLS mirror"
	else
		fail "podman over TLS" "$(tail -n 2 "$LOGS/podman-tls.log" | tr '\n' ' ')"
	fi
	podman_clean
	rc=0
	MIRROR_CA=$PKI/otherca.crt podman_pull -q docker.io/library/tiny:latest > "$LOGS/podman-tls-wrong.log" 2>&1 || rc=$?
	expect "podman refuses the mirror when it trusts another CA" \
		"[ $rc != 0 ] && grep -q 'certificate signed by unknown authority' '$LOGS/podman-tls-wrong.log'" \
		"exit $rc: $(tail -n 1 "$LOGS/podman-tls-wrong.log")"
else
	skip podman "$RS_CLIENT_WHY"
fi

if client_usable ctr; then
	if ctr_pull docker.io/library/tiny:latest > "$LOGS/ctr-tls.log" 2>&1; then
		pass "ctr pulls docker.io/library/tiny:latest through the TLS mirror (hosts.toml ca)"
	else
		fail "ctr over TLS" "$(tail -n 2 "$LOGS/ctr-tls.log" | tr '\n' ' ')"
	fi
	ctr_clean > /dev/null 2>&1
	rc=0
	MIRROR_CA=$PKI/otherca.crt ctr_pull docker.io/library/tiny:latest > "$LOGS/ctr-tls-wrong.log" 2>&1 || rc=$?
	expect "ctr refuses the mirror when it trusts another CA" \
		"[ $rc != 0 ] && grep -q 'certificate signed by unknown authority' '$LOGS/ctr-tls-wrong.log'" \
		"exit $rc: $(tail -n 1 "$LOGS/ctr-tls-wrong.log")"
else
	skip ctr "$RS_CLIENT_WHY"
fi

if client_usable docker; then
	V6_HP="[::1]:$((LAB_PORT_BASE + 53))"
	if tls_spawn v6 "$V6_HP" "" --tls-cert "$PKI/live.crt" --tls-key "$PKI/live.key"; then
		if DOCKER_MIRROR=$V6_HP docker_pull tiny > "$LOGS/docker-tls.log" 2>&1 &&
			regslim_log_has '"path":"/v2/library/tiny/manifests/latest"' "$LOGS/regslim-v6.log"; then
			pass "dockerd pulls tiny through the TLS mirror on [::1] (certs.d ca.crt, https registry-mirrors)"
		else
			fail "dockerd over TLS" "$(tail -n 2 "$LOGS/docker-tls.log" | tr '\n' ' ') (mirror log: $(grep -c '"request"' "$LOGS/regslim-v6.log") requests)"
		fi
		# with another CA dockerd refuses the mirror and falls back to Docker Hub (unreachable here)
		docker_clean > /dev/null 2>&1
		n0=$(grep -c '"path":"/v2/library/tiny/manifests/' "$LOGS/regslim-v6.log")
		rc=0
		DOCKER_MIRROR=$V6_HP MIRROR_CA=$PKI/otherca.crt docker_pull tiny > "$LOGS/docker-tls-wrong.log" 2>&1 || rc=$?
		n1=$(grep -c '"path":"/v2/library/tiny/manifests/' "$LOGS/regslim-v6.log")
		expect "dockerd refuses the mirror when it trusts another CA (handshakes fail, no request reaches it)" \
			"[ $rc != 0 ] && [ $n1 = $n0 ] && regslim_log_has 'connection from \\[::1\\]:[0-9]+ closed before any request' '$LOGS/regslim-v6.log'" \
			"exit $rc, manifest requests before $n0 after $n1"
		dockerd_stop > /dev/null 2>&1
	fi
else
	skip docker "$RS_CLIENT_WHY"
fi

finish
