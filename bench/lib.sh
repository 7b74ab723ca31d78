# bench/lib.sh: helpers shared by the bench scripts (sourced, not run).
#
# Everything runs on 127.0.0.1 with ports picked at random among free ones;
# Caddy's config/data directories point into a temporary directory so the
# scripts leave nothing behind in $HOME.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
# Binaries are kept between runs (go build is incremental); override with BIN_DIR.
BIN_DIR=${BIN_DIR:-${TMPDIR:-/tmp}/caddy-oauth2-jwt-bench}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oauth2jwt-bench.XXXXXX")
export XDG_CONFIG_HOME="$WORK/xdg-config" XDG_DATA_HOME="$WORK/xdg-data"

PIDS=()

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n ${KEEP_WORK:-} ]]; then
		log "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_wrk() {
	if ! command -v wrk >/dev/null 2>&1; then
		log "installing wrk from Debian"
		apt-get update -qq && apt-get install -y -qq wrk >/dev/null
	fi
}

# build NAME PACKAGE: builds $BIN_DIR/NAME from PACKAGE (relative to the repo).
build() {
	mkdir -p "$BIN_DIR"
	log "building $1 ($2)"
	(cd "$REPO_DIR" && go build -o "$BIN_DIR/$1" "$2")
}

# free_port: prints a TCP port that nothing listens on at the moment.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 30000))
		if ! ss -Hltn "sport = :$p" | grep -q .; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

# wait_port PORT PID: waits until 127.0.0.1:PORT accepts connections.
wait_port() {
	for _ in $(seq 300); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return
		fi
		kill -0 "$2" 2>/dev/null || die "process $2 exited before listening on $1"
		sleep 0.1
	done
	die "nothing listens on 127.0.0.1:$1"
}

# start_caddy BINARY CADDYFILE PORT: runs Caddy in the background and waits
# for PORT; the pid is left in CADDY_PID and killed on exit.
start_caddy() {
	local log_file="$WORK/$(basename "$2").log"
	"$1" run --config "$2" --adapter caddyfile >"$log_file" 2>&1 &
	CADDY_PID=$!
	PIDS+=("$CADDY_PID")
	wait_port "$3" "$CADDY_PID"
}

# stop_caddy PID
stop_caddy() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# mint_token: a valid ES256 token for the demo key (issuer
# http://127.0.0.1:9081, audience demo-api), valid for TOKEN_TTL (2h).
mint_token() {
	(cd "$REPO_DIR" && "$BIN_DIR/demo-token" -ttl "${TOKEN_TTL:-2h}" -sub bench-user)
}

# median: median of the numbers on stdin.
median() {
	sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "nan"; exit }
		if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2
	}'
}

# module_site PORT CACHE_SIZE JWKS_FILE: a site block protected by oauth2_jwt
# with the demo provider and keys from a file (no IdP needed).
module_site() {
	cat <<EOF
http://127.0.0.1:$1 {
	bind 127.0.0.1
	oauth2_jwt {
		provider demo {
			issuer http://127.0.0.1:9081
			audience demo-api
			jwks_file $3
			algorithms ES256
		}
		cache_size $2
	}
	respond "ok"
}
EOF
}

machine_info() {
	printf 'machine: %s CPUs, %s; load average %s\n' "$(nproc)" \
		"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
		"$(cut -d' ' -f1-3 /proc/loadavg)"
}
