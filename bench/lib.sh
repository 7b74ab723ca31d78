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
		local sudo=
		if [[ $(id -u) != 0 ]]; then sudo=sudo; fi
		$sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null
	fi
}

# build NAME PACKAGE: builds $BIN_DIR/NAME from PACKAGE (relative to the repo).
build() {
	mkdir -p "$BIN_DIR"
	log "building $1 ($2)"
	(cd "$REPO_DIR" && go build -o "$BIN_DIR/$1" "$2")
}

# free_port: prints a TCP port that nothing listens on at the moment,
# below Linux's default ephemeral range (32768-60999): a port in that
# range may be taken by a client socket (wrk's connections, their
# TIME_WAIT) between this check and Caddy's bind.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((10000 + RANDOM % 22000))
		if ! ss -Hltn "sport = :$p" | grep -q .; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

# wait_port PORT PID [LOG]: waits until 127.0.0.1:PORT accepts
# connections; if the process exits first, shows the end of LOG.
wait_port() {
	for _ in $(seq 300); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return
		fi
		if ! kill -0 "$2" 2>/dev/null; then
			[[ -n ${3:-} && -s $3 ]] && tail -n 5 "$3" >&2
			die "process $2 exited before listening on $1"
		fi
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
	wait_port "$3" "$CADDY_PID" "$log_file"
}

# stop_caddy PID: stops it and forgets it, so that the exit trap never
# signals a pid the system has since given to another process (load.sh
# starts hundreds of Caddy processes in a run).
stop_caddy() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	local keep=() pid
	for pid in "${PIDS[@]}"; do
		if [[ $pid != "$1" ]]; then keep+=("$pid"); fi
	done
	PIDS=("${keep[@]}")
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

# module_site PORT CACHE_SIZE JWKS_FILE [ALGORITHMS]: a site block protected
# by oauth2_jwt with the demo provider (issuer http://127.0.0.1:9081,
# audience demo-api) and keys from a file (no IdP needed). ALGORITHMS
# defaults to ES256, the demo key's.
module_site() {
	cat <<EOF
http://127.0.0.1:$1 {
	bind 127.0.0.1
	oauth2_jwt {
		provider demo {
			issuer http://127.0.0.1:9081
			audience demo-api
			jwks_file $3
			algorithms ${4:-ES256}
		}
		cache_size $2
	}
	respond "ok"
}
EOF
}

# floor_site PORT JWKS_FILE ALGORITHMS: the same site block with the go-jose
# floor handler (bench/floor) in place of oauth2_jwt.
floor_site() {
	cat <<EOF
http://127.0.0.1:$1 {
	bind 127.0.0.1
	gojose_floor {
		issuer http://127.0.0.1:9081
		audience demo-api
		jwks_file $2
		algorithms $3
	}
	respond "ok"
}
EOF
}

# plain_site PORT: the same site block without authentication.
plain_site() {
	printf 'http://127.0.0.1:%s {\n\tbind 127.0.0.1\n\trespond "ok"\n}\n' "$1"
}

# CPU accounting from /proc, read with shell builtins only: no fork, so the
# sampling itself adds no process CPU time. Times are in clock ticks.
CLK_TCK=$(getconf CLK_TCK)

# sample_system: sets SYS_BUSY (user + nice + system + irq + softirq, all
# CPUs) and SYS_STEAL (time the hypervisor gave to other guests) from the
# first line of /proc/stat.
sample_system() {
	local _cpu user nice system _idle _iowait irq softirq steal _rest
	read -r _cpu user nice system _idle _iowait irq softirq steal _rest </proc/stat
	SYS_BUSY=$((user + nice + system + irq + softirq))
	SYS_STEAL=$steal
}

# proc_ticks PID: sets PROC_TICKS to the process's utime + stime (all its
# threads) and CHILD_TICKS to the cutime + cstime of its waited-for
# children (fields 14-17 of /proc/PID/stat; the "(comm)" field before them
# has no space for the processes sampled here: bash, caddy-like binaries).
proc_ticks() {
	local -a f
	read -r -a f <"/proc/$1/stat"
	PROC_TICKS=$((f[13] + f[14]))
	CHILD_TICKS=$((f[15] + f[16]))
}

# peak_rss_kib PID: prints the process's peak resident set (VmHWM) in KiB.
peak_rss_kib() {
	local key val _unit
	while read -r key val _unit; do
		if [[ $key == VmHWM: ]]; then
			echo "$val"
			return
		fi
	done <"/proc/$1/status"
	echo 0
}

machine_info() {
	printf 'machine: %s CPUs, %s; load average %s\n' "$(nproc)" \
		"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
		"$(cut -d' ' -f1-3 /proc/loadavg)"
}
