#!/usr/bin/env bash
# test_slowloris.sh: the limits against clients that hold connections without using them (issue 11
# item 2) and the HTTP/1.1 framing statuses (item 8), against running regslim instances fed by a
# real upstream (docker-registry with the tiny fixture). The hostile clients are raw sockets
# (slowloris.py):
#   heads      more trickling connections than the per-address cap: the extra ones get a 503 at
#              once, the held ones are dropped after limits.header_timeout_s, while a normal pull
#              from 127.0.0.2 is served during the attack and one from 127.0.0.1 after it
#   no cap     more trickling connections than max_connections: all held ones are dropped after
#              the bound and the server serves again
#   bodies     an upload trickled below limits.body_min_bytes_per_s is dropped; the same upload at
#              full speed and a slow one above the minimum both end in 201
#   framing    %00 in the URL, conflicting Content-Length, Content-Length with Transfer-Encoding,
#              HTTP/1.1 without Host or with two: 400; HTTP/1.0 without Host and repeated equal
#              Content-Length are served
#   TLS        trickled heads after a handshake and a trickled ClientHello are dropped the same
#              way while an https request is served
# /metrics counts each (regslim_connections_dropped_total{reason}) and the log names the limit.
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start

SL=$RS_TEST_DIR/slowloris.py
W=$REGSLIM_LAB/slow
mkdir -p "$W"
htpasswd -Bbc "$W/htpasswd" alice alicepw 2> /dev/null
cat > "$W/main.json" << EOF
{"max_connections": 64, "max_connections_per_ip": 10,
 "limits": {"header_timeout_s": 3, "body_min_bytes_per_s": 2048, "body_rate_window_s": 3},
 "auth": {"htpasswd": "$W/htpasswd",
          "acl": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push"]}]}}
EOF
rc=0
timeout 20 "$REGSLIM_BIN" check-config "$W/main.json" > "$W/check.out" 2> "$W/check.err" || rc=$?
expect_eq check_config_prints_limits \
	"$(jq -r '[.max_connections_per_ip, .limits.header_timeout_s, .limits.body_min_bytes_per_s, .limits.body_rate_window_s] | join(" ")' "$W/check.out" 2> /dev/null) rc=$rc" \
	"10 3 2048 3 rc=0"
start_regslim --config "$W/main.json"

# dropped REASON [URL]: regslim_connections_dropped_total{reason=REASON}, read from 127.0.0.2 (the
# attacks come from 127.0.0.1 and fill its per-address quota)
dropped() {
	curl -s --max-time "$HTTP_TIMEOUT" --interface 127.0.0.2 "${2:-$RS_URL/metrics}" |
		awk -v want="regslim_connections_dropped_total{reason=\"$1\"}" '$1 == want { print $2 }'
}
# pull_code [CURL ARGS...]: the status of a manifest GET of lab/tiny through the main instance
pull_code() { http_code "$RS_URL/v2/lab/tiny/manifests/latest" "${RS_ACCEPT_ALL[@]}" "$@"; }
# attack OUT ARGS...: slowloris.py ARGS in the background (bounded), its JSON into OUT; PID in $ATTACK
attack() {
	local out=$1
	shift
	timeout 60 "$PY" "$SL" "$@" > "$out" 2> "$out.err" &
	ATTACK=$!
}
# jqv FILE FILTER: one value of a JSON file (empty when unreadable)
jqv() { jq -r "$2" "$1" 2> /dev/null; }

expect_eq pull_before_attack "$(pull_code)" 200

# ------------------------------------------------------------ heads, with the per-address cap
# 30 connections from 127.0.0.1 trickle a header byte every 0.5 s: 10 are held (the cap), 20 are
# answered 503 at once; the held ones end 3 s (plus the 1 s watchdog period) after their first byte.
# max_connections is well above the 30: a refused connection holds a slot until its thread has
# closed it, and at the limit libmicrohttpd resets new connections before regslim sees them.
attack "$W/heads.json" heads "$RS_PORT" 30 0.5 15
sleep 1.5
expect_eq during_attack_other_address_served "$(pull_code --interface 127.0.0.2)" 200
expect_eq during_attack_cap_refused_20 "$(dropped per_ip_limit)" 20
expect_eq during_attack_none_dropped_yet "$(dropped header_timeout)" 0
wait "$ATTACK"
expect_eq heads_all_connected "$(jqv "$W/heads.json" .connected)" 30
expect_eq heads_503_for_extra "$(jqv "$W/heads.json" .refused_503)" 20
expect_eq heads_held_then_dropped "$(jqv "$W/heads.json" '"\(.eof) \(.open) \(.other)"')" "10 0 0"
expect "heads_dropped_after_bound" "jq -e '(.eof_secs | min) >= 2.5 and (.eof_secs | max) <= 7' '$W/heads.json'" \
	"drop times $(jqv "$W/heads.json" -c .eof_secs), want 3 to 5 s (3 s bound, 1 s watchdog period)"
expect_eq after_attack_served "$(pull_code)" 200
expect_eq metric_header_timeout "$(dropped header_timeout)" 10
expect_eq metric_per_ip_limit "$(dropped per_ip_limit)" 20
expect "log_names_header_limit" "grep -q 'dropped connection from 127.0.0.1:[0-9]* (header_timeout): request head not complete within 3 s (limits.header_timeout_s)' '$RS_LOG'" \
	"no drop line in $RS_LOG"
expect "log_names_per_ip_limit" "grep -q 'refused connection from 127.0.0.1:[0-9]* (per_ip_limit): the address already has 10 connections (max_connections_per_ip)' '$RS_LOG'" \
	"no refusal line in $RS_LOG"
# a keep-alive connection idle longer than the bound between two requests is not dropped
idle=$(timeout 20 "$PY" - "$RS_PORT" << 'PYEOF'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
codes = []
for i in range(2):
    s.sendall(req)
    buf = b""
    while b"}\n" not in buf:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    codes.append(buf[9:12].decode() if buf else "000")
    if i == 0:
        time.sleep(6)
print(" ".join(codes))
PYEOF
)
expect_eq keepalive_idle_not_dropped "$idle" "200 200"

# ------------------------------------------------------------ heads, no per-address cap
B_PORT=$((LAB_PORT_BASE + 51))
B_URL=http://127.0.0.1:$B_PORT
cat > "$W/nocap.json" << EOF
{"max_connections": 16, "max_connections_per_ip": 0, "limits": {"header_timeout_s": 3}}
EOF
if regslim_spawn nocap "$B_PORT" "http://$REG_PLAIN" "$REGSLIM_LAB/rs-nocap" --config "$W/nocap.json" 2> "$LOGS/nocap.err"; then
	attack "$W/nocap-heads.json" heads "$B_PORT" 24 0.5 15
	wait "$ATTACK"
	expect_eq nocap_slots_held_then_dropped "$(dropped header_timeout "$B_URL/metrics")" 16
	expect_eq nocap_attacker_left_nothing_open "$(jqv "$W/nocap-heads.json" .open)" 0
	expect_eq nocap_served_after "$(http_code "$B_URL/v2/lab/tiny/manifests/latest" "${RS_ACCEPT_ALL[@]}")" 200
	lab_stop regslim-nocap
else
	fail nocap_start "$(head -n 1 "$LOGS/nocap.err")"
fi

# ------------------------------------------------------------ request bodies
# 64 KiB trickled at 512 B/s (the minimum is 2048 B/s over 3 s): dropped after about 3-4 s
timeout 60 "$PY" "$SL" upload "$RS_PORT" lab/up alice:alicepw 65536 512 > "$W/slow-up.json" 2>&1
expect_eq slow_upload_dropped "$(jqv "$W/slow-up.json" .outcome)" dropped
expect "slow_upload_dropped_after_window" "jq -e '.secs >= 2.5 and .secs <= 8' '$W/slow-up.json'" \
	"$(cat "$W/slow-up.json")"
timeout 60 "$PY" "$SL" upload "$RS_PORT" lab/up alice:alicepw 65536 0 > "$W/fast-up.json" 2>&1
expect_eq same_upload_full_speed_201 "$(jqv "$W/fast-up.json" '"\(.outcome) \(.status)"')" "answered 201"
# slow but above the minimum: 24 KiB at 4 KiB/s, two windows
timeout 60 "$PY" "$SL" upload "$RS_PORT" lab/up2 alice:alicepw 24576 4096 > "$W/steady-up.json" 2>&1
expect_eq steady_slow_upload_201 "$(jqv "$W/steady-up.json" '"\(.outcome) \(.status)"')" "answered 201"
expect "steady_slow_upload_took_windows" "jq -e '.secs >= 5' '$W/steady-up.json'" "$(cat "$W/steady-up.json")"
expect_eq metric_slow_body "$(dropped slow_body)" 1
sleep 0.3
line=$(grep '"msg":"request"' "$RS_LOG" | grep '"method":"PUT"' | grep 'request body slower than' | tail -n 1)
expect "slow_body_request_logged" "[ -n '$line' ] && printf '%s\n' '$line' | jq -e '.error | test(\"2048 bytes/s over 3 s \\\\(limits.body_min_bytes_per_s\\\\)\")'" \
	"no PUT log line naming the limit"

# ------------------------------------------------------------ HTTP/1.1 framing (item 8)
raw() { timeout 20 "$PY" "$SL" raw "$RS_PORT" "$1"; }
ACC='Accept: application/vnd.oci.image.manifest.v1+json\r\nAccept: application/vnd.docker.distribution.manifest.v2+json\r\nAccept: application/vnd.oci.image.index.v1+json\r\nAccept: application/vnd.docker.distribution.manifest.list.v2+json\r\n'
expect_eq nul_in_path_400 "$(raw "GET /v2/lab/tiny/manifests/latest%00../../x HTTP/1.1\r\nHost: a\r\n$ACC\r\n")" 400
expect_eq same_path_without_nul_200 "$(raw "GET /v2/lab/tiny/manifests/latest HTTP/1.1\r\nHost: a\r\n$ACC\r\n")" 200
expect_eq nul_in_query_400 "$(raw "GET /v2/lab/tiny/tags/list?n=1%00 HTTP/1.1\r\nHost: a\r\n\r\n")" 400
expect_eq conflicting_content_length_400 \
	"$(raw "PUT /v2/lab/up/manifests/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde")" 400
expect_eq content_length_and_chunked_400 \
	"$(raw "PUT /v2/lab/up/manifests/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n")" 400
expect_eq equal_content_lengths_served "$(raw "GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n")" 200
expect_eq http11_without_host_400 "$(raw "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")" 400
expect_eq http11_two_hosts_400 "$(raw "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")" 400
expect_eq http10_without_host_200 "$(raw "GET /healthz HTTP/1.0\r\n\r\n")" 200
body=$(rs_curl -s --path-as-is "$RS_URL/v2/lab/tiny/manifests/latest%00x")
expect_eq nul_error_code "$(echo "$body" | jq -r '.errors[0].code')" NAME_INVALID

# ------------------------------------------------------------ TLS
PKI=$W/pki
mkdir -p "$PKI"
printf 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$PKI/server.ext"
if timeout 30 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=slowloris ca" \
	-keyout "$PKI/ca.key" -out "$PKI/ca.crt" > "$LOGS/openssl.log" 2>&1 &&
	timeout 30 openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=slowloris" \
		-keyout "$PKI/server.key" -out "$PKI/server.csr" >> "$LOGS/openssl.log" 2>&1 &&
	timeout 30 openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -set_serial 7 \
		-days 2 -extfile "$PKI/server.ext" -out "$PKI/server.crt" >> "$LOGS/openssl.log" 2>&1; then
	T_PORT=$((LAB_PORT_BASE + 52))
	T_URL=https://127.0.0.1:$T_PORT
	cat > "$W/tls.json" << EOF
{"max_connections": 32, "limits": {"header_timeout_s": 3},
 "tls": {"cert_file": "$PKI/server.crt", "key_file": "$PKI/server.key"}}
EOF
	lab_spawn regslim-tls "$LOGS/regslim-tls.log" "$REGSLIM_BIN" serve --config "$W/tls.json" \
		--listen "127.0.0.1:$T_PORT" --upstream "http://$REG_PLAIN" --data-dir "$REGSLIM_LAB/rs-tls" --no-optimize
	code=
	for ((i = 0; i < 100; i++)); do
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 --cacert "$PKI/ca.crt" "$T_URL/healthz") || true
		[ "$code" = 200 ] && break
		sleep 0.2
	done
	expect_eq tls_up "$code" 200
	attack "$W/tls-heads.json" heads "$T_PORT" 5 0.5 15 --tls "$PKI/ca.crt"
	timeout 60 "$PY" "$SL" heads "$T_PORT" 5 0.5 15 --raw-tls > "$W/tls-hello.json" 2>&1 &
	HELLO=$!
	sleep 1.5
	expect_eq tls_during_attack_served "$(http_code "$T_URL/v2/lab/tiny/manifests/latest" --cacert "$PKI/ca.crt" "${RS_ACCEPT_ALL[@]}")" 200
	wait "$ATTACK"
	wait "$HELLO"
	expect_eq tls_trickled_heads_dropped "$(jqv "$W/tls-heads.json" '"\(.connected) \(.eof) \(.open)"')" "5 5 0"
	expect_eq tls_trickled_hello_dropped "$(jqv "$W/tls-hello.json" '"\(.connected) \(.eof) \(.open)"')" "5 5 0"
	expect "tls_dropped_after_bound" "jq -s -e '[.[].eof_secs[]] | min >= 2.5 and max <= 7' '$W/tls-heads.json' '$W/tls-hello.json'" \
		"drop times $(jq -s -c '[.[].eof_secs]' "$W/tls-heads.json" "$W/tls-hello.json" 2> /dev/null)"
	expect_eq tls_metric_header_timeout "$(curl -s --max-time 10 --cacert "$PKI/ca.crt" "$T_URL/metrics" |
		awk '/^regslim_connections_dropped_total\{reason="header_timeout"\}/ {print $2}')" 10
	lab_stop regslim-tls
else
	fail tls_pki "openssl failed: $(tail -n 2 "$LOGS/openssl.log" | tr '\n' ' ')"
fi

finish
