#!/usr/bin/env bash
# test_cli.sh: the regslim command line. `check-config` on a valid file (exit 0, the effective
# configuration as JSON, no secrets) and on invalid ones (unknown keys, wrong types, bad JSON,
# missing file: exit 1 and a message naming the file and the key path); `serve` on a busy port
# (clear message, non-zero exit) and with a bad configuration; usage errors (exit 2). No upstream
# registry is needed. One line per check, then "N passed, N failed"; non-zero exit on failure.
#
# Env (set by ctest): REGSLIM_BIN, LAB_PORT_BASE.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RS_TEST_TIMEOUT=${RS_TEST_TIMEOUT:-120} # lib.sh's watchdog bounds the whole test
# shellcheck source=lib.sh
. "$HERE/lib.sh"

# run KEY ARGS...: regslim ARGS (bounded), stdout in $W/KEY.out, stderr in $W/KEY.err; prints the exit status
run() {
	local key=$1 rc=0
	shift
	timeout 20 "$REGSLIM_BIN" "$@" > "$W/$key.out" 2> "$W/$key.err" < /dev/null || rc=$?
	echo $rc
}
oneline() { tr '\n' ' ' < "$1" | cut -c1-300; }

lab_setup
W=$REGSLIM_LAB/cli
mkdir -p "$W"
FREE=127.0.0.1:$((LAB_PORT_BASE + 99))

# ---------------------------------------------------------------- check-config: valid
SECRET_ENV=s3cr3t-from-env-$$
SECRET_FILE=s3cr3t-from-file-$$
export RSB_CLI_PASS=$SECRET_ENV
echo "$SECRET_FILE" > "$W/pass"
cat > "$W/good.json" << EOF
{
  "listen": "127.0.0.1:$((LAB_PORT_BASE + 50))",
  "max_connections": 300,
  "data_dir": "$W/data",
  "cache": {"max_bytes": "2GiB"},
  "limits": {"manifest_max_bytes": 1048576},
  "shutdown_grace_s": 5,
  "log": {"level": "debug", "requests": true},
  "upstreams": [
    {"name": "docker.io", "url": "http://$FREE", "default": true, "tag_ttl_s": 60, "timeout_s": 10},
    {"name": "auth.local", "url": "http://127.0.0.1:$((LAB_PORT_BASE + 1))",
     "auth": {"username": "lab", "password_env": "RSB_CLI_PASS"}},
    {"name": "token.local", "url": "http://127.0.0.1:$((LAB_PORT_BASE + 2))",
     "auth": {"username": "lab", "password_file": "$W/pass"}}
  ]
}
EOF
rc=$(run good check-config "$W/good.json")
expect check_config_valid_exit_0 "[ '$rc' = 0 ]" "exit $rc: $(oneline "$W/good.err")"
expect check_config_prints_json "jq -e . '$W/good.out'" "stdout is not JSON: $(oneline "$W/good.out")"
expect check_config_effective_values "[ \"\$(jq -r '.listen, .max_connections, .shutdown_grace_s, (.upstreams|length), .upstreams[0].tag_ttl_s, .upstreams[1].name' '$W/good.out' | tr '\n' ' ')\" = '127.0.0.1:$((LAB_PORT_BASE + 50)) 300 5 3 60 auth.local ' ]" \
	"got: $(jq -c '{listen, max_connections, shutdown_grace_s, u: [.upstreams[]? | {name, tag_ttl_s}]}' "$W/good.out" 2> /dev/null)"
expect check_config_cache_size_parsed "[ \"\$(jq -r '.cache.max_bytes' '$W/good.out')\" = 2147483648 ]" \
	"cache.max_bytes printed as $(jq -c '.cache' "$W/good.out" 2> /dev/null)"
expect check_config_defaults_filled "[ \"\$(jq -r '.upstreams[1].tag_ttl_s | type' '$W/good.out')\" = number ]" \
	"upstreams[1] printed as $(jq -c '.upstreams[1]' "$W/good.out" 2> /dev/null)"
expect check_config_no_secret_on_stdout "! grep -q -e '$SECRET_ENV' -e '$SECRET_FILE' '$W/good.out'" "a password is printed: $(oneline "$W/good.out")"
expect check_config_no_secret_on_stderr "! grep -q -e '$SECRET_ENV' -e '$SECRET_FILE' '$W/good.err'" "a password is printed on stderr"
expect check_config_names_secret_sources "grep -q 'RSB_CLI_PASS' '$W/good.out' && grep -q '$W/pass' '$W/good.out'" \
	"the secrets' sources (env RSB_CLI_PASS, file $W/pass) are not shown: $(jq -c '[.upstreams[]?.auth]' "$W/good.out" 2> /dev/null)"
echo '{}' > "$W/empty.json"
rc=$(run empty check-config "$W/empty.json")
expect check_config_empty_object_defaults "[ '$rc' = 0 ] && [ \"\$(jq -r '.listen, .upstreams[0].name' '$W/empty.out' | tr '\n' ' ')\" = '127.0.0.1:5000 docker.io ' ]" \
	"exit $rc: $(oneline "$W/empty.out") $(oneline "$W/empty.err")"

# ---------------------------------------------------------------- check-config: invalid
# bad NAME WANT-IN-MESSAGE JSON: exit 1, stderr names the file and WANT-IN-MESSAGE (the key path)
bad() {
	local name=$1 want=$2 f=$W/$1.json rc
	printf '%s\n' "$3" > "$f"
	rc=$(run "$name" check-config "$f")
	expect "check_config_$name" "[ '$rc' = 1 ] && grep -qF -- '$f' '$W/$name.err' && grep -qF -- '$want' '$W/$name.err'" \
		"exit $rc (want 1), stderr '$(oneline "$W/$name.err")' (want the file and '$want')"
}
bad unknown_top_key bogus_key '{"listen": "127.0.0.1:5000", "bogus_key": 1}'
bad unknown_nested_key 'upstreams[0].colour' '{"upstreams": [{"name": "docker.io", "url": "http://127.0.0.1:1", "colour": "red"}]}'
bad unknown_auth_key 'upstreams[1].auth.pasword' '{"upstreams": [{"name": "a", "url": "http://127.0.0.1:1"}, {"name": "b", "url": "http://127.0.0.1:2", "auth": {"username": "u", "pasword": "x"}}]}'
bad bad_type_number max_connections '{"max_connections": "many"}'
bad bad_type_bool 'upstreams[0].tls_verify' '{"upstreams": [{"name": "docker.io", "url": "http://127.0.0.1:1", "tls_verify": "yes"}]}'
bad bad_type_object 'log' '{"log": "debug"}'
bad bad_type_nested 'limits.manifest_max_bytes' '{"limits": {"manifest_max_bytes": [1]}}'
bad negative_number 'upstreams[0].tag_ttl_s' '{"upstreams": [{"name": "docker.io", "url": "http://127.0.0.1:1", "tag_ttl_s": -5}]}'
unset RSB_CLI_UNSET
bad password_env_unset 'upstreams[0].auth.password_env' '{"upstreams": [{"name": "a", "url": "http://127.0.0.1:1", "auth": {"username": "u", "password_env": "RSB_CLI_UNSET"}}]}'
bad password_file_missing 'upstreams[0].auth.password_file' '{"upstreams": [{"name": "a", "url": "http://127.0.0.1:1", "auth": {"username": "u", "password_file": "/nonexistent/regslim-pass"}}]}'
bad url_scheme 'upstreams[0].url' '{"upstreams": [{"name": "a", "url": "ftp://127.0.0.1:1"}]}'
bad duplicate_upstream 'upstreams[1].name' '{"upstreams": [{"name": "a", "url": "http://127.0.0.1:1"}, {"name": "a", "url": "http://127.0.0.1:2"}]}'
bad empty_upstreams 'upstreams' '{"upstreams": []}'
bad bad_size_string 'cache.max_bytes' '{"cache": {"max_bytes": "20XB"}}'
bad bad_json "$W/bad_json.json" '{"listen": "127.0.0.1:5000",'
rc=$(run missing check-config "$W/does-not-exist.json")
expect check_config_missing_file "[ '$rc' = 1 ] && grep -qF '$W/does-not-exist.json' '$W/missing.err'" "exit $rc, stderr '$(oneline "$W/missing.err")'"
rc=$(run noarg check-config)
expect check_config_without_file_exit_2 "[ '$rc' = 2 ]" "exit $rc, stderr '$(oneline "$W/noarg.err")'"

# ---------------------------------------------------------------- serve
# a port someone else listens on
BUSY=$((LAB_PORT_BASE + 60))
lab_spawn aux-busy "$LOGS/busy.log" "$PY" -c "
import socket, time
s = socket.socket(); s.bind(('127.0.0.1', $BUSY)); s.listen(5)
time.sleep(120)"
# On a loaded machine python can take seconds to start: wait for the listener, or regslim
# would bind the port itself and keep serving.
if ! wait_port "$BUSY" 60; then
	fail serve_busy_port_setup "the helper listener on 127.0.0.1:$BUSY did not come up"
fi
rc=$(run busy serve --listen "127.0.0.1:$BUSY" --upstream "http://$FREE" --data-dir "$W/data-busy")
expect serve_busy_port_fails "[ '$rc' != 0 ] && [ '$rc' != 124 ]" "exit $rc (124: still running after 20 s)"
expect serve_busy_port_message "grep -qE '$BUSY' '$W/busy.err' && grep -qiE 'in use|bind|listen' '$W/busy.err' && [ \$(wc -l < '$W/busy.err') -le 5 ]" \
	"stderr: '$(oneline "$W/busy.err")'"
lab_stop aux-busy 5 > /dev/null 2>&1
rc=$(run badlisten serve --listen "nonsense" --upstream "http://$FREE" --data-dir "$W/data-bad")
expect serve_bad_listen_value "[ '$rc' != 0 ] && [ '$rc' != 124 ] && grep -q nonsense '$W/badlisten.err'" "exit $rc, stderr '$(oneline "$W/badlisten.err")'"
rc=$(run badcfg serve --config "$W/unknown_top_key.json")
expect serve_invalid_config_exit_1 "[ '$rc' = 1 ] && grep -qF '$W/unknown_top_key.json' '$W/badcfg.err'" "exit $rc, stderr '$(oneline "$W/badcfg.err")'"
rc=$(run badopt serve --no-such-option)
expect serve_unknown_option_exit_2 "[ '$rc' = 2 ] && grep -q 'no-such-option' '$W/badopt.err'" "exit $rc, stderr '$(oneline "$W/badopt.err")'"

# ---------------------------------------------------------------- usage
rc=$(run noargs)
expect no_args_exit_2 "[ '$rc' = 2 ] && grep -qi usage '$W/noargs.err'" "exit $rc, stderr '$(oneline "$W/noargs.err")'"
rc=$(run unknown frobnicate)
expect unknown_command_exit_2 "[ '$rc' = 2 ] && grep -q frobnicate '$W/unknown.err'" "exit $rc, stderr '$(oneline "$W/unknown.err")'"

finish
