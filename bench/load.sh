#!/usr/bin/env bash
# bench/load.sh: throughput of plain Caddy vs Caddy + oauth2_jwt.
#
# Builds two binaries once: plain Caddy (bench/plaincaddy: standard modules
# only) and Caddy + oauth2_jwt (cmd/caddy). Serves `respond "ok"` on
# 127.0.0.1 with three servers:
#   A  plain Caddy
#   B  Caddy + oauth2_jwt, verified-token cache on (cache_size 10000)
#   C  Caddy + oauth2_jwt, cache off (cache_size 0)
# and drives them alternately (A B C A B C ...) with wrk, every request
# carrying the same valid ES256 token. Only one server runs at a time.
# Prints requests/s per round, the medians and the ratios B/A and C/A.
#
# Environment: ROUNDS (3), DURATION (10s), CONNS (32), THREADS (2),
# WARMUP (2s, a short unmeasured wrk run before each measurement).
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}

need_wrk
build plain ./bench/plaincaddy
build module ./cmd/caddy
build demo-token ./cmd/demo-token
TOKEN=$(mint_token)
cp "$REPO_DIR/demo/jwks.json" "$WORK/jwks.json"

declare -A BIN CONF PORT
for s in A B C; do PORT[$s]=$(free_port); done
BIN[A]=$BIN_DIR/plain
BIN[B]=$BIN_DIR/module
BIN[C]=$BIN_DIR/module
NAME_A="plain Caddy"
NAME_B="Caddy + oauth2_jwt, cache_size 10000"
NAME_C="Caddy + oauth2_jwt, cache_size 0"

global='{
	admin off
	persist_config off
	auto_https off
}
'
CONF[A]=$WORK/A.caddyfile
printf '%s\nhttp://127.0.0.1:%s {\n\tbind 127.0.0.1\n\trespond "ok"\n}\n' "$global" "${PORT[A]}" >"${CONF[A]}"
CONF[B]=$WORK/B.caddyfile
{ echo "$global"; module_site "${PORT[B]}" 10000 "$WORK/jwks.json"; } >"${CONF[B]}"
CONF[C]=$WORK/C.caddyfile
{ echo "$global"; module_site "${PORT[C]}" 0 "$WORK/jwks.json"; } >"${CONF[C]}"

machine_info
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds, order A B C"
echo "  A = $NAME_A"
echo "  B = $NAME_B"
echo "  C = $NAME_C"

# Sanity check: every server answers 200 with the token (and the module
# ones refuse a request without it), so we measure the success path.
for s in A B C; do
	start_caddy "${BIN[$s]}" "${CONF[$s]}" "${PORT[$s]}"
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${PORT[$s]}/")
	[[ $code == 200 ]] || die "$s answered $code with a valid token (log: $WORK/$s.caddyfile.log)"
	if [[ $s != A ]]; then
		code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$s]}/")
		[[ $code == 400 ]] || die "$s answered $code without a token"
	fi
	stop_caddy "$CADDY_PID"
done

# run_wrk PORT DURATION: prints requests/s; fails on errors or non-2xx.
run_wrk() {
	local out
	out=$(timeout 120 wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency \
		-H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$1/")
	if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
		echo "$out" >&2
		die "wrk saw failed requests on port $1"
	fi
	awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}

declare -A RPS MED
for r in $(seq "$ROUNDS"); do
	for s in A B C; do
		start_caddy "${BIN[$s]}" "${CONF[$s]}" "${PORT[$s]}"
		run_wrk "${PORT[$s]}" "$WARMUP" >/dev/null
		rps=$(run_wrk "${PORT[$s]}" "$DURATION")
		stop_caddy "$CADDY_PID"
		RPS[$s]+="$rps "
		printf 'round %d  %s  %10.0f req/s   (load %s)\n' "$r" "$s" "$rps" "$(cut -d' ' -f1 /proc/loadavg)"
	done
done

echo
for s in A B C; do
	# shellcheck disable=SC2086
	MED[$s]=$(printf '%s\n' ${RPS[$s]} | median)
	n="NAME_$s"
	printf 'median %s  %10.0f req/s   %s   rounds: %s\n' "$s" "${MED[$s]}" "${!n}" "${RPS[$s]}"
done
awk -v a="${MED[A]}" -v b="${MED[B]}" -v c="${MED[C]}" 'BEGIN {
	printf "ratio module/plain, cached   (B/A): %.3f\n", b / a
	printf "ratio module/plain, uncached (C/A): %.3f\n", c / a
}'
machine_info
