#!/usr/bin/env bash
# Start and stop the real S3 servers the integration tests run against.
#
#   scripts/s3-servers.sh build           build (or reuse) the cached server binaries
#   scripts/s3-servers.sh start ENVFILE   build if needed, start both servers, write exports to ENVFILE
#   scripts/s3-servers.sh stop ENVFILE    stop the servers started for ENVFILE, remove their data
#
# ENVFILE is a shell file of `export VAR=value` lines; `source` it before
# `go test`. The servers listen on 127.0.0.1 on random free ports and keep
# their data in a temporary directory that stop removes.
#
# Binaries are cached under ${VIGIL_TOOL_CACHE:-$HOME/.cache/vigil-tools}/NAME-VERSION/
# so a rerun on the same machine does not rebuild them; a fresh machine builds
# them from the Go module proxy (MinIO takes a few minutes on 2 cores).
# MinIO is AGPL: it only ever runs as a separate test server, never imported.
set -euo pipefail

MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
VERSITYGW_PKG=github.com/versity/versitygw/cmd/versitygw
VERSITYGW_VERSION=v1.8.0

CACHE=${VIGIL_TOOL_CACHE:-${HOME:?set HOME or VIGIL_TOOL_CACHE}/.cache/vigil-tools}
MINIO_BIN=$CACHE/minio-$MINIO_VERSION/minio
VERSITYGW_BIN=$CACHE/versitygw-$VERSITYGW_VERSION/versitygw
# How long a server may take to answer after it was started.
START_TIMEOUT=${VIGIL_S3_START_TIMEOUT:-60}

log() { echo "s3-servers: $*" >&2; }
die() {
	log "$*"
	exit 1
}

# install_tool PKG@VERSION BIN: go install into BIN's folder unless BIN exists.
install_tool() {
	local pkg=$1 bin=$2 dir tmp
	dir=$(dirname "$bin")
	if [[ -x $bin ]]; then
		log "using cached $bin"
		return 0
	fi
	mkdir -p "$dir"
	# Install into a scratch folder first so an interrupted build never leaves
	# a half-written binary that a later run would trust.
	tmp=$(mktemp -d "$dir/.build-XXXXXX")
	log "building $pkg (cached afterwards in $dir)"
	# GOFLAGS is set explicitly: a -mod=vendor or similar from the caller's
	# environment would break `go install pkg@version` outside any module.
	# CGO is off so the binaries do not depend on the C toolchain.
	if ! GOBIN=$tmp GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install "$pkg"; then
		rm -rf "$tmp"
		die "go install $pkg failed"
	fi
	mv "$tmp/$(basename "$bin")" "$bin"
	rm -rf "$tmp"
}

build() {
	command -v go >/dev/null || die "go is not on PATH"
	# Build both at once: each is mostly waiting on the linker or the proxy.
	install_tool "$MINIO_MODULE@$MINIO_VERSION" "$MINIO_BIN" &
	local p1=$!
	install_tool "$VERSITYGW_PKG@$VERSITYGW_VERSION" "$VERSITYGW_BIN" &
	local p2=$!
	local rc=0
	wait "$p1" || rc=1
	wait "$p2" || rc=1
	((rc == 0)) || die "build failed"
}

# port_in_use PORT: true when something listens on 127.0.0.1:PORT.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port: a random port nobody listens on. The server may still lose a race
# for it; start_server retries with another port when that happens.
free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 40000))
		if ! port_in_use "$p"; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

# answers URL: true once the server returns any HTTP status (403 counts: an
# anonymous request being refused means the S3 API is up).
answers() {
	local code
	code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null) || true
	[[ -n $code && $code != 000 ]]
}

# start_server NAME: starts NAME on a free port; sets PORT and PID.
start_server() {
	local name=$1 attempt logf
	for attempt in 1 2 3; do
		PORT=$(free_port)
		logf=$STATE/$name.log
		case $name in
		minio)
			# MINIO_BROWSER=off: no console listener on a second random port.
			MINIO_ROOT_USER=$MINIO_KEY MINIO_ROOT_PASSWORD=$MINIO_SECRET MINIO_BROWSER=off \
				nohup "$MINIO_BIN" server --quiet --address "127.0.0.1:$PORT" "$STATE/minio-data" >"$logf" 2>&1 </dev/null &
			;;
		versitygw)
			nohup "$VERSITYGW_BIN" --port "127.0.0.1:$PORT" --access "$VGW_KEY" --secret "$VGW_SECRET" \
				posix "$STATE/versitygw-data" >"$logf" 2>&1 </dev/null &
			;;
		esac
		PID=$!
		echo "$PID" >"$STATE/$name.pid"
		local deadline=$((SECONDS + START_TIMEOUT))
		while ((SECONDS < deadline)); do
			if ! kill -0 "$PID" 2>/dev/null; then
				break # exited: port taken or bad setup; see the log below
			fi
			if answers "http://127.0.0.1:$PORT/"; then
				log "$name (pid $PID) answers on 127.0.0.1:$PORT"
				return 0
			fi
			sleep 0.2
		done
		log "$name did not come up on port $PORT (attempt $attempt); log:"
		tail -n 20 "$logf" >&2 || true
		stop_pid "$PID" "$name" || true
	done
	return 1
}

# stop_pid PID NAME: TERM, wait, then KILL; only if PID still runs our binary,
# so a stale pid file never kills an unrelated process that reused the pid.
# Returns 1 when there was nothing to stop.
stop_pid() {
	local pid=$1 name=$2
	[[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$name" || return 1
	kill "$pid" 2>/dev/null || return 1
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "$name (pid $pid) ignored TERM; killing"
	kill -9 "$pid" 2>/dev/null || true
}

random_secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

start() {
	local envfile=$1 old
	if [[ -r $envfile ]]; then
		old=$(sed -n 's/^export VIGIL_S3_SERVERS_STATE=//p' "$envfile")
		# Overwriting it would orphan the running servers.
		[[ -n $old && -d $old ]] && die "$envfile belongs to servers still running; run: $0 stop $envfile"
	fi
	build
	STATE=$(mktemp -d "${TMPDIR:-/tmp}/vigil-s3-XXXXXX")
	mkdir -p "$STATE/minio-data" "$STATE/versitygw-data"
	# Fresh credentials every run: nothing to leak, nothing to reuse by accident.
	local r
	r=$(random_secret)
	MINIO_KEY=vigil${r:0:8}
	MINIO_SECRET=$(random_secret)
	r=$(random_secret)
	VGW_KEY=vigil${r:0:8}
	VGW_SECRET=$(random_secret)
	# Written first so that `stop ENVFILE` can clean up even after a failed start.
	write_env "$envfile" ""
	if ! start_server minio; then
		stop "$envfile"
		die "minio failed to start"
	fi
	local minio_port=$PORT
	if ! start_server versitygw; then
		stop "$envfile"
		die "versitygw failed to start"
	fi
	local vgw_port=$PORT
	write_env "$envfile" "$(
		cat <<EOF
export VIGIL_TEST_MINIO_ENDPOINT=http://127.0.0.1:$minio_port
export VIGIL_TEST_MINIO_ACCESS_KEY=$MINIO_KEY
export VIGIL_TEST_MINIO_SECRET_KEY=$MINIO_SECRET
export VIGIL_TEST_MINIO_VERSION=$MINIO_VERSION
export VIGIL_TEST_VERSITYGW_ENDPOINT=http://127.0.0.1:$vgw_port
export VIGIL_TEST_VERSITYGW_ACCESS_KEY=$VGW_KEY
export VIGIL_TEST_VERSITYGW_SECRET_KEY=$VGW_SECRET
export VIGIL_TEST_VERSITYGW_VERSION=$VERSITYGW_VERSION
EOF
	)"
	log "wrote $envfile"
}

# write_env FILE BODY: the state line first, so stop always finds it.
write_env() {
	local f=$1
	umask 077
	{
		echo "# written by scripts/s3-servers.sh start; remove with: scripts/s3-servers.sh stop $f"
		echo "export VIGIL_S3_SERVERS_STATE=$STATE"
		[[ -z $2 ]] || echo "$2"
	} >"$f.tmp"
	mv "$f.tmp" "$f"
}

stop() {
	local envfile=$1 state
	[[ -r $envfile ]] || {
		log "no $envfile; nothing to stop"
		return 0
	}
	state=$(sed -n 's/^export VIGIL_S3_SERVERS_STATE=//p' "$envfile")
	# Refuse anything that is not a folder this script made.
	case $state in
	*/vigil-s3-*) ;;
	*) die "$envfile names no server state folder" ;;
	esac
	local name pid stoppers=()
	# Both at once: each takes a second or two to shut down cleanly.
	for name in minio versitygw; do
		if [[ -r $state/$name.pid ]]; then
			pid=$(<"$state/$name.pid")
			(if stop_pid "$pid" "$name"; then log "stopped $name"; fi) &
			stoppers+=($!)
		fi
	done
	# Wait for the stoppers only: from start, the servers are children too.
	for pid in "${stoppers[@]}"; do
		wait "$pid" || true
	done
	rm -rf "$state"
	rm -f "$envfile"
}

case ${1:-} in
build) build ;;
start)
	[[ $# -eq 2 ]] || die "usage: $0 start ENVFILE"
	start "$2"
	;;
stop)
	[[ $# -eq 2 ]] || die "usage: $0 stop ENVFILE"
	stop "$2"
	;;
*) die "usage: $0 build | start ENVFILE | stop ENVFILE" ;;
esac
