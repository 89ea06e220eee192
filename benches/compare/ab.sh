#!/usr/bin/env bash
# A/B of Headland builds in one run: how a change to Headland or to a vendored Pingora crate
# moves CPU per request, requests/s and memory per idle keep-alive connection and per idle
# proxied WebSocket (to benches/compare/ws_upstream.py, both sides held). Each binary
# runs with one worker in front of the same loopback nginx upstream, and every round drives
# wrk at each binary in turn, the order rotating, so that the machine's drift hits all alike.
# Medians over the rounds are printed, then each binary relative to the first.
#
#   cp target/release/headland /tmp/headland-before     # build, copy, change, build again
#   benches/compare/ab.sh /tmp/headland-before target/release/headland
#   ROUNDS=7 DURATION=6 PATHS="/small /64k" IDLE_CONNECTIONS=0 benches/compare/ab.sh A B C
#
# Loopback only; every process it starts is stopped on exit.
set -euo pipefail
binaries=()
for bin in "$@"; do binaries+=("$(realpath "$bin")"); done
set -- "${binaries[@]}"
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-5}              # measurements per binary (the median is reported)
DURATION=${DURATION:-5}          # seconds of load per measurement
CONNECTIONS=${CONNECTIONS:-50}   # wrk keep-alive connections
PATHS=${PATHS:-/small}           # /small: 20 bytes, /64k: 64 KiB
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-2000}  # idle keep-alive connections held (0 skips)
WS_CONNECTIONS=${WS_CONNECTIONS:-2000}      # idle proxied WebSocket connections held (0 skips)
BASE_PORT=${BASE_PORT:-18950}

[ $# -ge 2 ] || { echo "usage: $0 HEADLAND-BINARY HEADLAND-BINARY [...]" >&2; exit 2; }
for bin in "$@"; do [ -x "$bin" ] || { echo "$bin: not an executable" >&2; exit 2; }; done

# Idle connections need a descriptor each in the client and in the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# shellcheck source=benches/compare/lib.sh
source benches/compare/lib.sh

upstream_port=$BASE_PORT
start_upstream "$upstream_port"
ws_port=$((BASE_PORT + 40))
python3 benches/compare/ws_upstream.py "$ws_port" & pids+=($!)


# One Headland per binary, the same configuration but its own port and state directory.
bin_pid=(); bin_port=()
for i in $(seq 0 $(($# - 1))); do
  dir=$work/hl-$i; port=$((BASE_PORT + 1 + i)); mkdir -p "$dir"
  cat > "$dir/headland.toml" <<EOF
[node]
state_dir = "$dir"
threads = 1
[listen]
http = ["127.0.0.1:$port"]
admin = "off"
[access_log]
output = "off"
[http]
max_connections = 100000          # every client here is 127.0.0.1: lift the per-IP limit
max_connections_per_ip = 100000
body_timeout = "1h"               # an idle WebSocket lives for the shorter of this ...
[upstreams.origin]
servers = ["127.0.0.1:$upstream_port"]
[upstreams.ws]
servers = ["127.0.0.1:$ws_port"]
read_timeout = "1h"               # ... and this
[[routes]]
host = "ws.test"
upstream = "ws"
[[routes]]
host = "*"
upstream = "origin"
max_body_size = "0"
EOF
  bin=${*:$((i + 1)):1}
  RUST_LOG=error "$bin" run --config "$dir/headland.toml" >/dev/null 2>"$dir/stderr.log" &
  bin_pid+=($!); pids+=($!); bin_port+=("$port")
done
wait_port "$upstream_port"; wait_port "$ws_port"
for port in "${bin_port[@]}"; do wait_port "$port"; done
ticks_per_second=$(getconf CLK_TCK)

# measure I PATH: one wrk run at binary I; prints "requests/s cpu-µs-per-request".
measure() {
  local pid=${bin_pid[$1]} port=${bin_port[$1]} before after out requests non2xx
  before=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$port$2")
  after=$(cpu_ticks "$pid")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  if [ -n "$non2xx" ]; then echo "binary $1 answered $non2xx non-2xx responses" >&2; exit 1; fi
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v r="$requests" -v d="$DURATION" -v t=$((after - before)) -v hz="$ticks_per_second" \
    'BEGIN { printf "%.0f %.2f\n", r / d, t / hz / r * 1e6 }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

n=$#
for path in $PATHS; do
  declare -A rps=() cpu=()
  for round in $(seq 1 "$ROUNDS"); do
    for k in $(seq 0 $((n - 1))); do
      i=$(( (k + round) % n ))
      read -r r c < <(measure "$i" "$path")
      rps[$i]+="$r "; cpu[$i]+="$c "
    done
  done
  echo "== GET $path, wrk -t1 -c$CONNECTIONS, $ROUNDS rounds of ${DURATION}s, medians"
  printf '%-4s %12s %16s %10s %10s  %s\n' "" "requests/s" "CPU µs/request" "req/s ×" "CPU ×" binary
  base_r=$(tr ' ' '\n' <<<"${rps[0]}" | grep . | median)
  base_c=$(tr ' ' '\n' <<<"${cpu[0]}" | grep . | median)
  for i in $(seq 0 $((n - 1))); do
    r=$(tr ' ' '\n' <<<"${rps[$i]}" | grep . | median)
    c=$(tr ' ' '\n' <<<"${cpu[$i]}" | grep . | median)
    printf '%-4s %12.0f %16.2f %10.3f %10.3f  %s\n' "$i" "$r" "$c" \
      "$(awk -v a="$r" -v b="$base_r" 'BEGIN { print a / b }')" \
      "$(awk -v a="$c" -v b="$base_c" 'BEGIN { print a / b }')" "${*:$((i + 1)):1}"
    echo "     CPU per round: ${cpu[$i]}"
  done
  unset rps cpu
done

# held KIND N: RSS cost of N idle connections of KIND (keepalive or websocket) per binary.
held() {
  local kind=$1 count=$2 host=idle.test
  [ "$kind" = websocket ] && host=ws.test
  echo "== $count idle $kind connections (one request or upgrade each, then held)"
  printf '%-4s %16s %16s  %s\n' "" "RSS before MiB" "KiB per conn" binary
  for i in $(seq 0 $((n - 1))); do
    pid=${bin_pid[$i]}; before=$(rss_kib "$pid")
    hold "binary $i" "${bin_port[$i]}" "$count" "$host" "$kind"
    sleep 1  # the server's last writes and its return to waiting, after the client's reads
    with=$(rss_kib "$pid")
    open=$(hold_open)
    release
    [ "$open" = "$count" ] \
      || { echo "binary $i: only $open of $count connections were still open when its RSS was read" >&2; exit 1; }
    printf '%-4s %16.1f %16.2f  %s\n' "$i" "$(awk -v k="$before" 'BEGIN { print k / 1024 }')" \
      "$(awk -v a="$before" -v b="$with" -v n="$count" 'BEGIN { print (b - a) / n }')" \
      "${*:$((i + 3)):1}"
  done
}
if [ "$IDLE_CONNECTIONS" -gt 0 ]; then held keepalive "$IDLE_CONNECTIONS" "$@"; fi
if [ "$WS_CONNECTIONS" -gt 0 ]; then held websocket "$WS_CONNECTIONS" "$@"; fi
