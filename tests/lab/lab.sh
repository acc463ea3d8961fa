# lab.sh - what every script of regslim's test lab shares (sourced, never run).
#
# The lab is the set of real components regslim's tests talk to: Debian's docker-registry in
# three auth modes with its token server (registry.sh), the fixture images (fixtures.sh), the
# pulling clients skopeo, podman, containerd's ctr and dockerd (clients.sh) and the logging
# proxy (logproxy.py). Everything a lab writes lives under one state directory; every daemon
# binds 127.0.0.1 and is stopped by the PID it was started with.
#
# Environment (all optional):
#   REGSLIM_LAB     state directory (default ${TMPDIR:-/tmp}/regslim-lab); keep it short, containerd's
#                   socket path below it must fit in 108 bytes
#   LAB_PORT_BASE   first port of the lab's block (default 15000); see registry.sh for the layout
#   LAB_USER, LAB_PASS   the user of the htpasswd and token registries (lab / labpass)
#
# Functions (prefix rl_, so that a test sourcing clients.sh keeps its own lab_* names):
#   rl_need CMD[=PKG]...        make sure commands exist: install their Debian packages (root), or fail
#   rl_spawn NAME LOG CMD...    start CMD detached (setsid), PID in $RL_RUN/NAME.pid
#   rl_alive NAME               that PID runs, is not a zombie, and its command line names $RL_LAB
#   rl_stop NAME [GRACE_S]      SIGTERM, SIGKILL after GRACE_S (10), forget the PID
#   rl_wait_port PORT [S]       wait until 127.0.0.1:PORT accepts connections (default 20 s)
#   rl_port_busy PORT           something already listens on 127.0.0.1:PORT
#   rl_fail MSG...              print "<script>: MSG" on stderr and exit 1
#   rl_log_tail FILE [N]        the last N (10) lines of FILE on stderr, indented
#   rl_python                   the Python 3 interpreter to run the lab's .py files with

RL_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RL_ME=${RL_ME:-$(basename "$0")}
RL_LAB=$(realpath -m "${REGSLIM_LAB:-${TMPDIR:-/tmp}/regslim-lab}")
RL_BASE=${LAB_PORT_BASE:-15000}
RL_RUN=$RL_LAB/run
RL_LOGS=$RL_LAB/logs
RL_USER=${LAB_USER:-lab}
RL_PASS=${LAB_PASS:-labpass}
mkdir -p "$RL_RUN" "$RL_LOGS" "$RL_LAB/tmp"
# the marker that lets `clients.sh teardown` delete this directory, and nothing else
touch "$RL_LAB/.regslim-lab"

rl_fail() {
	echo "$RL_ME: $*" >&2
	exit 1
}

rl_log_tail() {
	[ -f "$1" ] || return 0
	tail -n "${2:-10}" "$1" | sed 's/^/    /' >&2
}

rl_python() { if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi; }

# rl_need CMD[=PKG]...: for each command that is missing, install its Debian package (PKG, or the
# command's own name). `apt-get update` runs once per process tree (REGSLIM_APT_UPDATED). Package
# scripts must not start system services (dockerd, containerd) on a test machine: a temporary
# policy-rc.d refuses them while apt runs, unless the machine already has one.
rl_need() {
	local c pkgs=() log=$RL_LOGS/apt.log rc=0 prc=
	for c in "$@"; do command -v "${c%%=*}" > /dev/null 2>&1 || pkgs+=("${c#*=}"); done
	[ ${#pkgs[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || rl_fail "missing commands; install the Debian packages ${pkgs[*]} (or run as root)"
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		prc=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' > "$prc" && chmod 755 "$prc"
	fi
	if [ -z "${REGSLIM_APT_UPDATED:-}" ]; then
		timeout 600 apt-get -o DPkg::Lock::Timeout=600 update >> "$log" 2>&1 || rc=$?
		export REGSLIM_APT_UPDATED=1
	fi
	if [ $rc -eq 0 ]; then
		DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -q --no-install-recommends \
			-o DPkg::Lock::Timeout=600 "${pkgs[@]}" >> "$log" 2>&1 || rc=$?
	fi
	[ -z "$prc" ] || rm -f "$prc"
	for c in "$@"; do command -v "${c%%=*}" > /dev/null 2>&1 || rc=1; done
	if [ $rc -ne 0 ]; then
		echo "$RL_ME: installing ${pkgs[*]} failed (log: $log):" >&2
		rl_log_tail "$log" 5
		exit 1
	fi
}

# rl_pid NAME: the recorded PID of NAME, or nothing.
rl_pid() { cat "$RL_RUN/$1.pid" 2> /dev/null; }

rl_alive() {
	local pid cmd
	pid=$(rl_pid "$1")
	[ -n "$pid" ] && kill -0 "$pid" 2> /dev/null || return 1
	# a zombie is not alive; field 3 of /proc/PID/stat is the state, after "(comm)"
	[ "$(sed 's/^.*) \(.\).*/\1/' "/proc/$pid/stat" 2> /dev/null)" != Z ] || return 1
	# a stale PID file must never make us signal somebody else's process
	cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null)
	[[ $cmd == *"$RL_LAB"* ]]
}

rl_spawn() {
	local name=$1 log=$2 pf=$RL_RUN/$1.pid i
	shift 2
	rm -f "$pf"
	# the inner shell writes its own PID, then becomes CMD: the PID file names CMD itself
	# shellcheck disable=SC2016
	setsid sh -c 'echo $$ > "$1"; shift; exec "$@"' rl-spawn "$pf" "$@" >> "$log" 2>&1 < /dev/null &
	for ((i = 0; i < 50; i++)); do
		[ -s "$pf" ] && return 0
		sleep 0.1
	done
	rl_fail "$name did not start (log: $log)"
}

rl_stop() {
	local name=$1 grace=${2:-10} pid i
	pid=$(rl_pid "$name")
	if [ -n "$pid" ] && rl_alive "$name"; then
		kill -TERM "$pid" 2> /dev/null
		for ((i = 0; i < grace * 10; i++)); do
			rl_alive "$name" || break
			sleep 0.1
		done
		if rl_alive "$name"; then
			echo "$RL_ME: $name (pid $pid) still runs $grace s after SIGTERM, killing it" >&2
			kill -KILL "$pid" 2> /dev/null
			sleep 0.2
		fi
	fi
	rm -f "$RL_RUN/$name.pid"
}

rl_port_busy() { (: <> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }

rl_wait_port() {
	local i
	for ((i = 0; i < ${2:-20} * 10; i++)); do
		rl_port_busy "$1" && return 0
		sleep 0.1
	done
	return 1
}
