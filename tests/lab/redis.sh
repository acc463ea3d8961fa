#!/usr/bin/env bash
# redis.sh - the Redis of regslim's test lab: Debian's redis-server on 127.0.0.1, no persistence,
# no systemd, nothing outside the lab's state directory. What regslim's cluster coordination
# (proxy/cluster/) talks to in the tests.
#
#   redis.sh start     start it; a running one is left alone
#   redis.sh stop      stop it by PID (SIGTERM; its data, in memory only, goes with it)
#   redis.sh kill      SIGKILL, as a crash (the degraded-mode tests)
#   redis.sh pause S   SIGSTOP for S seconds, then SIGCONT: a Redis that accepts but never answers
#   redis.sh status    whether it runs and answers PING (exit 1 if not)
#   redis.sh cli ARGS  redis-cli against it, bounded (e.g. `redis.sh cli keys 'regslim:*'`)
#   redis.sh env       shell assignments for eval: REDIS_PORT REDIS_URL
#
#   redis  127.0.0.1:BASE+40   database 0 by default; REDISLAB_PASSWORD sets `requirepass`
#
# Under $REGSLIM_LAB/redis: redis.conf (written at each start); log $REGSLIM_LAB/logs/redis.log;
# PID run/redis.pid.
#
# Env: see lab.sh (REGSLIM_LAB, LAB_PORT_BASE), and REDISLAB_PASSWORD (default: none).
set -euo pipefail
RL_ME=redis.sh
# shellcheck source=lab.sh
. "$(dirname "${BASH_SOURCE[0]}")/lab.sh"

RD_DIR=$RL_LAB/redis
RD_PORT=$((RL_BASE + 40))
RD_LOG=$RL_LOGS/redis.log
mkdir -p "$RD_DIR"

rd_cli() {
	local a=()
	[ -z "${REDISLAB_PASSWORD:-}" ] || a=(--no-auth-warning -a "$REDISLAB_PASSWORD")
	timeout 5 redis-cli -h 127.0.0.1 -p "$RD_PORT" "${a[@]}" "$@"
}

rd_pings() { [ "$(rd_cli ping 2> /dev/null)" = PONG ]; }

# rd_write_conf: the configuration. Its path is redis-server's argument, so the command line
# names the state directory and rl_alive recognises the process as ours
rd_write_conf() {
	cat > "$RD_DIR/redis.conf" <<- EOF
		# redis of regslim's test lab (written by redis.sh at each start)
		bind 127.0.0.1
		port $RD_PORT
		protected-mode yes
		daemonize no
		dir $RD_DIR
		logfile $RD_LOG
		# memory only: a restart is an empty Redis, as after a crash without persistence
		save ""
		appendonly no
		databases 16
		# keep the command line (it names this file, so rl_alive knows the process is ours)
		set-proc-title no
	EOF
	[ -z "${REDISLAB_PASSWORD:-}" ] || printf 'requirepass %s\n' "$REDISLAB_PASSWORD" >> "$RD_DIR/redis.conf"
	chmod 600 "$RD_DIR/redis.conf"
}

rd_start() {
	local i
	if rl_alive redis; then
		echo "redis: already running on 127.0.0.1:$RD_PORT (pid $(rl_pid redis))"
		return 0
	fi
	rl_need redis-server redis-cli=redis-tools
	rl_port_busy "$RD_PORT" && rl_fail "127.0.0.1:$RD_PORT is taken by a process that is not ours"
	rd_write_conf
	rl_spawn redis "$RL_LOGS/redis.out" redis-server "$RD_DIR/redis.conf"
	for ((i = 0; i < 100; i++)); do
		rd_pings && break
		rl_alive redis || break
		sleep 0.1
	done
	if ! rd_pings; then
		echo "$RL_ME: redis does not answer PING on 127.0.0.1:$RD_PORT" >&2
		rl_log_tail "$RD_LOG" 5
		rl_stop redis 2
		exit 1
	fi
	echo "redis: 127.0.0.1:$RD_PORT pid $(rl_pid redis) log $RD_LOG"
}

rd_stop() {
	local pid
	pid=$(rl_pid redis)
	rl_alive redis || pid=
	rl_stop redis 10
	[ -z "$pid" ] || echo "redis: stopped (pid $pid)"
}

rd_kill() {
	local pid i
	rl_alive redis || { echo "redis: not running"; return 0; }
	pid=$(rl_pid redis)
	kill -KILL "$pid"
	for ((i = 0; i < 50; i++)); do rl_alive redis || break; sleep 0.1; done
	rm -f "$RL_RUN/redis.pid"
	echo "redis: killed (pid $pid)"
}

rd_pause() {
	local pid
	rl_alive redis || rl_fail "redis is not running"
	pid=$(rl_pid redis)
	kill -STOP "$pid"
	sleep "${1:-5}"
	kill -CONT "$pid"
}

rd_status() {
	if rl_alive redis; then echo "redis: running (pid $(rl_pid redis))"; else echo "redis: stopped"; return 1; fi
	if rd_pings; then echo "redis: 127.0.0.1:$RD_PORT answers PING"; else echo "redis: 127.0.0.1:$RD_PORT does not answer"; return 1; fi
}

rd_env() { printf 'REDIS_PORT=%s\nREDIS_URL=redis://127.0.0.1:%s/0\n' "$RD_PORT" "$RD_PORT"; }

case ${1:-status} in
	start) rd_start ;;
	stop) rd_stop ;;
	kill) rd_kill ;;
	pause) rd_pause "${2:-5}" ;;
	status) rd_status ;;
	cli) shift; rd_cli "$@" ;;
	env) rd_env ;;
	*)
		echo "usage: $RL_ME start|stop|kill|pause S|status|cli ARGS|env" >&2
		exit 2 ;;
esac
