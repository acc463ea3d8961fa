#!/usr/bin/env bash
# test_routing_auth.sh: several upstreams and upstream authentication, against real registries:
# the plain docker-registry (default upstream "docker.io"), the htpasswd one ("auth.local", Basic,
# password from an environment variable) and the token one ("token.local", bearer tokens from
# tokenserver.py, password from a file). Logging proxies sit in front of the plain and the token
# registry, so the test sees what regslim sends them (and that no credentials go where they
# should not).
#
#   regslim (BASE+50) -> docker.io   = logproxy (BASE+80) -> plain registry (BASE+0)
#                     -> auth.local  = auth registry (BASE+1)
#                     -> token.local = logproxy (BASE+61) -> token registry (BASE+2), realm BASE+3
#                     -> badauth.local / badtoken.local: wrong passwords; anontoken.local: none
#                     -> redirect.local = registry (BASE+64) redirecting blob GETs to
#                        localhost:BASE+63 (logproxy -> file server BASE+62 on its storage)
#
# Checks routing by ?ns= (with the OCI-Namespace answer header), by a first path component and
# the default with library/ for one-component names; manifests and blobs through both
# authenticated upstreams; a skopeo copy through regslim; one token per scope reused, fetched again
# after a 401; blob redirects to another host followed without the credentials; wrong
# credentials give the client a registry error (regslim keeps running); credentials never reach
# the default upstream. One line per check, then "N passed, N failed"; non-zero exit on failure.
#
# Env (set by ctest): REGSLIM_BIN, LAB_PORT_BASE.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-240} # lib.sh's watchdog bounds the whole test
# shellcheck source=lib.sh
. "$HERE/lib.sh"

# ---------------------------------------------------------------- local helpers
# fetch KEY URL [curl args]: headers in $W/KEY.h, body in $W/KEY.b; prints the status
fetch() {
	local key=$1 url=$2
	shift 2
	curl -s --max-time 30 -D "$W/$key.h" -o "$W/$key.b" -w '%{http_code}' "$@" "$url" 2> /dev/null || true
}
head_of() { grep -i "^$2:" "$W/$1.h" 2> /dev/null | head -n 1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//;s/ *$//'; }
err_code() { jq -r 'if (.errors|type)=="array" and (.errors|length)>0 and (.errors[0].code|type)=="string" then .errors[0].code else "" end' "$W/$1.b" 2> /dev/null; }
sha_of() { sha256sum < "$1" | cut -d' ' -f1; }
# token_lines: token server request lines written after the mark (TOK_MARK)
token_lines() { tail -n +$((TOK_MARK + 1)) "$LOGS/tokenserver.log" | grep -E '"(GET|POST) /token' || true; }
# push_blob_to HOSTPORT REPO FILE [curl auth args]: monolithic upload; prints the digest
push_blob_to() {
	local hp=$1 repo=$2 f=$3 d loc
	shift 3
	d=sha256:$(sha_of "$f")
	loc=$(curl -s --max-time 30 "$@" -X POST -D - -o /dev/null "http://$hp/v2/$repo/blobs/uploads/" | tr -d '\r' |
		awk -F': ' 'tolower($1)=="location"{print $2}')
	[ -n "$loc" ] || return 1
	case $loc in http*) ;; *) loc=http://$hp$loc ;; esac
	case $loc in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
	[ "$(curl -s --max-time 60 "$@" -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
		--data-binary "@$f" "$loc")" = 201 ] || return 1
	echo "$d"
}

# ---------------------------------------------------------------- set-up
lab_setup
W=$REGSLIM_LAB/ra
mkdir -p "$W"
upstream_start all
LP=127.0.0.1:$((LAB_PORT_BASE + 80))  # -> plain
LPT=127.0.0.1:$((LAB_PORT_BASE + 61)) # -> token registry
logproxy_start "$LP" "$REG_PLAIN" > "$LOGS/logproxy-start.log" 2>&1 || {
	fail setup_logproxy "$(tail -n 2 "$LOGS/logproxy-start.log")"
	finish
}
lab_on_exit logproxy_stop
lab_spawn aux-lptoken "$LOGS/logproxy-token.err" "$PY" "$RS_LAB_DIR/logproxy.py" \
	--listen "$LPT" --upstream "$REG_TOKEN" --log "$LOGS/logproxy-token.jsonl"
wait_port "${LPT##*:}" 10 || { fail setup_logproxy_token "$(tail -n 2 "$LOGS/logproxy-token.err")"; finish; }

# images that exist in one upstream only, so routing is visible
CREDS=$LAB_USER:$LAB_PASS
FIXOCI=$REGSLIM_LAB/fixtures/oci/tiny:latest
skp() { timeout 120 skopeo --insecure-policy --tmpdir "$REGSLIM_LAB/tmp" copy --dest-tls-verify=false -q "$@" >> "$LOGS/ra-skopeo.log" 2>&1; }
skp --format v2s2 --dest-creds "$CREDS" "oci:$FIXOCI" "docker://$REG_AUTH/lab/only-auth:latest" &&
	skp --format v2s2 --dest-creds "$CREDS" "oci:$FIXOCI" "docker://$REG_TOKEN/lab/only-token:latest"
expect setup_marker_images_pushed "[ $? = 0 ]" "skopeo push failed: $(tail -n 2 "$LOGS/ra-skopeo.log")"
# one random blob in each authenticated registry only
head -c 300000 /dev/urandom > "$W/ab"
head -c 300001 /dev/urandom > "$W/tb"
AB=$(push_blob_to "$REG_AUTH" lab/rnd "$W/ab" -u "$CREDS")
TT=$(curl -s --max-time 10 -u "$CREDS" \
	"http://$TOKEN_SERVER/token?service=$TOKEN_SERVICE&scope=repository:lab/rnd:pull,push" | jq -r '.token // .access_token')
TB=$(push_blob_to "$REG_TOKEN" lab/rnd "$W/tb" -H "Authorization: Bearer $TT")
expect setup_random_blobs_pushed "[ -n '$AB' ] && [ -n '$TB' ]" "blob upload to the auth ($AB) or token ($TB) registry failed"
# the digest of tiny's v2s2 manifest (same bytes in all three registries)
TINY=$(manifest_digest "$REG_PLAIN" lab/tiny latest)

# A registry whose blob GETs redirect to another host (distribution's "redirect" storage
# middleware), with htpasswd auth and the auth registry's storage. The redirect target is
# "localhost:BASE+63" (another host name than the upstream's 127.0.0.1): a logging proxy in front
# of a static file server on the storage directory, so the test sees whether credentials follow.
RDR=127.0.0.1:$((LAB_PORT_BASE + 64))      # redirecting registry
RDR_LP_PORT=$((LAB_PORT_BASE + 63))        # logproxy -> file server, the redirect target
RDR_FS=127.0.0.1:$((LAB_PORT_BASE + 62))   # file server on the registry storage
cat > "$REGSLIM_LAB/registry/config-redirect.yml" << EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $REGSLIM_LAB/registry/data-${REG_AUTH##*:}
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
middleware:
  storage:
    - name: redirect
      options:
        baseurl: http://localhost:$RDR_LP_PORT
http:
  addr: $RDR
  secret: regslim-test-redirect
auth:
  htpasswd:
    realm: regslim-test
    path: $REGSLIM_LAB/registry/htpasswd
EOF
lab_spawn aux-rdrreg "$LOGS/registry-redirect.log" docker-registry serve "$REGSLIM_LAB/registry/config-redirect.yml"
lab_spawn aux-rdrfs "$LOGS/redirect-fileserver.log" "$PY" -m http.server --bind 127.0.0.1 \
	--directory "$REGSLIM_LAB/registry/data-${REG_AUTH##*:}" "${RDR_FS##*:}"
lab_spawn aux-rdrlp "$LOGS/logproxy-redirect.err" "$PY" "$RS_LAB_DIR/logproxy.py" \
	--listen "127.0.0.1:$RDR_LP_PORT" --upstream "$RDR_FS" --log "$LOGS/logproxy-redirect.jsonl"
wait_port "${RDR##*:}" 20 && wait_port "${RDR_FS##*:}" 10 && wait_port "$RDR_LP_PORT" 10
head -c 300003 /dev/urandom > "$W/rb"
RB=$(push_blob_to "$REG_AUTH" lab/rnd "$W/rb" -u "$CREDS")
st=$(curl -s --max-time 10 -o /dev/null -w '%{http_code} %{redirect_url}' -u "$CREDS" "http://$RDR/v2/lab/rnd/blobs/$RB")
expect setup_redirecting_registry "[ -n '$RB' ] && [[ '$st' == '307 http://localhost:$RDR_LP_PORT/'* ]]" \
	"blob '$RB', direct GET from the redirecting registry: '$st'"

echo "$LAB_PASS" > "$W/token-pass"
echo wrong-password > "$W/bad-pass"
chmod 600 "$W/token-pass" "$W/bad-pass"
export RSB_AUTH_PASS=$LAB_PASS RSB_BAD_PASS=wrong-password
cat > "$W/rs.json" << EOF
{"listen": "127.0.0.1:$((LAB_PORT_BASE + 50))", "data_dir": "$REGSLIM_LAB/rs",
 "upstreams": [
  {"name": "docker.io", "url": "http://$LP", "default": true},
  {"name": "auth.local", "url": "http://$REG_AUTH", "auth": {"username": "$LAB_USER", "password_env": "RSB_AUTH_PASS"}},
  {"name": "token.local", "url": "http://$LPT", "auth": {"username": "$LAB_USER", "password_file": "$W/token-pass"}},
  {"name": "badauth.local", "url": "http://$REG_AUTH", "auth": {"username": "$LAB_USER", "password_env": "RSB_BAD_PASS"}},
  {"name": "badtoken.local", "url": "http://$REG_TOKEN", "auth": {"username": "$LAB_USER", "password_file": "$W/bad-pass"}},
  {"name": "anontoken.local", "url": "http://$REG_TOKEN"},
  {"name": "redirect.local", "url": "http://$RDR", "auth": {"username": "$LAB_USER", "password_env": "RSB_AUTH_PASS"}}
 ]}
EOF
RS_UPSTREAM="" start_regslim --config "$W/rs.json"
RS=127.0.0.1:$RS_PORT

# ---------------------------------------------------------------- token.local (first: cold cache)
TOK_MARK=$(wc -l < "$LOGS/tokenserver.log")
st=$(fetch tm "http://$RS/v2/token.local/lab/tiny/manifests/latest" "${RS_ACCEPT_ALL[@]}")
expect route_path_component_token "[ '$st' = 200 ] && [ '$(head_of tm Docker-Content-Digest)' = '$TINY' ] && [ 'sha256:$(sha_of "$W/tm.b")' = '$TINY' ]" \
	"status $st digest '$(head_of tm Docker-Content-Digest)' (want $TINY) $(head -c 200 "$W/tm.b")"
bad=
for b in $(manifest_blobs "$W/tm.b"); do
	st=$(fetch "tb_${b:7:8}" "http://$RS/v2/token.local/lab/tiny/blobs/$b")
	[ "$st" = 200 ] && [ "sha256:$(sha_of "$W/tb_${b:7:8}.b")" = "$b" ] || bad="$bad $b:$st"
done
expect token_blobs_pull_through "[ -n '$(manifest_blobs "$W/tm.b" | head -n 1)' ] && [ -z '$bad' ]" "failed blobs:$bad"
st=$(fetch tbr "http://$RS/v2/token.local/lab/rnd/blobs/$TB")
expect token_unique_blob "[ '$st' = 200 ] && cmp -s '$W/tbr.b' '$W/tb'" "status $st"
nup=$(jq -c 'select(.path | startswith("/v2/lab/"))' "$LOGS/logproxy-token.jsonl" | wc -l)
ntok=$(token_lines | wc -l)
ntiny=$(tail -n +$((TOK_MARK + 1)) "$LOGS/tokenserver.log" | grep -c 'issued.*"name": "lab/tiny"' || true)
expect token_fetched_once_per_scope "[ '$ntiny' = 1 ] && [ '$ntok' -lt '$nup' ]" \
	"$ntok token requests ($ntiny for lab/tiny) for $nup upstream requests: $(token_lines | cut -c1-160 | tr '\n' ' ')"
expect token_requests_authenticated "[ '$ntok' -ge 1 ] && ! tail -n +$((TOK_MARK + 1)) '$LOGS/tokenserver.log' | grep -q 'authed=False'" \
	"token server: $(tail -n +$((TOK_MARK + 1)) "$LOGS/tokenserver.log" | grep issued | cut -c1-120 | tr '\n' ' ')"
nbearer=$(jq -c 'select(.authorization=="Bearer")' "$LOGS/logproxy-token.jsonl" | wc -l)
nbasic=$(jq -c 'select(.authorization=="Basic")' "$LOGS/logproxy-token.jsonl" | wc -l)
expect token_registry_gets_bearer "[ '$nbearer' -ge 3 ]" "$nbearer Bearer, $nbasic Basic requests reached the token registry"

# skopeo through regslim
d=$REGSLIM_LAB/pulls/skopeo-token
skopeo_pull "docker://$RS/token.local/lab/tiny:latest" "dir:$d" > "$LOGS/ra-skopeo-pull.log" 2>&1
rc=$?
expect skopeo_copy_token_through_mirror "[ $rc = 0 ] && [ 'sha256:$(sha_of "$d/manifest.json" 2> /dev/null)' = '$TINY' ]" \
	"exit $rc: $(tail -n 2 "$LOGS/ra-skopeo-pull.log" | tr '\n' ' ')"
st=$(fetch tm2 "http://$RS/v2/token.local/lab/only-token/manifests/latest" "${RS_ACCEPT_ALL[@]}")
expect route_path_component_token_only "[ '$st' = 200 ] && [ '$(head_of tm2 Docker-Content-Digest)' = '$TINY' ]" "status $st"
st=$(fetch tm3 "http://$RS/v2/lab/tiny/manifests/latest?ns=token.local" "${RS_ACCEPT_ALL[@]}" -I)
expect route_ns_token_head "[ '$st' = 200 ] && [ '$(head_of tm3 OCI-Namespace)' = token.local ] && [ '$(head_of tm3 Docker-Content-Digest)' = '$TINY' ]" \
	"status $st OCI-Namespace '$(head_of tm3 OCI-Namespace)' digest '$(head_of tm3 Docker-Content-Digest)'"

# a cached token that the registry no longer accepts (new signing key): regslim fetches a new one
rm -f "$REGSLIM_LAB/registry/token/key.pem" "$REGSLIM_LAB/registry/token/cert.pem"
timeout 60 bash "$RS_LAB_DIR/registry.sh" restart token > "$LOGS/token-restart.log" 2>&1
rc=$?
TT=$(curl -s --max-time 10 -u "$CREDS" \
	"http://$TOKEN_SERVER/token?service=$TOKEN_SERVICE&scope=repository:lab/rnd:pull,push" | jq -r '.token // .access_token')
head -c 300002 /dev/urandom > "$W/tb2"
TB2=$(push_blob_to "$REG_TOKEN" lab/rnd "$W/tb2" -H "Authorization: Bearer $TT")
expect setup_token_key_rotated "[ $rc = 0 ] && [ -n '$TB2' ]" "registry.sh restart token: exit $rc; blob push '$TB2'"
TOK_MARK=$(wc -l < "$LOGS/tokenserver.log")
n0=$(wc -l < "$LOGS/logproxy-token.jsonl")
st=$(fetch tb2r "http://$RS/v2/token.local/lab/rnd/blobs/$TB2")
ntok=$(token_lines | wc -l)
n401=$(tail -n +$((n0 + 1)) "$LOGS/logproxy-token.jsonl" | jq -c 'select(.status == 401)' | wc -l)
# (the 401 shows the old token was tried: else this check would not test the refetch)
expect token_refetched_after_401 "[ '$st' = 200 ] && cmp -s '$W/tb2r.b' '$W/tb2' && [ '$ntok' -ge 1 ] && [ '$n401' -ge 1 ]" \
	"status $st, $ntok token requests, $n401 upstream 401s; upstream: $(tail -n +$((n0 + 1)) "$LOGS/logproxy-token.jsonl" | jq -c '[.method, .status, .authorization]' | tr '\n' ' ')"

# ---------------------------------------------------------------- auth.local (Basic)
st=$(fetch am "http://$RS/v2/lab/only-auth/manifests/latest?ns=auth.local" "${RS_ACCEPT_ALL[@]}")
expect route_ns_auth "[ '$st' = 200 ] && [ '$(head_of am Docker-Content-Digest)' = '$TINY' ]" \
	"status $st digest '$(head_of am Docker-Content-Digest)' $(head -c 200 "$W/am.b")"
expect route_ns_auth_oci_namespace_header "[ '$(head_of am OCI-Namespace)' = auth.local ]" "OCI-Namespace '$(head_of am OCI-Namespace)'"
st=$(fetch am0 "http://$RS/v2/lab/only-auth/manifests/latest" "${RS_ACCEPT_ALL[@]}")
expect route_default_does_not_have_auth_image "[ '$st' = 404 ] && [ '$(err_code am0)' = MANIFEST_UNKNOWN ]" "status $st code '$(err_code am0)'"
st=$(fetch abr "http://$RS/v2/lab/rnd/blobs/$AB?ns=auth.local")
expect auth_unique_blob "[ '$st' = 200 ] && cmp -s '$W/abr.b' '$W/ab' && [ '$(head_of abr OCI-Namespace)' = auth.local ]" \
	"status $st OCI-Namespace '$(head_of abr OCI-Namespace)'"
st=$(fetch abr2 "http://$RS/v2/auth.local/lab/rnd/blobs/$AB" -H 'Range: bytes=0-99')
expect auth_blob_range_by_path "[ '$st' = 206 ] && cmp -s '$W/abr2.b' <(head -c 100 '$W/ab')" "status $st"
bad=
for b in $(manifest_blobs "$W/am.b"); do
	st=$(fetch "ab_${b:7:8}" "http://$RS/v2/lab/only-auth/blobs/$b?ns=auth.local")
	[ "$st" = 200 ] && [ "sha256:$(sha_of "$W/ab_${b:7:8}.b")" = "$b" ] || bad="$bad $b:$st"
done
expect auth_blobs_pull_through "[ -z '$bad' ]" "failed blobs:$bad"

# ---------------------------------------------------------------- default upstream
logproxy_clear
st=$(fetch dm "http://$RS/v2/tiny/manifests/latest" "${RS_ACCEPT_ALL[@]}")
lib=$(manifest_digest "$REG_PLAIN" library/tiny latest)
expect route_default_library_prefix "[ '$st' = 200 ] && [ '$(head_of dm Docker-Content-Digest)' = '$lib' ]" \
	"status $st digest '$(head_of dm Docker-Content-Digest)' (want $lib)"
n=$(jq -c 'select(.path == "/v2/library/tiny/manifests/latest")' "$LOGS/logproxy.jsonl" | wc -l)
expect route_default_upstream_saw_library_name "[ '$n' -ge 1 ]" "upstream requests: $(jq -c '[.method,.path]' "$LOGS/logproxy.jsonl" | tr '\n' ' ')"
st=$(fetch dm2 "http://$RS/v2/library/tiny/manifests/latest?ns=docker.io" "${RS_ACCEPT_ALL[@]}" -I)
expect route_ns_docker_io "[ '$st' = 200 ] && [ '$(head_of dm2 OCI-Namespace)' = docker.io ] && [ '$(head_of dm2 Docker-Content-Digest)' = '$lib' ]" \
	"status $st OCI-Namespace '$(head_of dm2 OCI-Namespace)'"
st=$(fetch dm3 "http://$RS/v2/lab/only-token/manifests/latest" "${RS_ACCEPT_ALL[@]}")
expect route_default_does_not_have_token_image "[ '$st' = 404 ]" "status $st"

# ---------------------------------------------------------------- anonymous token flow
TOK_MARK=$(wc -l < "$LOGS/tokenserver.log")
st=$(fetch anm "http://$RS/v2/anontoken.local/lab/multi/manifests/latest" "${RS_ACCEPT_ALL[@]}")
expect anonymous_token_flow "[ '$st' = 200 ] && tail -n +$((TOK_MARK + 1)) '$LOGS/tokenserver.log' | grep -q 'authed=False'" \
	"status $st, token server: $(token_lines | cut -c1-160 | tr '\n' ' ')"

# ---------------------------------------------------------------- blob redirect to another host
st=$(fetch rdm "http://$RS/v2/redirect.local/lab/tiny/manifests/latest" "${RS_ACCEPT_ALL[@]}")
expect redirect_upstream_manifest "[ '$st' = 200 ] && [ '$(head_of rdm Docker-Content-Digest)' = '$TINY' ]" "status $st"
st=$(fetch rdb "http://$RS/v2/redirect.local/lab/rnd/blobs/$RB")
expect redirect_blob_pull_through "[ '$st' = 200 ] && cmp -s '$W/rdb.b' '$W/rb' && [ '$(head_of rdb Docker-Content-Digest)' = '$RB' ]" \
	"status $st, $(stat -c %s "$W/rdb.b" 2> /dev/null) bytes, Docker-Content-Digest '$(head_of rdb Docker-Content-Digest)'"
nf=$(jq -c 'select(.path | contains("'"${RB#sha256:}"'"))' "$LOGS/logproxy-redirect.jsonl" 2> /dev/null | wc -l)
na=$(jq -c 'select(.authorization != null)' "$LOGS/logproxy-redirect.jsonl" 2> /dev/null | wc -l)
expect redirect_followed_without_credentials "[ '$nf' -ge 1 ] && [ '$na' = 0 ]" \
	"$nf requests reached the redirect target, $na of them with Authorization: $(jq -c '[.method, .path[0:50], .authorization]' "$LOGS/logproxy-redirect.jsonl" 2> /dev/null | tr '\n' ' ')"

# ---------------------------------------------------------------- wrong credentials
for u in badauth.local badtoken.local; do
	st=$(fetch "bad_$u" "http://$RS/v2/$u/lab/multi/manifests/latest" "${RS_ACCEPT_ALL[@]}")
	c=$(err_code "bad_$u")
	expect "wrong_credentials_${u%%.*}_registry_error" "[[ '$st' =~ ^(401|403|502|503)$ ]] && [ -n '$c' ]" \
		"status $st code '$c' body $(head -c 200 "$W/bad_$u.b")"
	st=$(fetch "badb_$u" "http://$RS/v2/$u/lab/rnd/blobs/$(printf 'x' | sha256sum | sed 's/ .*//;s/^/sha256:/')")
	c=$(err_code "badb_$u")
	expect "wrong_credentials_${u%%.*}_blob_registry_error" "[[ '$st' =~ ^(401|403|404|502|503)$ ]] && [ -n '$c' ]" \
		"status $st code '$c' body $(head -c 200 "$W/badb_$u.b")"
done
expect alive_after_wrong_credentials "[ '$(http_code "http://$RS/healthz")' = 200 ] && lab_alive regslim-main" "regslim is gone: $(tail -n 3 "$RS_LOG")"

# ---------------------------------------------------------------- credentials stay home
n=$(jq -c 'select(.authorization != null)' "$LOGS/logproxy.jsonl" | wc -l)
expect no_credentials_to_default_upstream "[ '$n' = 0 ]" "$n requests to the default upstream carried Authorization"
expect password_not_in_log "! grep -q -- '$LAB_PASS' '$RS_LOG' && ! grep -q -- wrong-password '$RS_LOG'" "a password appears in $RS_LOG"
h=$(printf '%s' "$CREDS" | base64)
expect password_not_in_metrics "! curl -s --max-time 10 'http://$RS/metrics' | grep -q -e '$LAB_PASS' -e '$h'" "a password appears in /metrics"

finish
