#!/usr/bin/env bash
# registry.sh - the upstream registries of regslim's test lab: Debian's docker-registry
# (distribution 2.8.2) on 127.0.0.1, in the three ways an upstream can treat a client.
#
#   registry.sh start   [plain|auth|token|all]   default plain; a running one is left alone
#   registry.sh stop    [plain|auth|token|all]   default all; token also stops the token server
#   registry.sh restart [plain|auth|token|all]   default plain; same port, same storage
#   registry.sh status                           what runs, with PIDs
#   registry.sh env                              shell assignments for eval (names below)
#
#   plain     127.0.0.1:BASE+0   anonymous access, the default upstream of the tests
#   auth      127.0.0.1:BASE+1   HTTP Basic against an htpasswd file (bcrypt), LAB_USER/LAB_PASS
#   token     127.0.0.1:BASE+2   bearer tokens signed by tokenserver.py, realm http://127.0.0.1:BASE+3/token
#   tokensrv  127.0.0.1:BASE+3   tokenserver.py (started and stopped with token)
#
# `env` prints REGSLIM_LAB LAB_PORT_BASE REG_PLAIN REG_AUTH REG_TOKEN TOKEN_SERVER LOGPROXY
# LAB_USER LAB_PASS TOKEN_SERVICE TOKEN_ISSUER (LOGPROXY is BASE+80, clients.sh starts it).
#
# Under $REGSLIM_LAB/registry: config-<port>.yml, data-<port>/ (the storage; kept by stop, so a
# restart serves the same images), htpasswd, token/key.pem + token/cert.pem (the signing key and
# the certificate the token registry trusts; made when missing, so deleting both and restarting
# token rotates the key: tokens issued before are refused from then on). Logs, with one access-log
# line per request: $REGSLIM_LAB/logs/registry-<port>.log and logs/tokenserver.log.
#
# Env: see lab.sh (REGSLIM_LAB, LAB_PORT_BASE, LAB_USER, LAB_PASS), and REGISTRY_BIN (the
# registry command, default docker-registry).
set -euo pipefail
RL_ME=registry.sh
# shellcheck source=lab.sh
. "$(dirname "${BASH_SOURCE[0]}")/lab.sh"

RG_DIR=$RL_LAB/registry
RG_SERVICE=regslim-test-registry
RG_ISSUER=regslim-test-issuer
RG_BIN=${REGISTRY_BIN:-docker-registry}
mkdir -p "$RG_DIR"

# rg_port NAME: the port of plain, auth, token or tokensrv
rg_port() {
	case $1 in
		plain) echo "$RL_BASE" ;;
		auth) echo $((RL_BASE + 1)) ;;
		token) echo $((RL_BASE + 2)) ;;
		tokensrv) echo $((RL_BASE + 3)) ;;
		*) rl_fail "no such component '$1'" ;;
	esac
}

# rg_wait_http NAME URL SECONDS: wait until URL answers 200 or 401 while NAME's process runs
rg_wait_http() {
	local name=$1 url=$2 code="" i
	for ((i = 0; i < $3 * 4; i++)); do
		rl_alive "$name" || break
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
		case $code in 200 | 401) return 0 ;; esac
		sleep 0.25
	done
	echo "$RL_ME: $name does not answer at $url (last status '${code:-none}', process $(rl_alive "$name" && echo running || echo gone))" >&2
	return 1
}

# rg_auth_block NAME: the `auth:` section of NAME's configuration (nothing for plain)
rg_auth_block() {
	case $1 in
		auth)
			printf 'auth:\n  htpasswd:\n    realm: regslim-lab\n    path: %s\n' "$RG_DIR/htpasswd" ;;
		token)
			printf 'auth:\n  token:\n    realm: http://127.0.0.1:%s/token\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n' \
				"$(rg_port tokensrv)" "$RG_SERVICE" "$RG_ISSUER" "$RG_DIR/token/cert.pem" ;;
	esac
}

# rg_write_config NAME PORT: config-PORT.yml. The in-memory blob descriptor cache and no upload
# purging keep the registry from doing anything on its own between requests; the access log is
# what tests count requests with.
rg_write_config() {
	local name=$1 port=$2 data=$RG_DIR/data-$2
	mkdir -p "$data"
	{
		cat <<- EOF
			# $name registry of regslim's test lab (written by registry.sh on every start)
			version: 0.1
			log:
			  level: info
			  formatter: text
			  accesslog:
			    disabled: false
			  fields:
			    lab: $name
			storage:
			  filesystem:
			    rootdirectory: $data
			  delete:
			    enabled: true
			  cache:
			    blobdescriptor: inmemory
			  maintenance:
			    uploadpurging:
			      enabled: false
			http:
			  addr: 127.0.0.1:$port
			  secret: regslim-lab-$name-$port
			  headers:
			    X-Content-Type-Options: [nosniff]
		EOF
		rg_auth_block "$name"
	} > "$RG_DIR/config-$port.yml"
}

# rg_token_material: the token signing key and its self-signed certificate, made when missing
rg_token_material() {
	local d=$RG_DIR/token
	mkdir -p "$d"
	[ -s "$d/key.pem" ] && [ -s "$d/cert.pem" ] && return 0
	rm -f "$d/key.pem" "$d/cert.pem"
	timeout 60 openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=$RG_ISSUER" \
		-keyout "$d/key.pem" -out "$d/cert.pem" >> "$RL_LOGS/openssl.log" 2>&1 \
		|| rl_fail "openssl could not make the token key (log: $RL_LOGS/openssl.log)"
	chmod 600 "$d/key.pem"
}

# rg_start_tokensrv: tokenserver.py on BASE+3
rg_start_tokensrv() {
	local port log=$RL_LOGS/tokenserver.log
	port=$(rg_port tokensrv)
	if rl_alive tokensrv; then
		echo "tokensrv: already running on 127.0.0.1:$port (pid $(rl_pid tokensrv))"
		return 0
	fi
	rl_need python3 openssl curl
	rg_token_material
	rl_port_busy "$port" && rl_fail "127.0.0.1:$port (token server) is taken by a process that is not ours"
	rl_spawn tokensrv "$log" "$(rl_python)" "$RL_HERE/tokenserver.py" --port "$port" \
		--key "$RG_DIR/token/key.pem" --cert "$RG_DIR/token/cert.pem" \
		--service "$RG_SERVICE" --issuer "$RG_ISSUER" --user "$RL_USER" --password-env RL_TOKEN_PASS
	if ! rg_wait_http tokensrv "http://127.0.0.1:$port/healthz" 10; then
		rl_log_tail "$log" 5
		rl_stop tokensrv 2
		exit 1
	fi
	echo "tokensrv: 127.0.0.1:$port pid $(rl_pid tokensrv) log $log"
}

# rg_start NAME: start plain, auth or token (token: and its token server)
rg_start() {
	local name=$1 port log
	port=$(rg_port "$name")
	log=$RL_LOGS/registry-$port.log
	if rl_alive "$name"; then
		echo "$name: already running on 127.0.0.1:$port (pid $(rl_pid "$name"))"
	else
		rl_need curl "$RG_BIN=docker-registry"
		rl_port_busy "$port" && rl_fail "127.0.0.1:$port ($name registry) is taken by a process that is not ours"
		case $name in
			auth)
				rl_need htpasswd=apache2-utils
				# rewritten each start: LAB_USER / LAB_PASS may have changed
				htpasswd -nbB "$RL_USER" "$RL_PASS" > "$RG_DIR/htpasswd.new" 2>> "$RL_LOGS/openssl.log" \
					|| rl_fail "htpasswd failed"
				mv "$RG_DIR/htpasswd.new" "$RG_DIR/htpasswd" ;;
			token) rl_need openssl && rg_token_material ;;
		esac
		rg_write_config "$name" "$port"
		rl_spawn "$name" "$log" "$(command -v "$RG_BIN")" serve "$RG_DIR/config-$port.yml"
		if ! rg_wait_http "$name" "http://127.0.0.1:$port/v2/" 20; then
			rl_log_tail "$log" 5
			rl_stop "$name" 2
			exit 1
		fi
		echo "$name: 127.0.0.1:$port pid $(rl_pid "$name") log $log"
	fi
	[ "$name" != token ] || rg_start_tokensrv
}

# rg_stop NAME: stop it by PID (token: and the token server); the storage stays
rg_stop() {
	local n pid
	for n in "$1" $([ "$1" != token ] || echo tokensrv); do
		pid=$(rl_pid "$n")
		rl_alive "$n" || pid=
		rl_stop "$n"
		[ -z "$pid" ] || echo "$n: stopped (pid $pid)"
	done
}

# rg_targets WORD DEFAULT: the registries a command applies to
rg_targets() {
	case ${1:-$2} in
		plain | auth | token) echo "${1:-$2}" ;;
		all) echo plain auth token ;;
		*) echo "$RL_ME: unknown registry '$1' (plain, auth, token or all)" >&2; exit 2 ;;
	esac
}

rg_status() {
	local n
	for n in plain auth token tokensrv; do
		if rl_alive "$n"; then
			echo "$n: running on 127.0.0.1:$(rg_port "$n") (pid $(rl_pid "$n"))"
		else
			echo "$n: stopped (127.0.0.1:$(rg_port "$n"))"
		fi
	done
}

rg_env() {
	printf 'REGSLIM_LAB=%q\nLAB_PORT_BASE=%q\n' "$RL_LAB" "$RL_BASE"
	printf 'REG_PLAIN=127.0.0.1:%s\nREG_AUTH=127.0.0.1:%s\nREG_TOKEN=127.0.0.1:%s\n' \
		"$(rg_port plain)" "$(rg_port auth)" "$(rg_port token)"
	printf 'TOKEN_SERVER=127.0.0.1:%s\nLOGPROXY=127.0.0.1:%s\n' "$(rg_port tokensrv)" $((RL_BASE + 80))
	printf 'LAB_USER=%q\nLAB_PASS=%q\nTOKEN_SERVICE=%q\nTOKEN_ISSUER=%q\n' \
		"$RL_USER" "$RL_PASS" "$RG_SERVICE" "$RG_ISSUER"
}

# the token server reads the password from its environment, not from its command line (ps)
export RL_TOKEN_PASS=$RL_PASS

cmd=${1:-status}
case $cmd in
	start | restart) targets=$(rg_targets "${2:-}" plain) ;;
	stop) targets=$(rg_targets "${2:-}" all) ;;
esac
case $cmd in
	start)
		for t in $targets; do rg_start "$t"; done ;;
	stop)
		for t in $targets; do rg_stop "$t"; done ;;
	restart)
		for t in $targets; do
			rg_stop "$t"
			rg_start "$t"
		done ;;
	status) rg_status ;;
	env) rg_env ;;
	*)
		echo "usage: $RL_ME start|stop|restart [plain|auth|token|all] | status | env" >&2
		exit 2 ;;
esac
