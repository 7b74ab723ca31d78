#!/usr/bin/env bash
# bench/load.sh: throughput of Caddy + oauth2_jwt against plain Caddy and
# against a go-jose floor handler, through real Caddy processes on
# 127.0.0.1 driven by wrk.
#
# Servers (all answer `respond "ok"` behind the handler named):
#   A  plain Caddy (bench/plaincaddy: standard modules only)
#   B  Caddy + oauth2_jwt, default cache (cache_size 10000)
#   C  Caddy + oauth2_jwt, cache off (cache_size 0)
#   D  Caddy + gojose_floor (bench/floor): go-jose jwt.ParseSigned, Claims
#      with the key, ValidateWithLeeway; no cache
# Workloads (WORKLOAD, a space- or comma-separated list, default all):
#   hit          A B    one valid token reused: every request a cache hit
#   uncached     A C D  every request a new token (UNCACHED_TOKENS distinct
#                       tokens rotated, 50000), cache_size 0, vs the floor
#   tokensN      A B    N distinct valid tokens rotated (bench/tokens.lua),
#                       default cache_size 10000; e.g. tokens1000, tokens50000
#   all          hit uncached tokens1000 tokens50000
# Tokens are signed with a key made for the run (ALG, RS256) and carry a
# realistic ~600-byte payload; servers read the public key from a file.
#
# Each workload runs ROUNDS rounds; a round measures its servers one after
# the other (A B ... A B ...), each in a fresh Caddy process (only one runs
# at a time): start, unmeasured warm-up, one measured wrk run, stop.
# During the measured run the script reads the CPU time of the whole
# machine (/proc/stat), of the Caddy process and of wrk: what remains is
# other processes' CPU. A measurement where others used more than
# OTHER_CPU_MAX percent of one CPU is disturbed: it is repeated (up to
# RETRIES times, RETRY_PAUSE seconds apart), and if it is still disturbed
# the whole round is discarded from the medians and ratios (the output says
# which). Any non-2xx response or socket error fails the script.
#
# Prints per measurement requests/s, other processes' CPU, steal, peak RSS
# and (module servers) the token cache's hits and misses; then per workload
# the medians, each round's paired ratio to A (and C/D) and the median of
# those ratios; then a summary in the shape of issue 14's table.
#
# Environment: WORKLOAD (all), ROUNDS (5), DURATION (10s), WARMUP (2s),
# CONNS (32), THREADS (2), ALG (RS256), UNCACHED_TOKENS (50000),
# OTHER_CPU_MAX (5, percent of one CPU), RETRIES (3), RETRY_PAUSE (5),
# FRESH_TOKENS (0: tokens are reused from $BIN_DIR for 3 hours).
source "$(dirname "$0")/lib.sh"

WORKLOAD=${WORKLOAD:-all}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
ALG=${ALG:-RS256}
UNCACHED_TOKENS=${UNCACHED_TOKENS:-50000}
OTHER_CPU_MAX=${OTHER_CPU_MAX:-5}
RETRIES=${RETRIES:-3}
RETRY_PAUSE=${RETRY_PAUSE:-5}
FRESH_TOKENS=${FRESH_TOKENS:-0}
CACHE_SIZE=10000 # oauth2_jwt's default cache_size

# ---- workloads -----------------------------------------------------------

WORKLOADS=()
for w in ${WORKLOAD//,/ }; do
	case $w in
	all) WORKLOADS+=(hit uncached tokens1000 tokens50000) ;;
	hit | uncached) WORKLOADS+=("$w") ;;
	*)
		[[ $w =~ ^tokens[1-9][0-9]*$ ]] || die "unknown workload $w (hit, uncached, tokensN, all)"
		WORKLOADS+=("$w")
		;;
	esac
done
((${#WORKLOADS[@]} > 0)) || die "WORKLOAD is empty"

# servers_of W: the servers workload W measures, in round order.
servers_of() {
	case $1 in
	hit | tokens*) echo A B ;;
	uncached) echo A C D ;;
	esac
}

# tokens_of W: how many distinct tokens workload W rotates (1: one token
# sent with wrk -H, no Lua).
tokens_of() {
	case $1 in
	hit) echo 1 ;;
	uncached) echo "$UNCACHED_TOKENS" ;;
	tokens*) echo "${1#tokens}" ;;
	esac
}

describe() {
	case $1 in
	hit) echo "one token reused (cache hit)" ;;
	uncached) echo "every request a new token ($UNCACHED_TOKENS rotating), cache_size 0, $ALG" ;;
	tokens*) echo "${1#tokens} distinct tokens rotating, cache_size $CACHE_SIZE" ;;
	esac
}

declare -A NAME=(
	[A]="plain Caddy"
	[B]="Caddy + oauth2_jwt, cache_size $CACHE_SIZE"
	[C]="Caddy + oauth2_jwt, cache_size 0"
	[D]="Caddy + gojose_floor (go-jose, no cache)"
)

# ---- binaries, keys, tokens ------------------------------------------------

need_wrk
build plain ./bench/plaincaddy
build module ./cmd/caddy
build floor ./bench/floor
build tokens ./bench/tokens

MAX_TOKENS=1
for w in "${WORKLOADS[@]}"; do
	n=$(tokens_of "$w")
	if ((n > MAX_TOKENS)); then MAX_TOKENS=$n; fi
done

# Tokens live 6 hours and are reused by later runs for 3 (RS256 signing is
# slow: 50,000 tokens take a minute or two on two cores). The key is made
# for the purpose and thrown away with them.
TOKEN_DIR=$BIN_DIR/tokens-$ALG
reuse_tokens() {
	[[ $FRESH_TOKENS == 0 && -s $TOKEN_DIR/tokens.txt && -s $TOKEN_DIR/jwks.json ]] || return 1
	local age=$(($(date +%s) - $(stat -c %Y "$TOKEN_DIR/tokens.txt")))
	((age < 3 * 3600)) || return 1
	(($(wc -l <"$TOKEN_DIR/tokens.txt") >= MAX_TOKENS))
}
if reuse_tokens; then
	log "reusing $(wc -l <"$TOKEN_DIR/tokens.txt") $ALG tokens from $TOKEN_DIR"
else
	log "minting $MAX_TOKENS $ALG tokens with a fresh key"
	mkdir -p "$TOKEN_DIR"
	new=$(mktemp -d "$TOKEN_DIR/new.XXXXXX")
	"$BIN_DIR/tokens" -genkey "$ALG" -key "$new/key.jwk" -jwks "$new/jwks.json" \
		-n "$MAX_TOKENS" -ttl 6h -out "$new/tokens.txt"
	mv -f "$new/key.jwk" "$new/jwks.json" "$TOKEN_DIR/"
	mv -f "$new/tokens.txt" "$TOKEN_DIR/tokens.txt"
	rmdir "$new"
fi
cp "$TOKEN_DIR/jwks.json" "$WORK/jwks.json"
TOKEN=$(head -n 1 "$TOKEN_DIR/tokens.txt")
declare -A TOKEN_FILE
for w in "${WORKLOADS[@]}"; do
	n=$(tokens_of "$w")
	if ((n > 1)) && [[ -z ${TOKEN_FILE[$n]:-} ]]; then
		TOKEN_FILE[$n]=$WORK/tokens-$n.txt
		head -n "$n" "$TOKEN_DIR/tokens.txt" >"${TOKEN_FILE[$n]}"
	fi
done

# ---- servers ---------------------------------------------------------------

declare -A BIN CONF PORT ADMIN
BIN=([A]=$BIN_DIR/plain [B]=$BIN_DIR/module [C]=$BIN_DIR/module [D]=$BIN_DIR/floor)
for s in A B C D; do
	PORT[$s]=$(free_port)
	ADMIN[$s]=$(free_port)
	CONF[$s]=$WORK/$s.caddyfile
	{
		# The admin API serves the module's metrics (cache hits and
		# misses); it is on for every server so that they differ only by
		# their handler.
		printf '{\n\tadmin 127.0.0.1:%s\n\tpersist_config off\n\tauto_https off\n}\n' "${ADMIN[$s]}"
		case $s in
		A) plain_site "${PORT[A]}" ;;
		B) module_site "${PORT[B]}" "$CACHE_SIZE" "$WORK/jwks.json" "$ALG" ;;
		C) module_site "${PORT[C]}" 0 "$WORK/jwks.json" "$ALG" ;;
		D) floor_site "${PORT[D]}" "$WORK/jwks.json" "$ALG" ;;
		esac
	} >"${CONF[$s]}"
done

machine_info
echo "wrk -t$THREADS -c$CONNS -d$DURATION (warm-up $WARMUP), $ROUNDS rounds per workload, $ALG tokens"
echo "disturbed: other processes above $OTHER_CPU_MAX% of one CPU (repeated up to $RETRIES times)"
for s in A B C D; do echo "  $s = ${NAME[$s]}"; done

# Sanity check: with the token every server answers 200, without it the
# module and the floor refuse (4xx), so we measure the success path.
needed=" "
for w in "${WORKLOADS[@]}"; do needed+="$(servers_of "$w") "; done
for s in A B C D; do
	[[ $needed == *" $s "* ]] || continue
	start_caddy "${BIN[$s]}" "${CONF[$s]}" "${PORT[$s]}"
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${PORT[$s]}/")
	[[ $code == 200 ]] || die "$s answered $code with a valid token (log: $WORK/$s.caddyfile.log)"
	if [[ $s != A ]]; then
		code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$s]}/")
		[[ $code == 4* ]] || die "$s answered $code without a token"
		# Another canonical last character: a different signature.
		if [[ $TOKEN == *A ]]; then broken=${TOKEN%?}Q; else broken=${TOKEN%?}A; fi
		code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $broken" "http://127.0.0.1:${PORT[$s]}/")
		[[ $code == 4* ]] || die "$s answered $code to a token with a broken signature"
	fi
	stop_caddy "$CADDY_PID"
done

# ---- one measurement -------------------------------------------------------

# wrk_args W PORT: wrk's arguments for workload W against PORT.
wrk_args() {
	local n
	n=$(tokens_of "$1")
	WRK_ARGS=(-t"$THREADS" -c"$CONNS")
	if ((n == 1)); then
		WRK_ARGS+=(-H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$2/")
	else
		WRK_ARGS+=(-s "$BENCH_DIR/tokens.lua" "http://127.0.0.1:$2/" -- "${TOKEN_FILE[$n]}" "$THREADS")
	fi
}

# check_wrk FILE WHAT: fails on wrk errors, non-2xx answers or socket errors.
check_wrk() {
	if grep -qE 'Non-2xx|Socket errors' "$1" || ! grep -q '^Requests/sec:' "$1"; then
		cat "$1" >&2
		die "wrk saw failed requests ($2)"
	fi
}

# scrape ADMIN_PORT: sets HITS, MISSES, OKS (requests the module accepted)
# and EVICTED from the module's metrics (0 for servers without it).
scrape() {
	local out
	out=$(curl -s "http://127.0.0.1:$1/metrics") || die "no metrics on admin port $1"
	read -r HITS MISSES OKS EVICTED < <(awk '
		/^caddy_oauth2_jwt_token_cache_requests_total\{.*result="hit"/ { h += $NF }
		/^caddy_oauth2_jwt_token_cache_requests_total\{.*result="miss"/ { m += $NF }
		/^caddy_oauth2_jwt_requests_total\{.*outcome="ok"/ { o += $NF }
		/^caddy_oauth2_jwt_token_cache_evictions_total/ { e += $NF }
		END { printf "%.0f %.0f %.0f %.0f\n", h, m, o, e }' <<<"$out")
}

# measure W S: one measurement of server S under workload W, in the main
# shell (the CPU accounting reads this shell's children's times). Sets
# M_RPS, M_REQS, M_OTHER and M_STEAL (percent of one CPU), M_RSS (peak
# KiB), M_HITS, M_MISSES, M_OKS (during the measured run), M_LIFE_MISSES,
# M_EVICTED (since the process started).
measure() {
	local w=$1 s=$2 n pid out=$WORK/wrk-$1-$2.out
	n=$(tokens_of "$w")
	wrk_args "$w" "${PORT[$s]}"
	start_caddy "${BIN[$s]}" "${CONF[$s]}" "${PORT[$s]}"
	pid=$CADDY_PID

	timeout 300 wrk -d"$WARMUP" "${WRK_ARGS[@]}" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed (warm-up $w $s)"; }
	check_wrk "$out" "warm-up $w $s"
	scrape "${ADMIN[$s]}"
	# With a cache and many tokens, warm up until the cache holds all the
	# tokens or is full, so the measurement sees the steady state.
	if [[ $s == B ]] && ((n > 1)); then
		local k=0 fill=$((n < CACHE_SIZE ? n : CACHE_SIZE))
		while ((MISSES < fill && k < 20)); do
			timeout 300 wrk -d"$WARMUP" "${WRK_ARGS[@]}" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed (warm-up $w $s)"; }
			check_wrk "$out" "warm-up $w $s"
			scrape "${ADMIN[$s]}"
			k=$((k + 1))
		done
	fi
	local h0=$HITS m0=$MISSES o0=$OKS

	local b0 st0 c0 k0 t0 b1 st1 c1 k1 t1 rc=0
	sample_system
	b0=$SYS_BUSY st0=$SYS_STEAL
	proc_ticks "$pid"
	c0=$PROC_TICKS
	proc_ticks $$
	k0=$CHILD_TICKS
	t0=$EPOCHREALTIME
	timeout 300 wrk -d"$DURATION" --latency "${WRK_ARGS[@]}" >"$out" 2>&1 &
	wait $! || rc=$?
	t1=$EPOCHREALTIME
	sample_system
	b1=$SYS_BUSY st1=$SYS_STEAL
	proc_ticks "$pid"
	c1=$PROC_TICKS
	proc_ticks $$
	k1=$CHILD_TICKS

	M_RSS=$(peak_rss_kib "$pid")
	scrape "${ADMIN[$s]}"
	stop_caddy "$pid"
	((rc == 0)) || { cat "$out" >&2; die "wrk failed with status $rc ($w $s)"; }
	check_wrk "$out" "$w $s"

	M_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
	M_REQS=$(awk '/requests in/ { print $1 }' "$out")
	M_HITS=$((HITS - h0)) M_MISSES=$((MISSES - m0)) M_OKS=$((OKS - o0))
	M_LIFE_MISSES=$MISSES M_EVICTED=$EVICTED
	read -r M_OTHER M_STEAL < <(awk -v busy=$((b1 - b0)) -v caddy=$((c1 - c0)) -v wrk=$((k1 - k0)) \
		-v steal=$((st1 - st0)) -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN {
		cpu = (t1 - t0) * hz / 100 # ticks of one CPU per percent
		printf "%.1f %.1f\n", (busy - caddy - wrk) / cpu, steal / cpu
	}')
	M_CADDY_CPU=$(awk -v c=$((c1 - c0)) -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", c * 100 / ((t1 - t0) * hz) }')
	M_WRK_CPU=$(awk -v c=$((k1 - k0)) -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", c * 100 / ((t1 - t0) * hz) }')
}

# ---- rounds ----------------------------------------------------------------

declare -A RPS OTHER RSS HIT_SHARE DISCARDED
T_START=$(date +%s)
for w in "${WORKLOADS[@]}"; do
	read -r -a servers <<<"$(servers_of "$w")"
	echo
	echo "== $w: $(describe "$w"); servers ${servers[*]}"
	for r in $(seq "$ROUNDS"); do
		for s in "${servers[@]}"; do
			for attempt in $(seq $((RETRIES + 1))); do
				measure "$w" "$s"
				extra=""
				if [[ $s == B || $s == C ]]; then
					extra=$(printf '  module ok %d (wrk %d)' "$M_OKS" "$M_REQS")
				fi
				if [[ $s == B ]]; then
					share=$(awk -v h="$M_HITS" -v m="$M_MISSES" 'BEGIN { if (h + m) printf "%.1f", 100 * h / (h + m); else print "nan" }')
					extra+=$(printf '  cache %d hits %d misses (%s%% hits), %d misses %d evictions since start' \
						"$M_HITS" "$M_MISSES" "$share" "$M_LIFE_MISSES" "$M_EVICTED")
				fi
				printf 'round %d  %s  %9.0f req/s  other %5.1f%% steal %4.1f%%  (caddy %3d%% wrk %3d%%)  peak RSS %6.1f MiB%s' \
					"$r" "$s" "$M_RPS" "$M_OTHER" "$M_STEAL" "$M_CADDY_CPU" "$M_WRK_CPU" \
					"$(awk -v k="$M_RSS" 'BEGIN { print k / 1024 }')" "$extra"
				if awk -v o="$M_OTHER" -v max="$OTHER_CPU_MAX" 'BEGIN { exit !(o <= max) }'; then
					echo
					break
				fi
				if ((attempt <= RETRIES)); then
					printf '  DISTURBED (other > %s%%): repeating (%d of %d)\n' "$OTHER_CPU_MAX" "$attempt" "$RETRIES"
					sleep "$RETRY_PAUSE"
				else
					printf '  DISTURBED after %d repeats: round %d discarded\n' "$RETRIES" "$r"
					DISCARDED[$w,$r]=1
				fi
			done
			RPS[$w,$r,$s]=$M_RPS
			OTHER[$w,$r,$s]=$M_OTHER
			RSS[$w,$r,$s]=$M_RSS
			if [[ $s == B ]]; then HIT_SHARE[$w,$r]=$share; fi
		done
	done
done

# ---- results ---------------------------------------------------------------

# values W S KIND ROUNDS...: the KIND (RPS, RSS, HIT_SHARE) values of
# server S in the given rounds, one per line.
values() {
	local w=$1 s=$2 kind=$3 r
	shift 3
	for r in "$@"; do
		case $kind in
		RPS) echo "${RPS[$w,$r,$s]}" ;;
		RSS) echo "${RSS[$w,$r,$s]}" ;;
		HIT_SHARE) echo "${HIT_SHARE[$w,$r]}" ;;
		esac
	done
}

# ratios W X Y ROUNDS...: each round's X/Y requests/s, one per line.
ratios() {
	local w=$1 x=$2 y=$3 r
	shift 3
	for r in "$@"; do
		awk -v a="${RPS[$w,$r,$x]}" -v b="${RPS[$w,$r,$y]}" 'BEGIN { printf "%.3f\n", a / b }'
	done
}

declare -A RESULT
echo
echo "== results (medians over the rounds kept; paired ratio = median of each round's ratio)"
for w in "${WORKLOADS[@]}"; do
	read -r -a servers <<<"$(servers_of "$w")"
	kept=()
	dropped=()
	for r in $(seq "$ROUNDS"); do
		if [[ -n ${DISCARDED[$w,$r]:-} ]]; then dropped+=("$r"); else kept+=("$r"); fi
	done
	echo
	echo "-- $w: $(describe "$w")"
	if ((${#kept[@]} == 0)); then
		echo "WARNING: every round was disturbed; the figures below include disturbed rounds"
		kept=("${dropped[@]}")
	elif ((${#dropped[@]} > 0)); then
		echo "discarded rounds (disturbed): ${dropped[*]}"
	fi
	echo "rounds kept: ${kept[*]}"
	RESULT[$w,kept]="${#kept[@]} of $ROUNDS rounds kept"
	if ((${#dropped[@]} == ROUNDS)); then RESULT[$w,kept]="0 of $ROUNDS rounds clean: DISTURBED"; fi
	for s in "${servers[@]}"; do
		med=$(values "$w" "$s" RPS "${kept[@]}" | median)
		rss=$(values "$w" "$s" RSS "${kept[@]}" | median)
		printf 'median %s  %9.0f req/s  peak RSS %6.1f MiB   %s   rounds: %s\n' "$s" "$med" \
			"$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "${NAME[$s]}" "$(values "$w" "$s" RPS "${kept[@]}" | awk '{ printf "%.0f ", $1 }')"
		RESULT[$w,med,$s]=$med
		RESULT[$w,rss,$s]=$rss
	done
	pairs=()
	for s in "${servers[@]}"; do
		if [[ $s != A ]]; then pairs+=("$s/A"); fi
	done
	if [[ $w == uncached ]]; then pairs+=("C/D"); fi
	for p in "${pairs[@]}"; do
		x=${p%/*} y=${p#*/}
		per=$(ratios "$w" "$x" "$y" "${kept[@]}")
		med=$(median <<<"$per")
		printf 'paired ratio %s  %.3f   (rounds: %s; ratio of medians %.3f)\n' "$p" "$med" "$(tr '\n' ' ' <<<"$per")" \
			"$(awk -v a="${RESULT[$w,med,$x]}" -v b="${RESULT[$w,med,$y]}" 'BEGIN { print a / b }')"
		RESULT[$w,ratio,$p]=$med
	done
	if [[ " ${servers[*]} " == *" B "* ]]; then
		share=$(values "$w" B HIT_SHARE "${kept[@]}" | median)
		printf 'B: cache hit share %s%%, peak RSS %+.1f MiB over plain Caddy\n' "$share" \
			"$(awk -v b="${RESULT[$w,rss,B]}" -v a="${RESULT[$w,rss,A]}" 'BEGIN { print (b - a) / 1024 }')"
		RESULT[$w,share]=$share
	fi
done

echo
echo "== summary (issue 14's table)"
for w in "${WORKLOADS[@]}"; do
	case $w in
	hit) printf '%-52s %.3fx plain (target >= 0.96x)' "one token reused (cache hit)" "${RESULT[$w,ratio,B/A]}" ;;
	uncached)
		printf '%-52s %.3fx plain; the go-jose floor %.3fx plain; module/floor %.3fx (target >= 1.25x)' \
			"every request a new token (cache_size 0, $ALG)" "${RESULT[$w,ratio,C/A]}" "${RESULT[$w,ratio,D/A]}" "${RESULT[$w,ratio,C/D]}"
		;;
	tokens*)
		printf '%-52s %.3fx plain; cache hit share %s%%; peak RSS %+.1f MiB over plain' \
			"$(printf "%'d" "${w#tokens}") distinct tokens (cache_size $CACHE_SIZE)" "${RESULT[$w,ratio,B/A]}" "${RESULT[$w,share]}" \
			"$(awk -v b="${RESULT[$w,rss,B]}" -v a="${RESULT[$w,rss,A]}" 'BEGIN { print (b - a) / 1024 }')"
		;;
	esac
	echo "   [${RESULT[$w,kept]}]"
done
echo "measured in $(($(date +%s) - T_START))s"
machine_info
