#!/usr/bin/env bash
# haproxy.sh - the load balancer of regslim's test lab: Debian's haproxy on 127.0.0.1 in front of
# N regslim replicas, round robin, no stickiness (every request may land on another replica, as
# the scale-out tests need), no systemd.
#
#   haproxy.sh start PORT...   balance over 127.0.0.1:PORT for each PORT (the replicas, started by
#                              the caller); a running one is stopped and started with the new list
#   haproxy.sh stop            stop it by PID
#   haproxy.sh status          whether it runs and its frontend accepts connections (exit 1 if not)
#   haproxy.sh env             shell assignments for eval: HAPROXY_PORT HAPROXY_URL
#
#   frontend  127.0.0.1:BASE+41   HTTP; each backend is checked with GET /healthz every 500 ms
#                                 (a replica that does not answer 200 twice is taken out until it does)
#
# Under $REGSLIM_LAB/haproxy: haproxy.cfg (written at each start); log $REGSLIM_LAB/logs/haproxy.log
# (haproxy's own messages; the replicas' logs say which of them served a request). PID run/haproxy.pid.
#
# Env: see lab.sh (REGSLIM_LAB, LAB_PORT_BASE).
set -euo pipefail
RL_ME=haproxy.sh
# shellcheck source=lab.sh
. "$(dirname "${BASH_SOURCE[0]}")/lab.sh"

HP_DIR=$RL_LAB/haproxy
HP_PORT=$((RL_BASE + 41))
HP_LOG=$RL_LOGS/haproxy.log
mkdir -p "$HP_DIR"

# hp_write_conf PORT...: the configuration. Long client and server timeouts: a blob of the big
# fixture streams for a while; `retries` + `redispatch`: a connection refused by a dead replica is
# tried on another one (the request itself is never replayed once a replica got it).
hp_write_conf() {
	local i=0 p
	{
		cat <<- EOF
			# haproxy of regslim's test lab (written by haproxy.sh at each start)
			global
			    maxconn 1024
			defaults
			    mode http
			    option dontlognull
			    # large bodies go replica -> client by splice(2), not through haproxy's buffers
			    option splice-response
			    timeout connect 2s
			    timeout client 300s
			    timeout server 300s
			    timeout http-request 30s
			    retries 2
			    option redispatch
			frontend regslim
			    bind 127.0.0.1:$HP_PORT
			    default_backend replicas
			backend replicas
			    balance roundrobin
			    option httpchk GET /healthz
			    http-check expect status 200
		EOF
		for p in "$@"; do
			i=$((i + 1))
			printf '    server r%d 127.0.0.1:%s check inter 500ms fall 2 rise 1\n' "$i" "$p"
		done
	} > "$HP_DIR/haproxy.cfg"
}

hp_start() {
	local i
	[ $# -ge 1 ] || rl_fail "start needs the replicas' ports"
	rl_need haproxy curl
	rl_alive haproxy && rl_stop haproxy 5
	rl_port_busy "$HP_PORT" && rl_fail "127.0.0.1:$HP_PORT is taken by a process that is not ours"
	hp_write_conf "$@"
	timeout 10 haproxy -c -q -f "$HP_DIR/haproxy.cfg" >> "$HP_LOG" 2>&1 \
		|| { rl_log_tail "$HP_LOG" 5; rl_fail "haproxy refuses its configuration $HP_DIR/haproxy.cfg"; }
	# -db: in the foreground, so the PID is haproxy's; its messages go to the log
	rl_spawn haproxy "$HP_LOG" haproxy -db -f "$HP_DIR/haproxy.cfg"
	if ! rl_wait_port "$HP_PORT" 10; then
		rl_log_tail "$HP_LOG" 5
		rl_stop haproxy 2
		rl_fail "haproxy does not listen on 127.0.0.1:$HP_PORT"
	fi
	echo "haproxy: 127.0.0.1:$HP_PORT -> $* pid $(rl_pid haproxy) log $HP_LOG"
}

hp_stop() {
	local pid
	pid=$(rl_pid haproxy)
	rl_alive haproxy || pid=
	rl_stop haproxy 10
	[ -z "$pid" ] || echo "haproxy: stopped (pid $pid)"
}

hp_status() {
	if rl_alive haproxy; then echo "haproxy: running (pid $(rl_pid haproxy))"; else echo "haproxy: stopped"; return 1; fi
	if rl_port_busy "$HP_PORT"; then echo "haproxy: 127.0.0.1:$HP_PORT accepts connections"; else echo "haproxy: 127.0.0.1:$HP_PORT does not listen"; return 1; fi
}

hp_env() { printf 'HAPROXY_PORT=%s\nHAPROXY_URL=http://127.0.0.1:%s\n' "$HP_PORT" "$HP_PORT"; }

case ${1:-status} in
	start) shift; hp_start "$@" ;;
	stop) hp_stop ;;
	status) hp_status ;;
	env) hp_env ;;
	*)
		echo "usage: $RL_ME start PORT...|stop|status|env" >&2
		exit 2 ;;
esac
