#!/usr/bin/env bash
# bench/memory.sh: resident memory of Caddy + oauth2_jwt under a stream of
# distinct valid tokens, to show that the verified-token cache plateaus at
# its bound (cache_size).
#
# For each cache size in CACHE_SIZES it starts a fresh Caddy + oauth2_jwt
# (keys from a jwks_file, so no IdP) and runs bench/memory, which mints
# distinct ES256 tokens with the demo key (own sub and jti each) and sends
# them over CONNS keep-alive connections, reading the Caddy process's VmRSS
# every EVERY requests. Prints each RSS curve, its plateau (median of the
# samples in the second half of the run) and, against the cache_size 0 run,
# the MiB per 10k cache entries.
#
# Environment:
#   TOKENS       tokens per run with a cache (1000000)
#   BASE_TOKENS  tokens for the cache_size 0 run (100000: with nothing
#                cached, memory is flat after a few thousand requests)
#   CACHE_SIZES  ("0 10000"; add 100000 for the second point, e.g.
#                CACHE_SIZES="0 10000 100000")
#   CONNS (64), EVERY (TOKENS/20)
# The client signs every token (ES256) and Caddy verifies it: both cost CPU,
# so the run takes TOKENS / (verifications per second) seconds per size.
source "$(dirname "$0")/lib.sh"

TOKENS=${TOKENS:-1000000}
BASE_TOKENS=${BASE_TOKENS:-100000}
CACHE_SIZES=${CACHE_SIZES:-0 10000}
CONNS=${CONNS:-64}

build module ./cmd/caddy
build memory ./bench/memory
cp "$REPO_DIR/demo/jwks.json" "$WORK/jwks.json"
machine_info

declare -A PLATEAU
for size in $CACHE_SIZES; do
	n=$TOKENS
	if [[ $size == 0 && $BASE_TOKENS -lt $TOKENS ]]; then n=$BASE_TOKENS; fi
	every=${EVERY:-$((n / 20))}
	port=$(free_port)
	admin=$(free_port)
	conf=$WORK/cache$size.caddyfile
	{
		printf '{\n\tadmin 127.0.0.1:%s\n\tpersist_config off\n\tauto_https off\n}\n' "$admin"
		module_site "$port" "$size" "$WORK/jwks.json"
	} >"$conf"
	start_caddy "$BIN_DIR/module" "$conf" "$port"
	echo
	echo "== cache_size $size: $n distinct tokens, $CONNS connections, Caddy pid $CADDY_PID"
	out=$(cd "$REPO_DIR" && "$BIN_DIR/memory" -url "http://127.0.0.1:$port/" -pid "$CADDY_PID" \
		-tokens "$n" -conns "$CONNS" -every "$every" -key demo/demo-private.jwk) ||
		{ echo "$out"; die "memory driver failed (cache_size $size)"; }
	grep -v '^PLATEAU_KIB' <<<"$out"
	PLATEAU[$size]=$(awk '/^PLATEAU_KIB/ { print $2 }' <<<"$out")
	printf 'plateau: %.1f MiB\n' "$(awk -v k="${PLATEAU[$size]}" 'BEGIN { print k / 1024 }')"
	# The module's own counters: misses, hits and evictions show the bound.
	curl -s "http://127.0.0.1:$admin/metrics" | grep -E '^caddy_oauth2_jwt_(token_cache|requests_total\{outcome="ok",provider="demo")' || true
	stop_caddy "$CADDY_PID"
done

echo
echo "== summary"
for size in $CACHE_SIZES; do
	printf 'cache_size %-7s plateau %7.1f MiB' "$size" "$(awk -v k="${PLATEAU[$size]}" 'BEGIN { print k / 1024 }')"
	if [[ $size != 0 && -n ${PLATEAU[0]:-} ]]; then
		awk -v k="${PLATEAU[$size]}" -v b="${PLATEAU[0]}" -v s="$size" 'BEGIN {
			d = (k - b) / 1024
			printf "   +%.1f MiB over cache_size 0 = %.2f MiB per 10k entries", d, d / (s / 10000)
		}'
	fi
	echo
done
machine_info
