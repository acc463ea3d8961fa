#!/usr/bin/env bash
# selftest.sh - checks that the lab's registries, token server and logging proxy behave the way
# regslim's tests assume, with curl only (no regslim, no fixtures, no pulling client):
#
#   - registry.sh start all brings up plain, auth, token and the token server, `status` and `env`
#     say so, a second start is a no-op and a foreign process on a port is refused;
#   - plain: anonymous push and pull; auth: 401 + Basic challenge, the lab user in, a wrong
#     password out; token: 401 + Bearer challenge naming the realm and service, an anonymous token
#     pulls but cannot push, the lab user's token (GET with Basic, POST password grant) pushes,
#     a wrong password gets 401 from the token server;
#   - logproxy.py: a manifest GET with two Accept lines reaches the registry as two lines (the
#     docker v2s2 manifest comes back unconverted), a chunked upload and a 20 MB blob stream
#     through intact, one JSON line per request with the scheme (never the credentials) of
#     Authorization, 502 when the upstream is down;
#   - stop and start keep the storage; deleting the token key and restarting token rotates it
#     (the old token is refused, a new one works);
#   - stop all leaves no process of the lab and no listening port behind.
#
# Output: one `PASS name` / `FAIL name: why` line per check, then `N passed, N failed`; exit 1
# when something failed. Env: LAB_PORT_BASE (default 15000; uses BASE+0..3 and BASE+80),
# KEEP_LAB=1 keeps the state directory (a fresh mktemp -d) for a post-mortem.
set -uo pipefail
ST_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REGSLIM_LAB=$(mktemp -d /tmp/rl-self-XXXXXX) || exit 1
export REGSLIM_LAB
export LAB_PORT_BASE=${LAB_PORT_BASE:-15000}
export RL_ME=selftest.sh
# shellcheck source=lab.sh
. "$ST_HERE/lab.sh"
W=$RL_LAB/selftest
mkdir -p "$W"
ST_PASS=0
ST_FAIL=0
ST_T0=$(date +%s)

st_pass() { ST_PASS=$((ST_PASS + 1)); echo "PASS $1"; }
st_fail() { ST_FAIL=$((ST_FAIL + 1)); echo "FAIL $1: $2"; }
# st_expect NAME CONDITION WHY: PASS when the shell CONDITION (eval'd) holds
st_expect() { if eval "$2" > /dev/null 2>&1; then st_pass "$1"; else st_fail "$1" "$3"; fi; }

reg() { timeout 120 bash "$ST_HERE/registry.sh" "$@"; }

st_cleanup() {
	local rc=$?
	trap - EXIT
	rl_stop logproxy 5 > /dev/null 2>&1
	reg stop all > /dev/null 2>&1
	if [ "${KEEP_LAB:-0}" = 1 ]; then echo "# kept $RL_LAB"; else rm -rf "$RL_LAB"; fi
	exit $rc
}
trap st_cleanup EXIT
trap 'exit 130' INT TERM

# code URL [CURL ARGS]: the HTTP status (000 without an answer); headers in $W/h, body in $W/b
code() {
	local u=$1
	shift
	curl -s --max-time 30 -D "$W/h" -o "$W/b" -w '%{http_code}' "$@" "$u" 2> /dev/null || true
}
# hdr NAME: a header of the last `code` answer
hdr() { tr -d '\r' < "$W/h" | awk -v n="$1" -F': ' 'tolower($1) == tolower(n) { v = $2 } END { print v }'; }
sha() { echo "sha256:$(sha256sum < "$1" | cut -d' ' -f1)"; }

# push_blob HOSTPORT REPO FILE [CURL ARGS]: POST + one chunked PATCH + PUT; the digest, or fails
push_blob() {
	local hp=$1 repo=$2 f=$3 d loc
	shift 3
	d=$(sha "$f")
	[ "$(code "http://$hp/v2/$repo/blobs/uploads/" -X POST "$@")" = 202 ] || return 1
	loc=$(hdr Location)
	case $loc in http*) ;; *) loc=http://$hp$loc ;; esac
	[ "$(code "$loc" -X PATCH -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/octet-stream' \
		--data-binary "@$f" "$@")" = 202 ] || return 1
	loc=$(hdr Location)
	case $loc in http*) ;; *) loc=http://$hp$loc ;; esac
	case $loc in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
	[ "$(code "$loc" -X PUT "$@")" = 201 ] || return 1
	echo "$d"
}

# blob_back HOSTPORT REPO DIGEST [CURL ARGS]: GET the blob and compare its hash
blob_back() {
	local hp=$1 repo=$2 d=$3
	shift 3
	[ "$(code "http://$hp/v2/$repo/blobs/$d" "$@")" = 200 ] && [ "$(sha "$W/b")" = "$d" ]
}

# token [CURL ARGS] SCOPE: a token from the token server for SCOPE (empty when refused)
token() {
	local scope=${!#}
	curl -s --max-time 30 "${@:1:$#-1}" \
		"http://$TOKEN_SERVER/token?service=$TOKEN_SERVICE&scope=$scope" | jq -r '.token // empty' 2> /dev/null
}

# lab_procs: processes whose command line names the lab directory (the lab's daemons)
lab_procs() {
	local p
	for p in /proc/[0-9]*; do
		[ "${p#/proc/}" != $$ ] || continue
		tr '\0' ' ' 2> /dev/null < "$p/cmdline" | grep -qF -- "$RL_LAB/" && echo "${p#/proc/} $(tr '\0' ' ' 2> /dev/null < "$p/cmdline" | cut -c1-120)"
	done
	return 0
}

# ------------------------------------------------------------ start
echo "# lab $RL_LAB, ports $RL_BASE.."
rl_need curl jq python3
out=$(reg start all 2>&1)
rc=$?
st_expect start_all "[ $rc = 0 ]" "exit $rc: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
[ $rc = 0 ] || { echo "$ST_PASS passed, $ST_FAIL failed"; exit 1; }
eval "$(reg env)"
st_expect env_names "[ '$REG_PLAIN' = 127.0.0.1:$RL_BASE ] && [ '$REG_AUTH' = 127.0.0.1:$((RL_BASE + 1)) ] && [ '$REG_TOKEN' = 127.0.0.1:$((RL_BASE + 2)) ] && [ '$TOKEN_SERVER' = 127.0.0.1:$((RL_BASE + 3)) ] && [ '$LOGPROXY' = 127.0.0.1:$((RL_BASE + 80)) ] && [ -n '$LAB_USER' ] && [ -n '$LAB_PASS' ] && [ -n '$TOKEN_SERVICE' ] && [ -n '$TOKEN_ISSUER' ] && [ '$REGSLIM_LAB' = '$RL_LAB' ]" \
	"$(reg env | tr '\n' ' ')"
st_expect status_all_running "[ \"\$(reg status | grep -c ': running on')\" = 4 ]" "$(reg status | tr '\n' ' ')"
pids=$(cat "$RL_RUN"/{plain,auth,token,tokensrv}.pid 2> /dev/null | tr '\n' ' ')
out=$(reg start all 2>&1)
st_expect start_again_is_a_no_op "[ \"$(cat "$RL_RUN"/{plain,auth,token,tokensrv}.pid 2> /dev/null | tr '\n' ' ')\" = '$pids' ] && [ \"\$(echo '$out' | grep -c 'already running')\" = 4 ]" "$out"

# ------------------------------------------------------------ plain
st_expect plain_v2_anonymous "[ \"\$(code http://$REG_PLAIN/v2/)\" = 200 ] && [ \"\$(hdr Docker-Distribution-Api-Version)\" = registry/2.0 ]" "GET /v2/: $(code "http://$REG_PLAIN/v2/")"
head -c 100000 /dev/urandom > "$W/small"
PB=$(push_blob "$REG_PLAIN" lab/self "$W/small")
st_expect plain_push_and_pull "[ -n '$PB' ] && blob_back $REG_PLAIN lab/self '$PB'" "push gave '$PB', then GET $(code "http://$REG_PLAIN/v2/lab/self/blobs/$PB")"

# ------------------------------------------------------------ auth (htpasswd)
st=$(code "http://$REG_AUTH/v2/")
st_expect auth_challenges_basic "[ '$st' = 401 ] && [[ \"\$(hdr WWW-Authenticate)\" == Basic* ]]" "status $st, WWW-Authenticate '$(hdr WWW-Authenticate)'"
st_expect auth_lab_user_in "[ \"\$(code http://$REG_AUTH/v2/ -u '$LAB_USER:$LAB_PASS')\" = 200 ]" "status $(code "http://$REG_AUTH/v2/" -u "$LAB_USER:$LAB_PASS")"
st_expect auth_wrong_password_401 "[ \"\$(code http://$REG_AUTH/v2/ -u '$LAB_USER:not-$LAB_PASS')\" = 401 ]" "status $(code "http://$REG_AUTH/v2/" -u "$LAB_USER:not-$LAB_PASS")"
AB=$(push_blob "$REG_AUTH" lab/self "$W/small" -u "$LAB_USER:$LAB_PASS")
st_expect auth_push_and_pull "[ -n '$AB' ] && blob_back $REG_AUTH lab/self '$AB' -u '$LAB_USER:$LAB_PASS'" "push gave '$AB'"
st_expect auth_anonymous_pull_401 "[ \"\$(code http://$REG_AUTH/v2/lab/self/blobs/$PB)\" = 401 ]" "status $(code "http://$REG_AUTH/v2/lab/self/blobs/$PB")"

# ------------------------------------------------------------ token
st=$(code "http://$REG_TOKEN/v2/lab/self/blobs/$PB")
ch=$(hdr WWW-Authenticate)
st_expect token_challenge "[ '$st' = 401 ] && [[ '$ch' == Bearer* ]] && [[ '$ch' == *'realm=\"http://$TOKEN_SERVER/token\"'* ]] && [[ '$ch' == *'service=\"$TOKEN_SERVICE\"'* ]] && [[ '$ch' == *'scope=\"repository:lab/self:pull\"'* ]]" \
	"status $st, WWW-Authenticate '$ch'"
st_expect token_server_healthz "[ \"\$(code http://$TOKEN_SERVER/healthz)\" = 200 ]" "status $(code "http://$TOKEN_SERVER/healthz")"
# the lab user's token (GET with Basic): push, then pull
TU=$(token -u "$LAB_USER:$LAB_PASS" "repository:lab/self:pull,push")
claims=$(echo "$TU" | cut -d. -f2 | tr '_-' '/+' | awk '{ n = length($0) % 4; if (n) $0 = $0 substr("===", n); print }' | base64 -d 2> /dev/null)
st_expect token_claims "[ \"\$(echo '$claims' | jq -c '[.iss, .aud, .sub, .access]')\" = '[\"$TOKEN_ISSUER\",\"$TOKEN_SERVICE\",\"$LAB_USER\",[{\"type\":\"repository\",\"name\":\"lab/self\",\"actions\":[\"pull\",\"push\"]}]]' ]" \
	"claims $claims"
TB=$(push_blob "$REG_TOKEN" lab/self "$W/small" -H "Authorization: Bearer $TU")
st_expect token_user_push_and_pull "[ -n '$TB' ] && blob_back $REG_TOKEN lab/self '$TB' -H 'Authorization: Bearer $TU'" "push gave '$TB' with token '${TU:0:20}...'"
# anonymous: pull only
TA=$(token "repository:lab/self:pull,push")
aclaims=$(echo "$TA" | cut -d. -f2 | tr '_-' '/+' | awk '{ n = length($0) % 4; if (n) $0 = $0 substr("===", n); print }' | base64 -d 2> /dev/null)
st_expect token_anonymous_pull_only "[ \"\$(echo '$aclaims' | jq -c '.access[0].actions')\" = '[\"pull\"]' ] && blob_back $REG_TOKEN lab/self '$TB' -H 'Authorization: Bearer $TA'" \
	"claims $aclaims, GET $(code "http://$REG_TOKEN/v2/lab/self/blobs/$TB" -H "Authorization: Bearer $TA")"
st=$(code "http://$REG_TOKEN/v2/lab/self/blobs/uploads/" -X POST -H "Authorization: Bearer $TA")
st_expect token_anonymous_cannot_push "[ '$st' = 401 ] || [ '$st' = 403 ]" "upload POST with the anonymous token: $st"
st_expect token_wrong_password_401 "[ \"\$(code 'http://$TOKEN_SERVER/token?service=$TOKEN_SERVICE&scope=repository:lab/self:pull' -u '$LAB_USER:not-$LAB_PASS')\" = 401 ] && [ -z \"\$(token -u '$LAB_USER:not-$LAB_PASS' repository:lab/self:pull)\" ]" \
	"status $(code "http://$TOKEN_SERVER/token?service=$TOKEN_SERVICE&scope=repository:lab/self:pull" -u "$LAB_USER:not-$LAB_PASS")"
# OAuth2 password grant (what containerd sends with credentials)
st=$(code "http://$TOKEN_SERVER/token" -X POST --data-urlencode grant_type=password --data-urlencode "username=$LAB_USER" \
	--data-urlencode "password=$LAB_PASS" --data-urlencode "service=$TOKEN_SERVICE" --data-urlencode "scope=repository:lab/self:pull,push" \
	--data-urlencode client_id=selftest)
TP=$(jq -r '.access_token // empty' "$W/b" 2> /dev/null)
head -c 100001 /dev/urandom > "$W/small2"
PB2=$(push_blob "$REG_TOKEN" lab/self "$W/small2" -H "Authorization: Bearer $TP")
st_expect token_post_password_grant "[ '$st' = 200 ] && [ -n '$PB2' ]" "POST /token: $st $(head -c 200 "$W/b"); push '$PB2'"
st=$(code "http://$TOKEN_SERVER/token" -X POST --data-urlencode grant_type=password --data-urlencode "username=$LAB_USER" \
	--data-urlencode "password=not-$LAB_PASS" --data-urlencode "service=$TOKEN_SERVICE" --data-urlencode "scope=repository:lab/self:pull")
st_expect token_post_wrong_password_401 "[ '$st' = 401 ]" "POST /token with a wrong password: $st"
st_expect token_log_shape "grep -q 'GET /token?[^ ]*scope=repository:lab/self:pull,push HTTP/1.1\" 200 issued token authed=True access=.*\"name\": \"lab/self\", \"actions\": \[\"pull\", \"push\"\]' '$RL_LOGS/tokenserver.log' && grep -q '\"POST /token HTTP/1.1\" 401 refused' '$RL_LOGS/tokenserver.log' && ! grep -q -- '$LAB_PASS' '$RL_LOGS/tokenserver.log'" \
	"$(tail -n 3 "$RL_LOGS/tokenserver.log" | cut -c1-200 | tr '\n' ' ')"
st_expect token_password_not_on_command_line "! tr '\0' ' ' < /proc/$(rl_pid tokensrv)/cmdline | grep -q -- '$LAB_PASS'" "the token server's command line shows the password"

# ------------------------------------------------------------ logproxy.py
LP=$LOGPROXY
LPLOG=$RL_LOGS/logproxy.jsonl
rl_spawn logproxy "$RL_LOGS/logproxy.err" "$(rl_python)" "$ST_HERE/logproxy.py" --listen "$LP" --upstream "$REG_PLAIN" --log "$LPLOG"
rl_wait_port "${LP##*:}" 10
st_expect logproxy_up "rl_alive logproxy && rl_port_busy ${LP##*:}" "$(tail -n 3 "$RL_LOGS/logproxy.err" 2> /dev/null | tr '\n' ' ')"
# a docker v2s2 manifest (config + one layer) pushed directly
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]}}' "$PB" > "$W/config"
CB=$(push_blob "$REG_PLAIN" lab/self "$W/config")
printf '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%d,"digest":"%s"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":%d,"digest":"%s"}]}' \
	"$(stat -c %s "$W/config")" "$CB" "$(stat -c %s "$W/small")" "$PB" > "$W/manifest"
MD=$(sha "$W/manifest")
st=$(code "http://$REG_PLAIN/v2/lab/self/manifests/v1" -X PUT -H 'Content-Type: application/vnd.docker.distribution.manifest.v2+json' --data-binary "@$W/manifest")
st_expect setup_manifest_pushed "[ '$st' = 201 ] && [ \"\$(hdr Docker-Content-Digest)\" = '$MD' ]" "PUT manifest: $st $(head -c 200 "$W/b")"
# v2s2 first, OCI second: a proxy that kept only the last Accept line would get a schema-1 conversion
st=$(code "http://$LP/v2/lab/self/manifests/v1" -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
	-H 'Accept: application/vnd.oci.image.manifest.v1+json' -u 'someone:secret-in-header')
st_expect logproxy_repeated_accept_kept "[ '$st' = 200 ] && [ \"\$(sha '$W/b')\" = '$MD' ] && [ \"\$(hdr Docker-Content-Digest)\" = '$MD' ]" \
	"status $st, Docker-Content-Digest '$(hdr Docker-Content-Digest)' (want $MD), Content-Type '$(hdr Content-Type)'"
line=$(jq -c 'select(.path == "/v2/lab/self/manifests/v1")' "$LPLOG" 2> /dev/null | tail -n 1)
st_expect logproxy_log_line "[ \"\$(echo '$line' | jq -r '[.method, .status, .accept, .authorization, .digest, .resp_type, .bytes == (.resp_len | tonumber), (.ms | type), (.t | type)] | join(\"|\")')\" = 'GET|200|application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json|Basic|$MD|application/vnd.docker.distribution.manifest.v2+json|true|number|string' ] && ! grep -q secret-in-header '$LPLOG'" \
	"line $line"
head -c 20000000 /dev/urandom > "$W/big"
BB=$(push_blob "$LP" lab/self "$W/big")
st_expect logproxy_chunked_upload "[ -n '$BB' ] && [ \"\$(jq -r 'select(.method == \"PATCH\") | [.\"transfer-encoding\", .req_bytes] | join(\" \")' '$LPLOG' | tail -n 1)\" = 'chunked 20000000' ] && blob_back $REG_PLAIN lab/self '$BB'" \
	"push through the proxy gave '$BB': $(jq -c 'select(.method == "PATCH" or .method == "PUT") | [.method, .status, .req_bytes, .error]' "$LPLOG" | tr '\n' ' ')"
st_expect logproxy_streams_a_big_blob "blob_back $LP lab/self '$BB' && [ \"\$(jq -r 'select(.method == \"GET\" and (.path | endswith(\"$BB\"))) | .bytes' '$LPLOG' | tail -n 1)\" = 20000000 ]" \
	"GET through the proxy: $(code "http://$LP/v2/lab/self/blobs/$BB") $(stat -c %s "$W/b") bytes"
st=$(code "http://$LP/v2/lab/self/manifests/v1" -I -H 'Accept: application/vnd.docker.distribution.manifest.v2+json')
st_expect logproxy_head "[ '$st' = 200 ] && [ \"\$(hdr Content-Length)\" = '$(stat -c %s "$W/manifest")' ] && [ \"\$(hdr Docker-Content-Digest)\" = '$MD' ]" "HEAD: $st, Content-Length '$(hdr Content-Length)'"
reg stop plain > /dev/null 2>&1
st=$(code "http://$LP/v2/")
st_expect logproxy_502_upstream_down "[ '$st' = 502 ] && jq -e '.errors[0].code' '$W/b' && [ \"\$(tail -n 1 '$LPLOG' | jq -r '[.status, (.error | length > 0)] | join(\" \")')\" = '502 true' ]" "status $st: $(head -c 200 "$W/b")"

# ------------------------------------------------------------ storage survives, key rotation
reg start plain > /dev/null 2>&1
st_expect restart_keeps_storage "blob_back $REG_PLAIN lab/self '$BB' && [ \"\$(code http://$REG_PLAIN/v2/lab/self/manifests/v1 -H 'Accept: application/vnd.docker.distribution.manifest.v2+json')\" = 200 ]" \
	"after stop + start: GET blob $(code "http://$REG_PLAIN/v2/lab/self/blobs/$BB")"
reg restart auth > /dev/null 2>&1
st_expect restart_auth_keeps_storage "blob_back $REG_AUTH lab/self '$AB' -u '$LAB_USER:$LAB_PASS'" "GET $(code "http://$REG_AUTH/v2/lab/self/blobs/$AB" -u "$LAB_USER:$LAB_PASS")"
old_tok=$(rl_pid tokensrv)
rm -f "$RL_LAB/registry/token/key.pem" "$RL_LAB/registry/token/cert.pem"
out=$(reg restart token 2>&1)
rc=$?
st=$(code "http://$REG_TOKEN/v2/lab/self/blobs/$TB" -H "Authorization: Bearer $TU")
TN=$(token -u "$LAB_USER:$LAB_PASS" "repository:lab/self:pull")
st_expect token_key_rotated "[ $rc = 0 ] && [ '$(rl_pid tokensrv)' != '$old_tok' ] && [ '$st' = 401 ] && blob_back $REG_TOKEN lab/self '$TB' -H 'Authorization: Bearer $TN'" \
	"restart exit $rc ($(echo "$out" | tail -n 1)); the old token got $st (want 401); a new one: $(code "http://$REG_TOKEN/v2/lab/self/blobs/$TB" -H "Authorization: Bearer $TN")"

# ------------------------------------------------------------ a port taken by someone else
reg stop auth > /dev/null 2>&1
"$(rl_python)" -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); time.sleep(30)' "$((RL_BASE + 1))" &
squatter=$!
rl_wait_port $((RL_BASE + 1)) 5
out=$(reg start auth 2>&1)
rc=$?
kill "$squatter" 2> /dev/null
wait "$squatter" 2> /dev/null
st_expect start_refuses_a_taken_port "[ $rc != 0 ] && ! rl_alive auth" "exit $rc: $out"

# ------------------------------------------------------------ stop leaves nothing behind
rl_stop logproxy 5
out=$(reg stop all 2>&1)
rc=$?
left=$(lab_procs)
busy=
for p in 0 1 2 3 80; do rl_port_busy $((RL_BASE + p)) && busy="$busy $((RL_BASE + p))"; done
st_expect stop_all_leaves_nothing "[ $rc = 0 ] && [ -z '$left' ] && [ -z '$busy' ] && [ -z \"\$(ls '$RL_RUN')\" ]" \
	"exit $rc; processes left: $left; ports still listening:$busy; PID files: $(ls "$RL_RUN" | tr '\n' ' ')"
st_expect status_all_stopped "[ \"\$(reg status | grep -c ': stopped')\" = 4 ]" "$(reg status | tr '\n' ' ')"

echo "# selftest.sh: $(($(date +%s) - ST_T0)) s"
echo "$ST_PASS passed, $ST_FAIL failed"
[ "$ST_FAIL" = 0 ]
