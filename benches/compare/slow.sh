#!/usr/bin/env bash
# Slow clients: Headland beside nginx in front of an app that can serve only 64 connections
# at once (benches/compare/capped_app.py, the model of an app with 64 workers), while
# slowhttptest attacks the proxy with 1,000 connections from 127.0.0.1:
#
#   slowloris   -H  request heads sent a few bytes every 10 s, never finished
#   slowbody    -B  POST heads complete, Content-Length 8192, body trickled 10 s apart
#   slowread    -X  GET /big (1 MiB, 3 times pipelined) read 32 bytes every 5 s through a
#                   512–1024 byte receive window
#   none            no attack: the baseline
#
# During each attack an ordinary client (benches/compare/probe.py) from another loopback
# address, 127.0.0.2, asks for a small page on a new connection, 5 times a second, each with
# 5 s to answer. Reported per attack and proxy: the share of its requests served (2xx with
# the whole body within 5 s), their p50/p99 latency, the proxy's peak RSS and peak open
# client connections, how many app workers were busy at most and how many connections
# queued for one, and what the attacker saw (connections held open at most, closed).
#
# Proxies, each fresh (new process, new app) for every measurement:
#   headland         release binary, default [http] limits (max_connections_per_ip = 256)
#   headland-ip5000  the same with max_connections_per_ip = 5000, so all 1,000 attack
#                    connections get in, as they do with nginx (no per-address cap by default)
#   nginx            Debian's nginx.conf defaults (worker_processes auto, worker_connections
#                    768, sendfile, tcp_nopush) with a plain proxy_pass: HTTP/1.0 to the app,
#                    no upstream keep-alive, proxy_buffering and proxy_request_buffering on
#   nginx-wc4096     the same with worker_connections 4096: 768 a worker is too few for
#                    1,000 attack connections plus their upstream connections, and nginx
#                    then refuses connections, so this is the like-for-like of headland-ip5000
# Same worker count for all (WORKERS, default the number of CPUs: Headland's default
# threads, nginx's worker_processes auto); access logs off on both. The baseline (no attack)
# runs for headland and nginx only: the two variants differ from them only in caps that
# an unattacked proxy never reaches.
#
#   benches/compare/slow.sh                # about 16 minutes
#   ATTACK_SECONDS=30 ATTACKS="slowread" PROXIES="headland nginx" benches/compare/slow.sh
#
# Loopback only; every process it starts is stopped on exit. No timing is asserted: this
# prints figures to compare.
set -euo pipefail
cd "$(dirname "$0")/../.."

ATTACK_SECONDS=${ATTACK_SECONDS:-60}      # probe time under each attack (after the ramp-up)
BASELINE_SECONDS=${BASELINE_SECONDS:-15}  # probe time with no attack
ATTACK_CONNECTIONS=${ATTACK_CONNECTIONS:-1000}
ATTACK_RATE=${ATTACK_RATE:-200}           # new attack connections a second (slowhttptest -r)
APP_WORKERS=${APP_WORKERS:-64}
BIG_BYTES=${BIG_BYTES:-1048576}           # the resource the slow reader asks for
PROBE_RATE=${PROBE_RATE:-5}               # probe requests a second
PROBE_TIMEOUT=${PROBE_TIMEOUT:-5}         # seconds a probe request may take to be "served"
WORKERS=${WORKERS:-$(nproc)}              # Headland threads = nginx worker_processes
ATTACKS=${ATTACKS:-"none slowloris slowbody slowread"}
PROXIES=${PROXIES:-"headland headland-ip5000 nginx nginx-wc4096"}
VARIANTS="headland-ip5000 nginx-wc4096"   # not run without an attack
BASE_PORT=${BASE_PORT:-18920}             # 18920–18923 (http.sh uses 18900–18908, dns.sh 18950–)
PROBE_SOURCE=127.0.0.2                    # the ordinary client's address (the attacker's: 127.0.0.1)

missing=()
for pair in nginx:nginx slowhttptest:slowhttptest curl:curl iproute2:ss python3:python3; do
  command -v "${pair#*:}" >/dev/null 2>&1 || missing+=("${pair%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi
[ -x target/release/headland ] || cargo build --release
headland=$PWD/target/release/headland

# shellcheck source=benches/compare/lib.sh
source benches/compare/lib.sh

app_port=$BASE_PORT; proxy_port=$((BASE_PORT + 1)); admin_port=$((BASE_PORT + 2))
# nginx workers drop root privileges: they must reach their temp directories under $work.
chmod 755 "$work"
# 1,000 attack connections, plus the app's and the proxy's side of each.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# stop PID: SIGTERM, then SIGKILL after 5 s (Headland's graceful stop waits for requests in
# flight; a slow reader's would hold it up to shutdown_timeout).
stop() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
# rss_mib PID FIELD: VmHWM (peak) or VmRSS (now) of a process and its children (nginx
# master + workers), MiB.
rss_mib() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$pid/status" ] || continue
    total=$(( total + $(awk -v f="$2:" '$1 == f {print $2}' "/proc/$pid/status") ))
  done
  awk -v k="$total" 'BEGIN { printf "%.1f", k / 1024 }'
}

start_app() {
  python3 benches/compare/capped_app.py "$app_port" "$APP_WORKERS" "$BIG_BYTES" "$work/app-stats.json" &
  app_pid=$!; pids+=("$app_pid")
  wait_port "$app_port"
}

# start_proxy NAME: one fresh proxy on $proxy_port; sets proxy_pid.
start_proxy() {
  local dir=$work/$1
  rm -rf "$dir"; mkdir -p "$dir"
  case $1 in
    headland*)
      local per_ip=""
      [ "$1" = headland-ip5000 ] && per_ip="max_connections_per_ip = 5000"
      # Admin on loopback only for its /metrics (the limit rejection counts).
      cat > "$dir/headland.toml" <<EOF
[node]
state_dir = "$dir"
threads = $WORKERS
[listen]
http = ["127.0.0.1:$proxy_port"]
admin = "127.0.0.1:$admin_port"
[access_log]
output = "off"
[http]
$per_ip
[upstreams.app]
servers = ["127.0.0.1:$app_port"]
[[routes]]
host = "*"
upstream = "app"
EOF
      RUST_LOG=error "$headland" run --config "$dir/headland.toml" >/dev/null 2>"$dir/stderr.log" &
      proxy_pid=$! ;;
    nginx*)
      local connections=768
      [ "$1" = nginx-wc4096 ] && connections=4096
      # Debian's /etc/nginx/nginx.conf, less TLS, gzip (text/plain is not gzipped by it
      # anyway) and the access log; temp files in the work directory.
      cat > "$dir/nginx.conf" <<EOF
worker_processes $WORKERS;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections $connections; }
http {
  sendfile on;
  tcp_nopush on;
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  server {
    listen 127.0.0.1:$proxy_port;
    location / { proxy_pass http://127.0.0.1:$app_port; }
  }
}
EOF
      nginx -c "$dir/nginx.conf" -g "daemon off;" & proxy_pid=$! ;;
  esac
  pids+=("$proxy_pid")
  wait_port "$proxy_port"
}

# sample SECONDS FILE: once a second, the proxy's open client connections (established TCP
# sockets on its port, its side) and its connections to the app; keeps the peaks in FILE.
sample() {
  local peak_client=0 peak_app=0 c a
  for _ in $(seq 1 "$1"); do
    c=$(ss -Htn state established "( sport = :$proxy_port )" | wc -l)
    a=$(ss -Htn state established "( dport = :$app_port )" | wc -l)
    [ "$c" -gt "$peak_client" ] && peak_client=$c
    [ "$a" -gt "$peak_app" ] && peak_app=$a
    echo "$peak_client $peak_app" > "$2"
    sleep 1
  done
}

# attack_args NAME SECONDS: sets attack_args to slowhttptest's arguments for this attack on
# the proxy, statistics in $work/attack.csv. (slowhttptest is then started directly, not
# in a function's subshell, so that its pid is the one stopped.)
attack_args() {
  local url=http://127.0.0.1:$proxy_port
  attack_args=(-c "$ATTACK_CONNECTIONS" -r "$ATTACK_RATE" -l "$2" -p 3 -g -o "$work/attack")
  case $1 in
    slowloris) attack_args+=(-H -i 10 -x 24 -u "$url/") ;;
    slowbody) attack_args+=(-B -i 10 -x 10 -s 8192 -u "$url/upload") ;;
    # The example of slowhttptest's documentation for -X, on a resource larger than the
    # socket buffers between app, proxy and client.
    slowread) attack_args+=(-X -w 512 -y 1024 -n 5 -z 32 -k 3 -u "$url/big") ;;
  esac
}

# log_summary ATTACK PROXY: the proxy's error log, lines counted by message (client
# addresses, connection numbers and times left out), appended to $notes.
log_summary() {
  local log summary
  case $2 in
    nginx*) log=$work/$2/error.log ;;
    *) log=$work/$2/stderr.log ;;
  esac
  [ -s "$log" ] || return 0
  summary=$(sed -E 's/^[0-9/]+ [0-9:]+ \[([a-z]+)\] [0-9#]+: (\*[0-9]+ )?/[\1] /; s/, client: .*//; s/^[0-9TZ:.-]+ +//' "$log" \
    | sort | uniq -c | sort -rn | head -5 | awk '{ $1 = $1 " ×"; print "    " $0 }')
  printf '%s %s:\n%s\n' "$1" "$2" "$summary" >> "$notes"
}

# measure ATTACK PROXY: one fresh app and proxy, the attack, the probe; appends a line to
# $results.
measure() {
  local name=$1 proxy=$2 ramp=0 seconds=$ATTACK_SECONDS attack_pid="" sampler_pid probe rss
  local rejections="-" attacker="- -" left=- rss_after=-
  [ "$name" = none ] && seconds=$BASELINE_SECONDS
  start_app
  start_proxy "$proxy"
  rm -f "$work/attack.csv" "$work/attack.html" "$work/peaks"
  if [ "$name" != none ]; then
    # Let every attack connection open before the probe starts; the attack outlasts it.
    ramp=$(( ATTACK_CONNECTIONS / ATTACK_RATE + 3 ))
    attack_args "$name" $(( ramp + seconds + PROBE_TIMEOUT + 5 ))
    slowhttptest "${attack_args[@]}" >"$work/attack.log" 2>&1 & attack_pid=$!; pids+=("$attack_pid")
  fi
  sample $(( ramp + seconds + PROBE_TIMEOUT + 2 )) "$work/peaks" & sampler_pid=$!; pids+=("$sampler_pid")
  sleep "$ramp"
  probe=$(python3 benches/compare/probe.py "$PROBE_SOURCE" "$proxy_port" /small "$PROBE_RATE" "$seconds" "$PROBE_TIMEOUT")
  rss=$(rss_mib "$proxy_pid" VmHWM)
  if [[ $proxy == headland* ]]; then
    # e.g. connections_per_ip=744: the rejections by limit, from Headland's own metrics.
    rejections=$(curl -s "http://127.0.0.1:$admin_port/metrics" | awk -F'[{}"= ]+' \
      '/^headland_http_limit_rejections_total\{/ && $NF > 0 { printf "%s%s=%d", sep, $3, $NF; sep = "," }')
    [ -n "$rejections" ] || rejections=none
  fi
  if [ -n "$attack_pid" ]; then
    stop "$attack_pid"
    # slowhttptest's CSV: seconds,closed,pending,connected,service available. Reported: the
    # most connections it held open at once, and how many the server had closed by the end.
    [ -s "$work/attack.csv" ] && attacker=$(awk -F, 'NR > 1 { if ($4 > m) m = $4; c = $2 } END { print m + 0, c + 0 }' "$work/attack.csv")
    # Client connections the proxy still holds 2 s after the attacker is gone, and its RSS
    # then: connections it lost track of, or memory it kept, would show here.
    sleep 2
    left=$(ss -Htn state established "( sport = :$proxy_port )" | wc -l)
    rss_after=$(rss_mib "$proxy_pid" VmRSS)
  fi
  stop "$sampler_pid"
  stop "$proxy_pid"
  stop "$app_pid"
  log_summary "$name" "$proxy"
  # name proxy | sent served p50 p99 timeouts closed status per_10s codes | rss | peak client conns,
  # peak app conns | app peak busy, peak waiting, POSTs | attacker held, closed | left open,
  # RSS after | rejections
  printf '%s %s %s %s %s %s %s %s %s %s\n' "$name" "$proxy" "$probe" "$rss" "$(cat "$work/peaks" 2>/dev/null || echo '- -')" \
    "$(python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print(s["peak_busy"], s["peak_waiting"], s["posts"])' "$work/app-stats.json")" \
    "$attacker" "$left" "$rss_after" "$rejections" >> "$results"
  echo "$(tail -1 "$results")  (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
}

results=$work/results; notes=$work/notes
: > "$results"; : > "$notes"
started_at=$(date +%s)
echo "Headland $("$headland" --version | awk '{print $2}') vs $(nginx -v 2>&1 | sed 's/.*version: //'), $(slowhttptest -h 2>&1 | awk '/version/ {print "slowhttptest", $NF; exit}'), $WORKERS worker(s) each"
echo "app: $APP_WORKERS workers (connections at once); attack: $ATTACK_CONNECTIONS connections from 127.0.0.1 at $ATTACK_RATE/s; probe: $PROBE_RATE req/s from $PROBE_SOURCE for ${ATTACK_SECONDS}s (baseline ${BASELINE_SECONDS}s), ${PROBE_TIMEOUT}s timeout"
echo "machine: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), loopback, no CPU pinning"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "(one line per measurement on stderr as it finishes)" >&2
for name in $ATTACKS; do
  for proxy in $PROXIES; do
    [ "$name" = none ] && [[ " $VARIANTS " == *" $proxy "* ]] && continue
    measure "$name" "$proxy"
  done
done

echo
printf '%-10s %-16s %7s %8s %8s %11s %7s %7s %5s %6s %5s %6s %5s %6s  %s\n' attack proxy served "p50 ms" "p99 ms" failed "RSS MiB" "client" "app" "app" "app" attack "left" "RSS" "% served per 10 s | non-2xx | Headland rejections"
printf '%-10s %-16s %7s %8s %8s %11s %7s %7s %5s %6s %5s %6s %5s %6s\n' "" "" "" "" "" "" peak conns busy queued POSTs held open after
while read -r name proxy sent served p50 p99 timeouts closed status shares codes rss peak_c _peak_a busy waiting posts held _closed_by_srv left rss_after rej; do
  printf '%-10s %-16s %6s%% %8s %8s %11s %7s %7s %5s %6s %5s %6s %5s %6s  %s | %s | %s\n' "$name" "$proxy" \
    "$(awk -v s="$served" -v n="$sent" 'BEGIN { printf "%.1f", 100 * s / n }')" "$p50" "$p99" \
    "${timeouts}t/${closed}c/${status}s" "$rss" "$peak_c" "$busy" "$waiting" "$posts" "$held" "$left" "$rss_after" "$shares" "$codes" "$rej"
done < "$results"
echo "served: 2xx in full within ${PROBE_TIMEOUT}s, of $PROBE_RATE probe requests a second; p50/p99 over those served."
echo "failed: t = no answer within ${PROBE_TIMEOUT}s, c = refused/reset/closed, s = non-2xx. client conns: the proxy's peak open client connections;"
echo "app busy/queued: the app's peak workers in use / connections waiting for one; app POSTs: request bodies that reached the app;"
echo "attack held: most attack connections open at once (slowhttptest); left open, RSS after: the proxy's client connections and RSS (MiB)"
echo "2 s after the attack ended."
if [ -s "$notes" ]; then
  echo
  echo "proxy error logs (nginx error.log; Headland stderr at RUST_LOG=error), lines by message:"
  cat "$notes"
fi

# Ratios, Headland over nginx as shipped by Debian, and the two variants over each other (both
# let all 1,000 attack connections in). Latency only where both served at least 95 %: the
# p50 of the few requests that got through a starved proxy says nothing.
field() { awk -v a="$1" -v p="$2" -v c="$3" '$1 == a && $2 == p { print $c }' "$results"; }
echo
for name in $ATTACKS; do
  for pair in headland:nginx headland-ip5000:nginx-wc4096 headland-ip5000:nginx; do
    h=${pair%%:*}; n=${pair#*:}
    [ -n "$(field "$name" "$h" 3)" ] && [ -n "$(field "$name" "$n" 3)" ] || continue
    awk -v a="$name" -v h="$h" -v n="$n" \
      -v hs="$(field "$name" "$h" 4)" -v hn="$(field "$name" "$h" 3)" -v h50="$(field "$name" "$h" 5)" -v hr="$(field "$name" "$h" 12)" \
      -v ns="$(field "$name" "$n" 4)" -v nn="$(field "$name" "$n" 3)" -v n50="$(field "$name" "$n" 5)" -v nr="$(field "$name" "$n" 12)" 'BEGIN {
        printf "%-10s %s / %s: served %s, p50 %s, peak RSS %.2f\n", a, h, n,
          (ns > 0 ? sprintf("%.2f", (hs / hn) / (ns / nn)) : "n/a (" n " served none)"),
          (hs / hn >= 0.95 && ns / nn >= 0.95 ? sprintf("%.2f", h50 / n50) : "n/a (one served < 95 %)"), hr / nr }'
  done
done
echo
echo "total time: $(( $(date +%s) - started_at )) s"
