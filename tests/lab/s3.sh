#!/usr/bin/env bash
# s3.sh - the S3 object store of regslim's test lab: a one-node Ceph cluster (Debian's ceph-mon,
# one ceph-osd and radosgw, Ceph 16.2) serving S3 on 127.0.0.1, without systemd and without
# anything outside the lab's state directory.
#
#   s3.sh start    a monitor, an OSD, radosgw, an S3 user and the bucket; a running one is left alone
#   s3.sh stop     radosgw, then the OSD, then the monitor, by PID (the cluster's data goes with it)
#   s3.sh status   what runs, and whether the bucket answers a signed request (exit 1 if not)
#   s3.sh rgw-stop   stop radosgw only (the S3 endpoint goes away, the cluster and its data stay)
#   s3.sh rgw-start  start radosgw again on the running cluster; waits until S3 answers
#   s3.sh env      shell assignments for eval: S3_ENDPOINT S3_REGION S3_BUCKET S3_ACCESS_KEY S3_SECRET_KEY
#
#   rgw  127.0.0.1:BASE+20   S3, path-style (http://127.0.0.1:BASE+20/BUCKET/KEY) and virtual-host
#                            (http://BUCKET.localhost:BASE+20/KEY)
#   mon  127.0.0.1:BASE+21   the monitor (msgr v2)
#   osd  127.0.0.1:BASE+22..BASE+39   the OSD's messengers (public, cluster, heartbeats)
#
# Under $REGSLIM_LAB/s3: ceph.conf (written at each start), mon/, osd/, rgw/, run/ (admin sockets),
# keyring; logs in $REGSLIM_LAB/logs/s3-*.log (the daemons' own) and s3-*.out (their stderr).
# PIDs: run/s3-mon.pid, run/s3-osd.pid, run/s3-rgw.pid. A start always makes a new, empty
# cluster: stop discards the data.
#
# Env: see lab.sh (REGSLIM_LAB, LAB_PORT_BASE), and
#   S3LAB_STORE     memstore (default: objects in the OSD's memory, about twice their size; the
#                   fastest start) or bluestore (a sparse 10 GiB file under s3/osd; not on tmpfs)
#   S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET   the user's keys and the bucket (lab defaults below)
set -euo pipefail
RL_ME=s3.sh
# shellcheck source=lab.sh
. "$(dirname "${BASH_SOURCE[0]}")/lab.sh"

S3_DIR=$RL_LAB/s3
S3_CONF=$S3_DIR/ceph.conf
S3_PORT=$((RL_BASE + 20))
S3_MON_PORT=$((RL_BASE + 21))
S3_ACCESS=${S3_ACCESS_KEY:-REGSLIMLABACCESSKEY0}
S3_SECRET=${S3_SECRET_KEY:-regslim-lab-secret-key-0000000000000000}
S3_BKT=${S3_BUCKET:-regslim}
S3_STORE=${S3LAB_STORE:-memstore}
S3_T0=

s3_mark() { # s3_mark WHAT: the time since start began, on stderr (start-up is measured)
	awk -v a="$S3_T0" -v b="$(date +%s.%N)" -v w="$1" 'BEGIN { printf "s3.sh: %-22s %5.1f s\n", w, b - a }' >&2
}

# s3_ceph ARGS: the ceph CLI on our cluster, bounded
s3_ceph() { timeout 20 ceph -c "$S3_CONF" --connect-timeout 5 "$@"; }

# s3_curl ARGS: curl signing with SigV4 as the lab user. curl 7.88 signs the body's hash but does
# not send it: without our own x-amz-content-sha256 header RGW answers SignatureDoesNotMatch.
s3_curl() {
	curl -sS --max-time 10 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS:$S3_SECRET" \
		-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}

# s3_wait SECONDS WHAT NAME CMD...: retry CMD every 0.2 s while daemon NAME runs
s3_wait() {
	local t=$1 what=$2 name=$3 i
	shift 3
	for ((i = 0; i < t * 5; i++)); do
		"$@" > /dev/null 2>&1 && return 0
		rl_alive "$name" || { echo "$RL_ME: $name exited while waiting for $what" >&2; return 1; }
		sleep 0.2
	done
	echo "$RL_ME: no $what after $t s" >&2
	return 1
}

s3_write_conf() {
	local fsid=$1
	cat > "$S3_CONF" <<- EOF
		# one-node Ceph of regslim's test lab (written by s3.sh at each start)
		[global]
		fsid = $fsid
		mon host = v2:127.0.0.1:$S3_MON_PORT
		# loopback only: without these the OSD binds 0.0.0.0:6800-7300
		public addr = 127.0.0.1
		cluster addr = 127.0.0.1
		ms bind ipv6 = false
		ms bind port min = $((RL_BASE + 22))
		ms bind port max = $((RL_BASE + 39))
		# a throwaway cluster on loopback: no cephx
		auth cluster required = none
		auth service required = none
		auth client required = none
		keyring = $S3_DIR/keyring
		run dir = $S3_DIR/run
		admin socket = $S3_DIR/run/\$name.asok
		log file = $RL_LOGS/s3-\$name.log
		mon cluster log file = $RL_LOGS/s3-cluster.log
		crash dir = $S3_DIR/crash
		log to stderr = false
		err to stderr = true
		# one OSD: pools of size 1, placement on the OSD itself rather than on a host
		osd pool default size = 1
		osd pool default min size = 1
		osd pool default pg num = 8
		osd pool default pgp num = 8
		osd pool default pg autoscale mode = off
		osd crush chooseleaf type = 0
		mon allow pool size one = true
		mon warn on pool no redundancy = false
		mon max pg per osd = 1000
		mon data avail warn = 2
		mon data avail crit = 1

		[mon]
		mon data = $S3_DIR/mon/\$cluster-\$id
		# radosgw creates its pools one map update at a time: 1 s batching (the default) makes
		# start-up about 10 times slower
		paxos propose interval = 0.05

		[osd]
		osd data = $S3_DIR/osd/\$cluster-\$id
		osd objectstore = $S3_STORE
		memstore device bytes = 4294967296
		bluestore block path = $S3_DIR/osd/block
		bluestore block create = true
		bluestore block size = 10737418240
		bluestore fsck on mount = false
		osd memory target = 939524096
		osd op num shards = 2
		osd op num threads per shard = 1

		[client.rgw]
		rgw frontends = beast endpoint=127.0.0.1:$S3_PORT tcp_nodelay=1
		rgw data = $S3_DIR/rgw
		rgw thread pool size = 32
		rgw enable usage log = false
		# virtual-host requests: http://BUCKET.localhost:PORT/KEY (curl resolves *.localhost to loopback)
		rgw dns name = localhost
		# radosgw asks for a secure monitor connection by default, which auth none cannot give
		ms mon client mode = crc
	EOF
}

s3_rgw_answers() { curl -s -o /dev/null -D - --max-time 2 "http://127.0.0.1:$S3_PORT/" | grep -qi '^x-amz-request-id:'; }

s3_start() {
	local fsid osd_uuid oid code
	if rl_alive s3-rgw && rl_alive s3-osd && rl_alive s3-mon; then
		echo "s3: already running on http://127.0.0.1:$S3_PORT (pids $(rl_pid s3-mon) $(rl_pid s3-osd) $(rl_pid s3-rgw))"
		return 0
	fi
	s3_stop > /dev/null 2>&1 # a half-started cluster from before
	rl_need ceph-mon ceph-osd radosgw ceph=ceph-common ceph-authtool=ceph-common radosgw-admin=ceph-common \
		monmaptool=ceph-base uuidgen=uuid-runtime curl
	local p
	for p in $S3_PORT $S3_MON_PORT; do
		rl_port_busy "$p" && rl_fail "127.0.0.1:$p is taken by a process that is not ours"
	done
	S3_T0=$(date +%s.%N)
	rm -rf "$S3_DIR"
	mkdir -p "$S3_DIR/mon" "$S3_DIR/osd/ceph-0" "$S3_DIR/rgw" "$S3_DIR/run" "$S3_DIR/crash"
	fsid=$(uuidgen)
	s3_write_conf "$fsid"
	# the monitor
	timeout 20 monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$S3_MON_PORT]" "$S3_DIR/monmap" \
		>> "$RL_LOGS/s3-setup.out" 2>&1 || s3_failed "monmaptool" s3-setup.out
	timeout 20 ceph-authtool --create-keyring "$S3_DIR/keyring" --gen-key -n mon. --cap mon 'allow *' \
		>> "$RL_LOGS/s3-setup.out" 2>&1 || s3_failed "ceph-authtool" s3-setup.out
	timeout 60 ceph-mon -c "$S3_CONF" --mkfs -i a --monmap "$S3_DIR/monmap" --keyring "$S3_DIR/keyring" \
		>> "$RL_LOGS/s3-setup.out" 2>&1 || s3_failed "ceph-mon --mkfs" s3-setup.out
	rl_spawn s3-mon "$RL_LOGS/s3-mon.out" ceph-mon -c "$S3_CONF" -i a -f
	s3_wait 60 "monitor quorum" s3-mon s3_ceph mon stat || s3_failed "the monitor" s3-mon.a.log
	s3_mark "monitor up"
	# one OSD
	osd_uuid=$(uuidgen)
	oid=$(s3_ceph osd new "$osd_uuid" 2>> "$RL_LOGS/s3-setup.out") || s3_failed "ceph osd new" s3-setup.out
	[ "$oid" = 0 ] || s3_failed "ceph osd new gave id '$oid', not 0" s3-setup.out
	timeout 120 ceph-osd -c "$S3_CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >> "$RL_LOGS/s3-setup.out" 2>&1 \
		|| s3_failed "ceph-osd --mkfs" s3-setup.out
	rl_spawn s3-osd "$RL_LOGS/s3-osd.out" ceph-osd -c "$S3_CONF" -i 0 -f
	s3_wait 60 "the OSD up in the map" s3-osd sh -c "timeout 20 ceph -c '$S3_CONF' --connect-timeout 5 osd dump --format json | grep -q '\"up\":1'" \
		|| s3_failed "the OSD" s3-osd.0.log
	s3_mark "osd up"
	# radosgw and its user
	rl_spawn s3-rgw "$RL_LOGS/s3-rgw.out" radosgw -c "$S3_CONF" -n client.rgw -f
	timeout 60 radosgw-admin -c "$S3_CONF" user create --uid=regslim --display-name="regslim lab" \
		--access-key="$S3_ACCESS" --secret-key="$S3_SECRET" > "$S3_DIR/user.json" 2>> "$RL_LOGS/s3-setup.out" \
		|| s3_failed "radosgw-admin user create" s3-setup.out
	s3_wait 120 "S3 answers on 127.0.0.1:$S3_PORT" s3-rgw s3_rgw_answers || s3_failed "radosgw" s3-client.rgw.log
	code=$(s3_curl -o "$S3_DIR/bucket.out" -w '%{http_code}' -X PUT "http://127.0.0.1:$S3_PORT/$S3_BKT" || true)
	[ "$code" = 200 ] || s3_failed "creating bucket $S3_BKT: HTTP $code $(head -c 300 "$S3_DIR/bucket.out")" s3-client.rgw.log
	s3_env > "$S3_DIR/env"
	s3_mark "bucket $S3_BKT ready"
	echo "s3: http://127.0.0.1:$S3_PORT bucket $S3_BKT ($S3_STORE) pids $(rl_pid s3-mon) $(rl_pid s3-osd) $(rl_pid s3-rgw)"
}

# s3_failed WHAT LOG: a start failed: say so with LOG's tail, stop what was started, exit 1
s3_failed() {
	echo "$RL_ME: start failed at $1 (log $RL_LOGS/$2):" >&2
	rl_log_tail "$RL_LOGS/$2" 8
	s3_stop > /dev/null 2>&1
	exit 1
}

# stopping radosgw and the OSD together makes radosgw hang for 10 s: one at a time, rgw first
s3_stop() {
	local n pid
	for n in s3-rgw s3-osd s3-mon; do
		pid=$(rl_pid "$n")
		rl_alive "$n" || pid=
		rl_stop "$n" 10
		[ -z "$pid" ] || echo "$n: stopped (pid $pid)"
	done
}

# the S3 endpoint down and up again, the objects kept (outage tests)
s3_rgw_stop() {
	rl_stop s3-rgw 10
	echo "s3-rgw: stopped"
}

s3_rgw_start() {
	rl_alive s3-mon && rl_alive s3-osd || { echo "$RL_ME: the cluster is not running: s3.sh start" >&2; exit 1; }
	if ! rl_alive s3-rgw; then
		rl_spawn s3-rgw "$RL_LOGS/s3-rgw.out" radosgw -c "$S3_CONF" -n client.rgw -f
	fi
	s3_wait 120 "S3 answers on 127.0.0.1:$S3_PORT" s3-rgw s3_rgw_answers || exit 1
	echo "s3-rgw: running (pid $(rl_pid s3-rgw))"
}

s3_status() {
	local n rc=0 code
	for n in s3-mon s3-osd s3-rgw; do
		if rl_alive "$n"; then echo "$n: running (pid $(rl_pid "$n"))"; else echo "$n: stopped"; rc=1; fi
	done
	code=$(s3_curl -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/$S3_BKT?list-type=2&max-keys=1" 2> /dev/null || true)
	echo "s3: http://127.0.0.1:$S3_PORT/$S3_BKT answers ${code:-nothing}"
	[ "$code" = 200 ] || rc=1
	return $rc
}

s3_env() {
	printf 'S3_ENDPOINT=http://127.0.0.1:%s\nS3_REGION=us-east-1\nS3_BUCKET=%q\nS3_ACCESS_KEY=%q\nS3_SECRET_KEY=%q\n' \
		"$S3_PORT" "$S3_BKT" "$S3_ACCESS" "$S3_SECRET"
}

case ${1:-status} in
	start) s3_start ;;
	stop) s3_stop ;;
	status) s3_status ;;
	env) s3_env ;;
	rgw-stop) s3_rgw_stop ;;
	rgw-start) s3_rgw_start ;;
	*)
		echo "usage: $RL_ME start|stop|status|env|rgw-stop|rgw-start" >&2
		exit 2 ;;
esac
