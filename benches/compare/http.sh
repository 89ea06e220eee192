#!/usr/bin/env bash
# Headland beside nginx (one worker) and HAProxy (one thread) on this machine, in the same
# run: all three proxy the same loopback upstream with keep-alive upstream connections and
# no access log, and wrk drives the same HTTP/1.1 keep-alive load at each in turn, rounds
# alternating so that drift hits all equally. Prints requests/s, p50/p99 latency, CPU
# seconds per 100k requests and peak RSS for each, the ratios, and the upstream served
# directly (the ceiling).
#
#   benches/compare/http.sh                 # defaults below
#   DURATION=10 ROUNDS=3 WORKERS="1 2" benches/compare/http.sh
#
# Loopback only; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-5}      # seconds of load per measurement
ROUNDS=${ROUNDS:-2}          # measurements per server and scenario (the median is reported)
CONNECTIONS=${CONNECTIONS:-50}
WORKERS=${WORKERS:-"1 2"}    # proxy worker threads/processes
BASE_PORT=${BASE_PORT:-18900}
# Idle connections for the RSS scenario (0 skips it). HAProxy needs two descriptors per
# connection, so with the hard limit of 20,000 open files found here 9,000 is what fits.
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-9000}

missing=()
for pair in nginx:nginx haproxy:haproxy wrk:wrk; do
  command -v "${pair#*:}" >/dev/null 2>&1 || missing+=("${pair%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi
[ -x target/release/headland ] || cargo build --release
headland=$PWD/target/release/headland

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

upstream_port=$BASE_PORT
head -c 65536 /dev/urandom > "$work/64k.bin"
# nginx workers drop root privileges; let them read the file.
chmod 755 "$work"; chmod 644 "$work/64k.bin"
cat > "$work/upstream.conf" <<EOF
worker_processes 1;
pid $work/upstream.pid;
error_log $work/upstream-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$upstream_port backlog=4096;
    keepalive_requests 1000000;
    location = /small { default_type text/plain; return 200 "hello from upstream\n"; }
    location = /64k { alias $work/64k.bin; }
  }
}
EOF
nginx -c "$work/upstream.conf" -g "daemon off;" & pids+=($!)

# sum_over_tree PID FILE AWK: the AWK program's number for /proc/P/FILE, summed over the
# process and its children (nginx master + workers).
sum_over_tree() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$pid/$2" ] || continue
    total=$(( total + $(awk "$3" "/proc/$pid/$2") ))
  done
  echo "$total"
}
cpu_ticks() { sum_over_tree "$1" stat '{print $14 + $15}'; }       # user + system ticks
peak_rss_kib() { sum_over_tree "$1" status '/VmHWM/ {print $2}'; }
rss_kib() { sum_over_tree "$1" status '/VmRSS/ {print $2}'; }
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 1
}

start_proxies() {  # $1 = workers
  local n=$1
  hl_port=$((BASE_PORT + 1)); ngx_port=$((BASE_PORT + 2)); hap_port=$((BASE_PORT + 3))
  mkdir -p "$work/hl"
  cat > "$work/hl/headland.toml" <<EOF
[node]
state_dir = "$work/hl"
threads = $n
[listen]
http = ["127.0.0.1:$hl_port"]
admin = "off"
[access_log]
output = "off"
[upstreams.origin]
servers = ["127.0.0.1:$upstream_port"]
[[routes]]
host = "*"
upstream = "origin"
max_body_size = "0"
EOF
  RUST_LOG=error "$headland" run --config "$work/hl/headland.toml" >/dev/null 2>&1 & hl_pid=$!; pids+=($hl_pid)
  cat > "$work/proxy-nginx.conf" <<EOF
worker_processes $n;
pid $work/proxy-nginx.pid;
error_log $work/proxy-nginx-error.log;
events { worker_connections 16384; }
http {
  access_log off;
  upstream origin { server 127.0.0.1:$upstream_port; keepalive 64; }
  server {
    listen 127.0.0.1:$ngx_port backlog=4096;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
EOF
  nginx -c "$work/proxy-nginx.conf" -g "daemon off;" & ngx_pid=$!; pids+=($ngx_pid)
  cat > "$work/haproxy.cfg" <<EOF
global
  nbthread $n
  maxconn 9900
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$hap_port
  option forwardfor
  default_backend origin
backend origin
  server s1 127.0.0.1:$upstream_port
EOF
  haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & hap_pid=$!; pids+=($hap_pid)
  wait_port "$hl_port"; wait_port "$ngx_port"; wait_port "$hap_port"
}

stop_proxies() {
  kill "$hl_pid" "$ngx_pid" "$hap_pid" 2>/dev/null || true
  wait "$hl_pid" "$ngx_pid" "$hap_pid" 2>/dev/null || true
}

# measure NAME PID PORT PATH -> appends "name rps p50_ms p99_ms cpu_per_100k rss_mib" to results
measure() {
  local name=$1 pid=$2 port=$3 path=$4 out before after ticks requests rps p50 p99
  before=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port$path")
  [ -z "${DEBUG_WRK:-}" ] || echo "$out" >&2
  after=$(cpu_ticks "$pid")
  ticks=$(getconf CLK_TCK)
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
  # A benchmark of error pages measures nothing: stop rather than print misleading numbers.
  [ -z "$errors" ] || { echo "$name $path: $errors" >&2; exit 1; }
  printf '%s %s %s %s %s %s\n' "$name" "$rps" "$(to_ms "$p50")" "$(to_ms "$p99")" \
    "$(awk -v t="$((after - before))" -v hz="$ticks" -v n="$requests" 'BEGIN { printf "%.3f", (t / hz) * 100000 / n }')" \
    "$(awk -v k="$(peak_rss_kib "$pid")" 'BEGIN { printf "%.1f", k / 1024 }')" >> "$results"
}
to_ms() {  # wrk prints 1.23ms, 456.00us or 1.20s
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

median() {  # column $2 of lines for server $1
  awk -v s="$1" -v c="$2" '$1 == s {print $c}' "$results" | sort -n | awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# idle NAME PID PORT: holds IDLE_CONNECTIONS keep-alive connections open on the server, then
# prints its RSS before and with them.
idle() {
  local name=$1 pid=$2 port=$3 before with
  before=$(rss_kib "$pid")
  coproc HOLD { python3 benches/compare/hold_connections.py "$port" "$IDLE_CONNECTIONS" idle.test; }
  read -r ready _ <&"${HOLD[0]}" || true
  sleep 1
  with=$(rss_kib "$pid")
  exec {HOLD[1]}>&-
  wait "$HOLD_PID" 2>/dev/null || true
  printf '%-9s %14s %20s %16s\n' "$name" "$(awk -v k="$before" 'BEGIN { printf "%.1f", k / 1024 }')" \
    "$(awk -v k="$with" 'BEGIN { printf "%.1f", k / 1024 }')" "$(awk -v a="$before" -v b="$with" -v n="$IDLE_CONNECTIONS" 'BEGIN { printf "%.2f", (b - a) / n }')"
}

# Idle connections need file descriptors: one per connection in the client and the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

wait_port "$upstream_port"
echo "Headland $("$headland" --version | awk '{print $2}') vs $(nginx -v 2>&1 | sed 's/.*version: //') vs $(haproxy -v | head -1 | awk '{print $1, $3}'), wrk $CONNECTIONS connections, ${DURATION}s x $ROUNDS rounds"
echo "machine: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), loopback, no CPU pinning"
for n in $WORKERS; do
  start_proxies "$n"
  for path in /small /64k; do
    results="$work/results-$n-${path#/}"
    : > "$results"
    for round in $(seq 1 "$ROUNDS"); do
      # Alternate the order each round.
      if [ $((round % 2)) -eq 1 ]; then order="headland nginx haproxy direct"; else order="direct haproxy nginx headland"; fi
      for server in $order; do
        case $server in
          headland) measure headland "$hl_pid" "$hl_port" "$path" ;;
          nginx) measure nginx "$ngx_pid" "$ngx_port" "$path" ;;
          haproxy) measure haproxy "$hap_pid" "$hap_port" "$path" ;;
          direct) measure direct "$(cat "$work/upstream.pid")" "$upstream_port" "$path" ;;
        esac
      done
    done
    echo
    echo "== $n worker(s), GET $path ($( [ "$path" = /small ] && echo '20 B' || echo '64 KiB') body), medians"
    printf '%-9s %12s %9s %9s %15s %9s\n' server "req/s" "p50 ms" "p99 ms" "CPU s/100k req" "RSS MiB"
    for server in headland nginx haproxy direct; do
      printf '%-9s %12s %9s %9s %15s %9s\n' "$server" "$(median "$server" 2)" "$(median "$server" 3)" "$(median "$server" 4)" "$(median "$server" 5)" "$(median "$server" 6)"
    done
    hl=$(median headland 2); ng=$(median nginx 2); hp=$(median haproxy 2); dr=$(median direct 2)
    hl_cpu=$(median headland 5); ng_cpu=$(median nginx 5)
    awk -v h="$hl" -v n="$ng" -v p="$hp" -v d="$dr" -v hc="$hl_cpu" -v nc="$ng_cpu" 'BEGIN {
      printf "ratios: req/s Headland/nginx %.2f, Headland/HAProxy %.2f, Headland/direct %.2f; CPU per request Headland/nginx %.2f\n", h / n, h / p, h / d, hc / nc }'
  done
  if [ "$n" = "$(echo $WORKERS | awk '{print $1}')" ] && [ "$IDLE_CONNECTIONS" -gt 0 ]; then
    echo
    echo "== $n worker(s), $IDLE_CONNECTIONS idle keep-alive client connections, RSS"
    printf '%-9s %14s %20s %16s\n' server "RSS before MiB" "RSS with idle MiB" "KiB per conn"
    idle headland "$hl_pid" "$hl_port"
    idle nginx "$ngx_pid" "$ngx_port"
    idle haproxy "$hap_pid" "$hap_port"
  fi
  stop_proxies
done
