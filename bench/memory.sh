#!/usr/bin/env bash
# bench/memory.sh: resident memory of Caddy + oauth2_jwt under token churn:
# what the verified-token cache costs per entry while it evicts, next to
# plain Caddy and to the module without a cache.
#
# TOKENS distinct valid tokens (bench/tokens: the realistic ~600-byte
# payload of load.sh and the Go benchmarks, ALG signatures) rotate at
# random through each server below; bench/memory sends REQUESTS of them
# over CONNS keep-alive connections and reads the Caddy process's VmRSS
# every REQUESTS/40 requests:
#
#   plain   plain Caddy (bench/plaincaddy), respond only: the baseline
#   0       Caddy + oauth2_jwt, cache_size 0: every request verifies
#   N       Caddy + oauth2_jwt, cache_size N (CACHE_SIZES, 10000 by
#           default): with 50,000 tokens and N = 10000 about one request
#           in five is a hit, the rest verify and evict
#
# Each run prints its RSS curve, the plateau (median of the samples of the
# second half), the peak (VmHWM) and the module's cache counters; the
# summary gives each server's plateau and peak over plain Caddy and, for
# each cache size, the KiB per entry: (plateau(N) - plateau(0)) / N, and
# the same for the peaks. The cache is full by the second half (a few
# times N misses fill it), so the plateau is the full cache while it
# evicts, with the garbage collector's headroom over it.
#
# Environment:
#   TOKENS       distinct tokens (50000)
#   REQUESTS     requests per server (300000)
#   CACHE_SIZES  cache sizes besides 0 ("10000"; e.g. "10000 50000")
#   ALG          signature algorithm of the tokens (RS256; ES256, PS256, EdDSA)
#   CONNS        connections (32)
#   FRESH_TOKENS 1 mints new tokens (default: reuse those load.sh or an
#                earlier run left in $BIN_DIR/tokens-$ALG for 3 hours)
# Every miss costs Caddy one verification, so a run takes REQUESTS divided
# by the verifications per second the machine manages, per server.
source "$(dirname "$0")/lib.sh"

TOKENS=${TOKENS:-50000}
REQUESTS=${REQUESTS:-300000}
CACHE_SIZES=${CACHE_SIZES:-10000}
ALG=${ALG:-RS256}
CONNS=${CONNS:-32}
FRESH_TOKENS=${FRESH_TOKENS:-0}

build plain ./bench/plaincaddy
build module ./cmd/caddy
build tokens ./bench/tokens
build memory ./bench/memory

# The same token store as load.sh: tokens live 6 hours, are reused for 3.
TOKEN_DIR=$BIN_DIR/tokens-$ALG
reuse_tokens() {
	[[ $FRESH_TOKENS == 0 && -s $TOKEN_DIR/tokens.txt && -s $TOKEN_DIR/jwks.json ]] || return 1
	local age=$(($(date +%s) - $(stat -c %Y "$TOKEN_DIR/tokens.txt")))
	((age < 3 * 3600)) || return 1
	(($(wc -l <"$TOKEN_DIR/tokens.txt") >= TOKENS))
}
if reuse_tokens; then
	log "reusing $ALG tokens from $TOKEN_DIR"
else
	log "minting $TOKENS $ALG tokens with a fresh key"
	mkdir -p "$TOKEN_DIR"
	new=$(mktemp -d "$TOKEN_DIR/new.XXXXXX")
	"$BIN_DIR/tokens" -genkey "$ALG" -key "$new/key.jwk" -jwks "$new/jwks.json" \
		-n "$TOKENS" -ttl 6h -out "$new/tokens.txt"
	mv -f "$new/key.jwk" "$new/jwks.json" "$TOKEN_DIR/"
	mv -f "$new/tokens.txt" "$TOKEN_DIR/tokens.txt"
	rmdir "$new"
fi
cp "$TOKEN_DIR/jwks.json" "$WORK/jwks.json"
head -n "$TOKENS" "$TOKEN_DIR/tokens.txt" >"$WORK/tokens.txt"
TOKEN_BYTES=$(awk '{ n += length($0) } END { printf "%d", n / NR }' "$WORK/tokens.txt")
machine_info
echo "$TOKENS distinct $ALG tokens of $TOKEN_BYTES bytes on average, $REQUESTS requests per server, $CONNS connections"

declare -A PLATEAU PEAK
for srv in plain 0 $CACHE_SIZES; do
	port=$(free_port)
	admin=$(free_port)
	conf=$WORK/server-$srv.caddyfile
	{
		printf '{\n\tadmin 127.0.0.1:%s\n\tpersist_config off\n\tauto_https off\n}\n' "$admin"
		if [[ $srv == plain ]]; then
			plain_site "$port"
		else
			module_site "$port" "$srv" "$WORK/jwks.json" "$ALG"
		fi
	} >"$conf"
	bin=$BIN_DIR/module
	if [[ $srv == plain ]]; then bin=$BIN_DIR/plain; fi
	start_caddy "$bin" "$conf" "$port"
	echo
	if [[ $srv == plain ]]; then
		echo "== plain Caddy, pid $CADDY_PID"
	else
		echo "== Caddy + oauth2_jwt, cache_size $srv, pid $CADDY_PID"
	fi
	out=$("$BIN_DIR/memory" -url "http://127.0.0.1:$port/" -pid "$CADDY_PID" \
		-tokens "$WORK/tokens.txt" -requests "$REQUESTS" -conns "$CONNS") ||
		{ echo "$out"; die "memory driver failed (server $srv)"; }
	grep -vE '^(PLATEAU|PEAK)_KIB' <<<"$out"
	PLATEAU[$srv]=$(awk '/^PLATEAU_KIB/ { print $2 }' <<<"$out")
	PEAK[$srv]=$(awk '/^PEAK_KIB/ { print $2 }' <<<"$out")
	if [[ $srv != plain ]]; then
		# The module's own counters: hits, misses and evictions.
		curl -s "http://127.0.0.1:$admin/metrics" | grep -E '^caddy_oauth2_jwt_token_cache' || true
	fi
	stop_caddy "$CADDY_PID"
done

echo
echo "== summary ($TOKENS distinct $ALG tokens of $TOKEN_BYTES bytes, $REQUESTS requests each)"
printf '%-22s %12s %12s %14s %14s\n' server "plateau MiB" "peak MiB" "plateau +MiB" "peak +MiB"
for srv in plain 0 $CACHE_SIZES; do
	name="cache_size $srv"
	if [[ $srv == plain ]]; then name="plain Caddy"; fi
	awk -v n="$name" -v k="${PLATEAU[$srv]}" -v p="${PEAK[$srv]}" -v bk="${PLATEAU[plain]}" -v bp="${PEAK[plain]}" 'BEGIN {
		printf "%-22s %12.1f %12.1f %14.1f %14.1f\n", n, k / 1024, p / 1024, (k - bk) / 1024, (p - bp) / 1024
	}'
done
for size in $CACHE_SIZES; do
	awk -v s="$size" -v k="${PLATEAU[$size]}" -v k0="${PLATEAU[0]}" -v p="${PEAK[$size]}" -v p0="${PEAK[0]}" 'BEGIN {
		printf "cache_size %s: %.2f KiB per entry at the plateau, %.2f KiB per entry at the peak (over cache_size 0)\n", s, (k - k0) / s, (p - p0) / s
	}'
done
machine_info
