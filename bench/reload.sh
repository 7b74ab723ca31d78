#!/usr/bin/env bash
# bench/reload.sh: config reloads under load lose no request and fetch no
# extra JWKS.
#
# Runs two Caddy processes on 127.0.0.1:
#   - an IdP (plain Caddy, bench/plaincaddy) serving demo/jwks.json with an
#     access log in a file: each line is one JWKS fetch;
#   - Caddy + oauth2_jwt whose provider takes its keys from that IdP
#     (jwks_uri), answering `respond "ok <n>"`.
# While wrk sends a valid token, the config is POSTed to the admin API's
# /load RELOADS times, each time with another respond body (checked after
# each load). Then prints wrk's totals and the JWKS fetch count.
# Exits non-zero on any failed request (non-2xx, socket error), failed
# reload, or more than MAX_FETCHES JWKS fetches.
#
# Environment: RELOADS (20), INTERVAL (0.5 seconds between reloads),
# CONNS (32), THREADS (2), WRK_TIMEOUT (10s: the machine may be loaded),
# MAX_FETCHES (2), CACHE_SIZE (10000; 0 makes every request verify the
# signature with the provider's keys), PLAIN (0; 1 reloads plain Caddy
# without the module instead: a control showing what Caddy itself does on
# reload; the JWKS fetch check is then skipped), KEEPALIVE (0; see below).
#
# Why wrk sends "Connection: close" by default: on every reload Caddy shuts
# the old server down gracefully, which closes the keep-alive connections
# that are idle at that moment. wrk writes its next request on such a
# connection without waiting and counts the close as a "read" socket error
# (a real client retries: the request was never read). That happens with
# plain Caddy as much as with the module (try PLAIN=1 KEEPALIVE=1: about one
# error per connection per reload), so it would hide the failures this
# script looks for. With a connection per request, any socket error or
# non-2xx is a request that Caddy + oauth2_jwt really failed. KEEPALIVE=1
# keeps the connections open and reports those errors without failing.
source "$(dirname "$0")/lib.sh"

RELOADS=${RELOADS:-20}
INTERVAL=${INTERVAL:-0.5}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
WRK_TIMEOUT=${WRK_TIMEOUT:-10s}
PLAIN=${PLAIN:-0}
KEEPALIVE=${KEEPALIVE:-0}
MAX_FETCHES=${MAX_FETCHES:-2}
CACHE_SIZE=${CACHE_SIZE:-10000}

need_wrk
build plain ./bench/plaincaddy
build module ./cmd/caddy
build demo-token ./cmd/demo-token
TOKEN=$(mint_token)
machine_info

IDP_PORT=$(free_port)
API_PORT=$(free_port)
ADMIN_PORT=$(free_port)
mkdir -p "$WORK/idp"
cp "$REPO_DIR/demo/jwks.json" "$WORK/idp/jwks.json"
ACCESS_LOG=$WORK/jwks-access.log
: >"$ACCESS_LOG"

cat >"$WORK/idp.caddyfile" <<EOF
{
	admin off
	persist_config off
	auto_https off
}
http://127.0.0.1:$IDP_PORT {
	bind 127.0.0.1
	root * $WORK/idp
	header Content-Type application/json
	log {
		output file $ACCESS_LOG
	}
	file_server
}
EOF

# api_config N: the API's Caddyfile, answering "ok N".
api_config() {
	cat <<EOF
{
	admin 127.0.0.1:$ADMIN_PORT
	persist_config off
	auto_https off
}
http://127.0.0.1:$API_PORT {
	bind 127.0.0.1
EOF
	if [[ $PLAIN == 1 ]]; then
		printf '\trespond "ok %s"\n}\n' "$1"
		return
	fi
	cat <<EOF
	oauth2_jwt {
		provider demo {
			issuer http://127.0.0.1:9081
			audience demo-api
			jwks_uri http://127.0.0.1:$IDP_PORT/jwks.json
			algorithms ES256
		}
		cache_size $CACHE_SIZE
	}
	respond "ok $1"
}
EOF
}

fetches() { grep -c '"uri":"/jwks.json"' "$ACCESS_LOG" || true; }
body() { curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$API_PORT/"; }

start_caddy "$BIN_DIR/plain" "$WORK/idp.caddyfile" "$IDP_PORT"
api_config 0 >"$WORK/api.caddyfile"
API_BIN=$BIN_DIR/module
if [[ $PLAIN == 1 ]]; then
	API_BIN=$BIN_DIR/plain
	MAX_FETCHES=0
	echo "PLAIN=1: control run with plain Caddy, no oauth2_jwt"
fi
start_caddy "$API_BIN" "$WORK/api.caddyfile" "$API_PORT"
[[ $(body) == "ok 0" ]] || die "API does not answer \"ok 0\" with a valid token (log: $WORK/api.caddyfile.log)"
echo "JWKS fetches after start: $(fetches)"
[[ $PLAIN == 1 || $(fetches) == 1 ]] || die "expected 1 JWKS fetch after start"

duration=$(awk -v n="$RELOADS" -v i="$INTERVAL" 'BEGIN { printf "%d", n * (i + 0.5) + 4 }')
echo "wrk -t$THREADS -c$CONNS -d${duration}s with a valid token; $RELOADS reloads through POST /load, ${INTERVAL}s apart (cache_size $CACHE_SIZE)"
conn_header=(-H "Connection: close")
[[ $KEEPALIVE == 1 ]] && conn_header=()
echo "connections: $([[ $KEEPALIVE == 1 ]] && echo keep-alive || echo 'one per request (Connection: close)')"
timeout $((duration + 60)) wrk -t"$THREADS" -c"$CONNS" -d"${duration}s" --timeout "$WRK_TIMEOUT" \
	"${conn_header[@]}" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$API_PORT/" >"$WORK/wrk.out" 2>&1 &
WRK_PID=$!
PIDS+=("$WRK_PID")
sleep 2

failed_loads=0
for i in $(seq "$RELOADS"); do
	api_config "$i" >"$WORK/api-$i.caddyfile"
	code=$(curl -s -o "$WORK/load-$i.out" -w '%{http_code}' -X POST -H 'Content-Type: text/caddyfile' \
		--data-binary "@$WORK/api-$i.caddyfile" "http://127.0.0.1:$ADMIN_PORT/load")
	got=$(body)
	if [[ $code != 200 || $got != "ok $i" ]]; then
		failed_loads=$((failed_loads + 1))
		log "reload $i: POST /load answered $code ($(cat "$WORK/load-$i.out")), API answers \"$got\""
	fi
	sleep "$INTERVAL"
done
echo "reloads: $RELOADS, failed: $failed_loads; API now answers \"$(body)\""

wait "$WRK_PID" || die "wrk failed: $(cat "$WORK/wrk.out")"
cat "$WORK/wrk.out"
requests=$(awk '/requests in/ { print $1 }' "$WORK/wrk.out")
non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$WORK/wrk.out")
socket=$(awk '/Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i; print n }' "$WORK/wrk.out")
n_fetch=$(fetches)
metric=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | { grep -E '^caddy_oauth2_jwt_key_fetches_total' || true; } | tr '\n' ' ')

echo
echo "== result"
echo "requests: $requests, non-2xx: ${non2xx:-0}, socket errors: ${socket:-0}"
echo "reloads: $RELOADS (failed $failed_loads)"
echo "JWKS fetches (IdP access log): $n_fetch (allowed: at most $MAX_FETCHES)"
echo "module metric: ${metric:-none}"
machine_info

status=0
if [[ $KEEPALIVE == 1 ]]; then
	[[ ${non2xx:-0} == 0 ]] || { echo "FAIL: non-2xx responses"; status=1; }
	echo "KEEPALIVE=1: socket errors reported, not counted as failures (see the top of this script)"
else
	[[ ${non2xx:-0} == 0 && ${socket:-0} == 0 ]] || { echo "FAIL: failed requests"; status=1; }
fi
[[ $failed_loads == 0 ]] || { echo "FAIL: failed reloads"; status=1; }
((n_fetch <= MAX_FETCHES && (n_fetch >= 1 || PLAIN == 1))) || { echo "FAIL: $n_fetch JWKS fetches"; status=1; }
[[ $status == 0 ]] && echo "PASS"
exit "$status"
