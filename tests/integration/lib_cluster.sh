# shellcheck shell=bash disable=SC2034
# lib_cluster.sh: start a regslim cluster for an integration test (issue 13, docs/scale-out.md):
# N replicas on the lab's Ceph RGW (the s3 store driver, one bucket prefix shared by all) and the
# lab's Redis, each advertising its own URL and sharing one peer secret, behind the lab's haproxy
# (round robin, no stickiness). Source it after lib.sh, call lab_setup first.
#
#   cluster_start N UPSTREAM_URL [LOCK_TTL_S] [PREFIX]
#       s3.sh start, redis.sh start (both left running if they already are), the peer secret, one
#       configuration and one replica per index (regslim_spawn c1..cN on BASE+51..BASE+50+N, data
#       in $REGSLIM_LAB/cluster/cI), haproxy.sh start over them. Stops them all at exit. Sets
#       CLUSTER_N, CLUSTER_URL (haproxy), CLUSTER_SECRET (the peer secret), CLUSTER_PREFIX
#       (the bucket prefix, default "cl/"), CLUSTER_REDIS_DB (2), and the lab's S3_* and
#       REDIS_* variables (exported: S3TOOL_BIN reads them). Returns 1 with the reason on stderr.
#   cluster_port I           the port of replica I
#   cluster_log I            its log file
#   cluster_kill I           kill -9 replica I (the PID of its lab_spawn)
#   cluster_restart I        start replica I again with its configuration
#   cluster_metric I NAME [LABELS]  a metric of replica I (lib.sh's metric against that port)
#   cluster_peer_auth PATH   the X-Regslim-Peer-Auth value for GET PATH now (openssl, the secret
#                            from the file: what a replica sends)
#
# Ports: replicas BASE+51.., the lab's RGW BASE+20..39, Redis BASE+40, haproxy BASE+41.

CLUSTER_REDIS_DB=2

cluster_port() { echo $((LAB_PORT_BASE + 50 + $1)); }
cluster_log() { echo "$LOGS/regslim-c$1.log"; }

# cluster_conf I UPSTREAM_URL: replica I's configuration file (written once)
cluster_conf() {
	local i=$1 up=$2 f=$REGSLIM_LAB/cluster/c$1.json port
	port=$(cluster_port "$i")
	mkdir -p "$REGSLIM_LAB/cluster/c$i"
	cat > "$f" <<- EOF
		{"data_dir": "$REGSLIM_LAB/cluster/c$i",
		 "upstreams": [{"name": "docker.io", "url": "$up", "default": true, "timeout_s": 10}],
		 "store": {"driver": "s3", "s3": {"endpoint": "$S3_ENDPOINT", "region": "$S3_REGION", "bucket": "$S3_BUCKET",
		                                  "access_key_env": "S3_ACCESS_KEY", "secret_key_env": "S3_SECRET_KEY",
		                                  "prefix": "$CLUSTER_PREFIX"}},
		 "cluster": {"redis": "redis://127.0.0.1:$REDIS_PORT/$CLUSTER_REDIS_DB", "timeout_ms": 300,
		             "lock_ttl_s": $CLUSTER_LOCK_TTL, "peer_secret_file": "$REGSLIM_LAB/cluster/peer.key",
		             "advertise_url": "http://127.0.0.1:$port"}}
	EOF
	echo "$f"
}

cluster_spawn() {
	local i=$1
	regslim_spawn "c$i" "$(cluster_port "$i")" "" "$REGSLIM_LAB/cluster/c$i" --config "$REGSLIM_LAB/cluster/c$i.json"
}

cluster_start() {
	local n=$1 up=$2 i t ports=()
	CLUSTER_N=$n
	CLUSTER_LOCK_TTL=${3:-30}
	CLUSTER_PREFIX=${4:-cl/}
	mkdir -p "$REGSLIM_LAB/cluster"
	lab_on_exit "timeout 30 bash '$RS_LAB_DIR/haproxy.sh' stop"
	lab_on_exit "timeout 30 bash '$RS_LAB_DIR/redis.sh' stop"
	lab_on_exit "timeout 60 bash '$RS_LAB_DIR/s3.sh' stop"
	if ! timeout 300 bash "$RS_LAB_DIR/s3.sh" start > "$LOGS/s3-start.log" 2>&1; then
		echo "s3.sh start failed: $(tail -n 3 "$LOGS/s3-start.log" | tr '\n' ' ')" >&2
		return 1
	fi
	eval "$(bash "$RS_LAB_DIR/s3.sh" env)"
	export S3_ENDPOINT S3_REGION S3_BUCKET S3_ACCESS_KEY S3_SECRET_KEY
	if ! timeout 30 bash "$RS_LAB_DIR/redis.sh" start > "$LOGS/redis-start.log" 2>&1; then
		echo "redis.sh start failed: $(tail -n 3 "$LOGS/redis-start.log" | tr '\n' ' ')" >&2
		return 1
	fi
	eval "$(bash "$RS_LAB_DIR/redis.sh" env)"
	export REDIS_PORT REDIS_URL
	# 32 random hex characters, readable by the replicas only
	(umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$REGSLIM_LAB/cluster/peer.key")
	CLUSTER_SECRET=$(cat "$REGSLIM_LAB/cluster/peer.key")
	for ((i = 1; i <= n; i++)); do
		cluster_conf "$i" "$up" > /dev/null
		for t in 1 2; do # a second try: a start slowed past regslim_spawn's 20 s by a busy machine
			cluster_spawn "$i" 2> "$LOGS/spawn-c$i.err" && break
			[ "$t" = 2 ] && { echo "replica c$i did not start: $(head -n 3 "$LOGS/spawn-c$i.err" | tr '\n' ' ')" >&2; return 1; }
		done
		ports+=("$(cluster_port "$i")")
	done
	if ! timeout 30 bash "$RS_LAB_DIR/haproxy.sh" start "${ports[@]}" > "$LOGS/haproxy-start.log" 2>&1; then
		echo "haproxy.sh start failed: $(tail -n 3 "$LOGS/haproxy-start.log" | tr '\n' ' ')" >&2
		return 1
	fi
	eval "$(bash "$RS_LAB_DIR/haproxy.sh" env)"
	CLUSTER_URL=$HAPROXY_URL
	sleep 1.2 # every replica passed its first health check
}

cluster_kill() {
	# stderr: bash job notices ("Killed") of the reaped replica
	local pid j
	pid=$(lab_pid "regslim-c$1")
	[ -n "$pid" ] || return 1
	kill -KILL "$pid" 2> /dev/null
	for ((j = 0; j < 50; j++)); do
		lab_alive "regslim-c$1" || break
		sleep 0.1
	done
	wait "$pid" 2> /dev/null # reaped, no "Killed" notice
	rm -f "$REGSLIM_LAB/run/regslim-c$1.pid"
	! kill -0 "$pid" 2> /dev/null
} 2> /dev/null

cluster_restart() { cluster_spawn "$1"; }

cluster_metric() { RS_URL=http://127.0.0.1:$(cluster_port "$1") metric "$2" "${3:-}"; }

cluster_peer_auth() {
	local t mac
	t=$(date +%s)
	mac=$(printf 'GET\n%s\n%s' "$1" "$t" | openssl dgst -sha256 -hmac "$CLUSTER_SECRET" -r | cut -d' ' -f1)
	echo "$t $mac"
}
