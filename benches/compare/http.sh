#!/usr/bin/env bash
# Headland beside nginx (workers), HAProxy (threads) and Caddy (GOMAXPROCS) on this machine,
# in the same run: all four proxy the same loopback upstream with keep-alive upstream
# connections and no access log, and wrk drives the same HTTP/1.1 keep-alive load at each in
# turn, rounds alternating so that drift hits all equally. Prints requests/s, p50/p99
# latency, CPU seconds per 100k requests and peak RSS for each, the ratios, and the upstream
# served directly (the ceiling).
#
# Then, with the first worker count:
#   * access log on vs off: a second Headland (and nginx) writing its access log to a file,
#     in the same rounds as the HTTP/1.1 small-response measurement;
#   * idle keep-alive connections: the RSS they cost;
#   * idle proxied WebSocket connections, client and upstream sides held open: the RSS they
#     cost (fresh processes in front of benches/compare/ws_upstream.py);
#   * HTTP/2 over TLS: the four servers terminate TLS with the same self-signed ECDSA P-256
#     certificate (HTTP/2 by ALPN) and proxy over HTTP/1.1 keep-alive; h2load drives it;
#   * new TLS handshakes per second: ab over HTTPS without keep-alive, so every request is a
#     new TCP connection and a full handshake (ab never offers a session to resume).
#
#   benches/compare/http.sh                 # defaults below, about 5 minutes
#   DURATION=10 ROUNDS=3 WORKERS="1 2" benches/compare/http.sh
#   HEADLAND_BIN=/tmp/headland-before benches/compare/http.sh   # measure another build
#
# Loopback only; every process it starts is stopped on exit.
set -euo pipefail
# A relative HEADLAND_BIN names a file from where the script was started, not the checkout.
if [ -n "${HEADLAND_BIN:-}" ]; then HEADLAND_BIN=$(realpath -m "$HEADLAND_BIN"); fi
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-4}      # seconds of load per measurement
ROUNDS=${ROUNDS:-2}          # measurements per server and scenario (the median is reported)
CONNECTIONS=${CONNECTIONS:-50}
WORKERS=${WORKERS:-"1 2"}    # proxy worker threads/processes
BASE_PORT=${BASE_PORT:-18900}
# Idle connections for the RSS scenario (0 skips it). HAProxy needs two descriptors per
# connection, so with the hard limit of 20,000 open files found here 9,000 is what fits.
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-9000}
# Idle proxied WebSocket connections (0 skips it). Each costs the proxy two descriptors, a
# client's and an upstream's: 9,000 is again what fits under 20,000 (at most 9,300 there).
WS_CONNECTIONS=${WS_CONNECTIONS:-9000}
ACCESS_LOG=${ACCESS_LOG:-1}  # 1: also measure Headland and nginx with their access log on
TLS=${TLS:-1}                # 1: the HTTP/2-over-TLS and TLS handshake scenarios
H2_CLIENTS=${H2_CLIENTS:-10} # h2load connections ...
H2_STREAMS=${H2_STREAMS:-10} # ... and concurrent streams on each
HANDSHAKE_CONCURRENCY=${HANDSHAKE_CONCURRENCY:-$CONNECTIONS}  # ab -c

# Idle connections need file descriptors: one per connection in the client and the server,
# two per WebSocket connection in the proxy, and nginx wants a sixteenth of them spare.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ $((2 * WS_CONNECTIONS * 16 / 15 + 100)) -gt "$(ulimit -n)" ]; then
  echo "WS_CONNECTIONS=$WS_CONNECTIONS: each proxy needs two descriptors per connection (and nginx a sixteenth more), and the limit of open files here is $(ulimit -n)" >&2
  exit 1
fi

missing=()
for pair in nginx:nginx haproxy:haproxy caddy:caddy wrk:wrk nghttp2-client:h2load apache2-utils:ab openssl:openssl; do
  command -v "${pair#*:}" >/dev/null 2>&1 || missing+=("${pair%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi
# The binary measured: a given one as it is, else the checkout's release build (built if
# missing).
if [ -n "${HEADLAND_BIN:-}" ]; then
  [ -x "$HEADLAND_BIN" ] || { echo "HEADLAND_BIN=$HEADLAND_BIN is not an executable file" >&2; exit 1; }
  headland=$HEADLAND_BIN
else
  [ -x target/release/headland ] || cargo build --release
  headland=$PWD/target/release/headland
fi

# shellcheck source=lib.sh
source benches/compare/lib.sh

upstream_port=$BASE_PORT
start_upstream "$upstream_port"

# headland_config DIR PORT-LINE LOG-OUTPUT [EXTRA] [UPSTREAM-PORT] [UPGRADED-IDLE]: a Headland
# config proxying everything to the upstream (UPSTREAM-PORT, by default the nginx one).
# PORT-LINE is the [listen] body (http = [...] / https = [...]). UPGRADED-IDLE: how long an
# upgraded (WebSocket) connection may carry nothing before Headland closes it, the shorter of
# [http] body_timeout and the pool's read_timeout, so both are set.
headland_config() {
  mkdir -p "$1"
  cat > "$1/headland.toml" <<EOF
[node]
state_dir = "$1"
threads = $n
[listen]
$2
admin = "off"
[access_log]
output = "$3"
[http]
# Every client here is 127.0.0.1: the per-address cap (default 256) would close most of the
# idle connections at once. nginx, HAProxy and Caddy have no such cap by default.
max_connections_per_ip = 1000000
${6:+body_timeout = \"$6\"}
[upstreams.origin]
servers = ["127.0.0.1:${5:-$upstream_port}"]
${6:+read_timeout = \"$6\"}
[[routes]]
host = "*"
upstream = "origin"
max_body_size = "0"
${4:-}
EOF
}
start_headland() {  # DIR -> pid in $started
  RUST_LOG=error "$headland" run --config "$1/headland.toml" >/dev/null 2>"$1/stderr.log" & started=$!; pids+=("$started")
}
# nginx_config FILE PORT ACCESS-LOG [LISTEN-OPTIONS EXTRA-SERVER-LINES]
nginx_config() {
  cat > "$1" <<EOF
worker_processes $n;
pid $1.pid;
error_log $1.error.log;
events { worker_connections 16384; }
http {
  access_log $3;
  upstream origin { server 127.0.0.1:$upstream_port; keepalive 64; }
  server {
    listen 127.0.0.1:$2 ${4:-} backlog=4096;
    keepalive_requests 1000000;
    ${5:-}
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
}
# nginx_ws_config FILE PORT: nginx proxying WebSocket upgrades to ws_upstream.py as its
# documentation says to (https://nginx.org/en/docs/http/websocket.html), with a proxied
# connection allowed to stay silent an hour (proxy_read_timeout, 60 s by default, counts on
# upgraded connections too). Each connection takes two of worker_connections, and once fewer
# than a sixteenth of them are free nginx closes connections still waiting for their request
# ("worker_connections are not enough, reusing connections": the client sees a reset), so
# worker_connections is all the descriptors there are.
nginx_ws_config() {
  cat > "$1" <<EOF
worker_processes $n;
pid $1.pid;
error_log $1.error.log;
events { worker_connections $(ulimit -n); }
http {
  access_log off;
  server {
    listen 127.0.0.1:$2 backlog=4096;
    location / {
      proxy_pass http://127.0.0.1:$ws_port;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host \$host;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }
  }
}
EOF
}
# haproxy_config FILE BIND-LINE [GLOBAL-LINES] [UPSTREAM-PORT] [DEFAULTS-LINES]
haproxy_config() {
  cat > "$1" <<EOF
global
  nbthread $n
  maxconn 9900
  ${3:-}
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  ${5:-}
  option http-keep-alive
  http-reuse always
frontend fe
  $2
  option forwardfor
  default_backend origin
backend origin
  server s1 127.0.0.1:${4:-$upstream_port}
EOF
}
# caddy_config FILE SITE-ADDRESS [UPSTREAM-PORT] [GLOBAL-LINES] [SITE-LINES]: Caddy as an
# operator comparing it would set it up: no admin endpoint, no automatic HTTPS (no ACME, no
# redirect listener: the certificate is given), no HTTP/3 listener, no access log (Caddy
# writes none without a `log` directive), keep-alive to the upstream with as many idle
# connections kept as nginx's `keepalive 64`. A site address without a host name, so no Host
# matcher: a request for another name would get Caddy's empty 200, which is no measurement.
# grace_period: on SIGTERM Caddy waits for active connections, by default without end.
caddy_config() {
  cat > "$1" <<EOF
{
	admin off
	auto_https off
	grace_period 1s
	servers {
		protocols h1 h2
	}
	${4:-}
}
$2 {
	bind 127.0.0.1
	${5:-}
	reverse_proxy 127.0.0.1:${3:-$upstream_port} {
		transport http {
			keepalive_idle_conns_per_host 64
		}
	}
}
EOF
}
start_caddy() {  # CADDYFILE -> pid in $started
  # Its autosave and storage go to the work directory, not ~/.config and ~/.local/share.
  GOMAXPROCS=$n XDG_CONFIG_HOME="$work/caddy" XDG_DATA_HOME="$work/caddy" \
    caddy run --config "$1" --adapter caddyfile >/dev/null 2>"$1.log" & started=$!; pids+=("$started")
}

start_proxies() {  # $1 = workers
  n=$1
  hl_port=$((BASE_PORT + 1)); ngx_port=$((BASE_PORT + 2)); hap_port=$((BASE_PORT + 3))
  hl_log_port=$((BASE_PORT + 4)); ngx_log_port=$((BASE_PORT + 5)); cd_port=$((BASE_PORT + 9))
  headland_config "$work/hl" "http = [\"127.0.0.1:$hl_port\"]" off
  start_headland "$work/hl"; hl_pid=$started
  nginx_config "$work/proxy-nginx.conf" "$ngx_port" off
  nginx -c "$work/proxy-nginx.conf" -g "daemon off;" & ngx_pid=$!; pids+=("$ngx_pid")
  haproxy_config "$work/haproxy.cfg" "bind 127.0.0.1:$hap_port"
  haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & hap_pid=$!; pids+=("$hap_pid")
  caddy_config "$work/Caddyfile" "http://:$cd_port"
  start_caddy "$work/Caddyfile"; cd_pid=$started
  wait_port "$hl_port"; wait_port "$ngx_port"; wait_port "$hap_port"; wait_port "$cd_port"
  log_pids=()
  if [ "$n" = "$first_workers" ] && [ "$ACCESS_LOG" = 1 ]; then
    # The same servers with their access log written to a file: Headland's JSON lines
    # (metrics are always on), nginx's default combined format (one write per request).
    headland_config "$work/hl-log" "http = [\"127.0.0.1:$hl_log_port\"]" "$work/hl-log/access.log"
    start_headland "$work/hl-log"; hl_log_pid=$started
    nginx_config "$work/proxy-nginx-log.conf" "$ngx_log_port" "$work/nginx-access.log"
    nginx -c "$work/proxy-nginx-log.conf" -g "daemon off;" & ngx_log_pid=$!; pids+=("$ngx_log_pid")
    log_pids=("$hl_log_pid" "$ngx_log_pid")
    wait_port "$hl_log_port"; wait_port "$ngx_log_port"
  fi
}

stop_proxies() {
  kill "$hl_pid" "$ngx_pid" "$hap_pid" "$cd_pid" "${log_pids[@]}" 2>/dev/null || true
  wait "$hl_pid" "$ngx_pid" "$hap_pid" "$cd_pid" "${log_pids[@]}" 2>/dev/null || true
}

# The TLS servers: separate processes (their peak RSS is theirs alone), first worker count,
# one self-signed ECDSA P-256 certificate for bench.test. Clients connect to 127.0.0.1 and
# send SNI bench.test (h2load) or no usable name (ab, https://127.0.0.1/), so Headland names
# it default_certificate too, and Caddy default_sni.
start_tls_proxies() {
  n=$first_workers
  hlt_port=$((BASE_PORT + 6)); ngxt_port=$((BASE_PORT + 7)); hapt_port=$((BASE_PORT + 8)); cdt_port=$((BASE_PORT + 10))
  if [ ! -f "$work/tls/cert.pem" ]; then
    mkdir -p "$work/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
      -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
      -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
    cat "$work/tls/cert.pem" "$work/tls/key.pem" > "$work/tls/haproxy.pem"
    chmod 755 "$work/tls"; chmod 644 "$work/tls/"*.pem  # nginx loads them as root anyway
  fi
  headland_config "$work/hl-tls" "http = []
https = [\"127.0.0.1:$hlt_port\"]" off "[tls]
default_certificate = \"bench.test\"
[[certificates]]
names = [\"bench.test\"]
cert_file = \"$work/tls/cert.pem\"
key_file = \"$work/tls/key.pem\""
  start_headland "$work/hl-tls"; hlt_pid=$started
  # nginx and HAProxy follow the client's cipher order, as rustls does by default.
  nginx_config "$work/proxy-nginx-tls.conf" "$ngxt_port" off "ssl http2" \
    "ssl_certificate $work/tls/cert.pem; ssl_certificate_key $work/tls/key.pem; ssl_protocols TLSv1.2 TLSv1.3;"
  nginx -c "$work/proxy-nginx-tls.conf" -g "daemon off;" & ngxt_pid=$!; pids+=("$ngxt_pid")
  haproxy_config "$work/haproxy-tls.cfg" \
    "bind 127.0.0.1:$hapt_port ssl crt $work/tls/haproxy.pem alpn h2,http/1.1 prefer-client-ciphers" \
    "stats socket $work/haproxy-tls.sock mode 600 level admin"
  haproxy -f "$work/haproxy-tls.cfg" -db >/dev/null 2>&1 & hapt_pid=$!; pids+=("$hapt_pid")
  # Caddy's cipher choice is Go's own (TLS 1.3 suites cannot be configured).
  caddy_config "$work/Caddyfile-tls" "https://:$cdt_port" "" "default_sni bench.test" \
    "tls $work/tls/cert.pem $work/tls/key.pem"
  start_caddy "$work/Caddyfile-tls"; cdt_pid=$started
  wait_port "$hlt_port"; wait_port "$ngxt_port"; wait_port "$hapt_port"; wait_port "$cdt_port"
}
stop_tls_proxies() {
  kill "$hlt_pid" "$ngxt_pid" "$hapt_pid" "$cdt_pid" 2>/dev/null || true
  wait "$hlt_pid" "$ngxt_pid" "$hapt_pid" "$cdt_pid" 2>/dev/null || true
}

# The WebSocket servers: fresh processes (nothing before them grew their heap), first worker
# count, each forwarding every upgrade to ws_upstream.py and leaving a silent upgraded
# connection open for an hour, far past the measurement. Caddy closes none by default.
start_ws_proxies() {
  n=$first_workers
  hlw_port=$((BASE_PORT + 12)); ngxw_port=$((BASE_PORT + 13)); hapw_port=$((BASE_PORT + 14)); cdw_port=$((BASE_PORT + 15))
  headland_config "$work/hl-ws" "http = [\"127.0.0.1:$hlw_port\"]" off "" "$ws_port" 1h
  start_headland "$work/hl-ws"; hlw_pid=$started
  nginx_ws_config "$work/proxy-nginx-ws.conf" "$ngxw_port"
  nginx -c "$work/proxy-nginx-ws.conf" -g "daemon off;" & ngxw_pid=$!; pids+=("$ngxw_pid")
  # timeout tunnel replaces client and server timeouts once a connection is upgraded.
  haproxy_config "$work/haproxy-ws.cfg" "bind 127.0.0.1:$hapw_port" "" "$ws_port" "timeout tunnel 1h"
  haproxy -f "$work/haproxy-ws.cfg" -db >/dev/null 2>&1 & hapw_pid=$!; pids+=("$hapw_pid")
  caddy_config "$work/Caddyfile-ws" "http://:$cdw_port" "$ws_port"
  start_caddy "$work/Caddyfile-ws"; cdw_pid=$started
  wait_port "$hlw_port"; wait_port "$ngxw_port"; wait_port "$hapw_port"; wait_port "$cdw_port"
}
stop_ws_proxies() {
  kill "$hlw_pid" "$ngxw_pid" "$hapw_pid" "$cdw_pid" 2>/dev/null || true
  wait "$hlw_pid" "$ngxw_pid" "$hapw_pid" "$cdw_pid" 2>/dev/null || true
}
haproxy_info() {  # SOCKET FIELD: one field of HAProxy's "show info"
  python3 - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show info\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
for line in data.decode().splitlines():
    if line.split(":")[0] == sys.argv[2]:
        print(line.split(":", 1)[1].strip())
EOF
}
passive_opens() { awk '/^Tcp:/ { if (h) { print $7; exit } h = 1 }' /proc/net/snmp; }

# Every measure appends "name rps p50_ms p99_ms cpu_per_unit rss_mib [extra...]" to $results.
cpu_per() {  # TICKS REQUESTS UNIT -> CPU seconds per UNIT requests
  awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" -v u="$3" 'BEGIN { printf "%.3f", (t / hz) * u / n }'
}
rss_mib() { awk -v k="$(peak_rss_kib "$1")" 'BEGIN { printf "%.1f", k / 1024 }'; }

# measure NAME PID PORT PATH: wrk, HTTP/1.1 keep-alive
measure() {
  local name=$1 pid=$2 port=$3 path=$4 out before after requests rps p50 p99 errors
  before=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port$path")
  [ -z "${DEBUG_WRK:-}" ] || echo "$out" >&2
  after=$(cpu_ticks "$pid")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
  # A benchmark of error pages measures nothing: stop rather than print misleading numbers.
  [ -z "$errors" ] || { echo "$name $path: $errors" >&2; exit 1; }
  printf '%s %s %s %s %s %s\n' "$name" "$rps" "$(to_ms "$p50")" "$(to_ms "$p99")" \
    "$(cpu_per "$((after - before))" "$requests" 100000)" "$(rss_mib "$pid")" >> "$results"
}
to_ms() {  # wrk prints 1.23ms, 456.00us or 1.20s
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

# measure_h2 NAME PID PORT: h2load, HTTP/2 over TLS, GET /small; extra columns mean_ms max_ms
measure_h2() {
  local name=$1 pid=$2 port=$3 out before after requests rps p50 p99 mean max
  before=$(cpu_ticks "$pid")
  rm -f "$work/h2load.log"  # h2load appends to it
  out=$(h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$DURATION" --log-file="$work/h2load.log" \
    --connect-to="127.0.0.1:$port" "https://bench.test:$port/small" 2>&1)
  [ -z "${DEBUG_WRK:-}" ] || echo "$out" >&2
  after=$(cpu_ticks "$pid")
  grep -q '^Application protocol: h2$' <<<"$out" || { echo "$name: no HTTP/2 by ALPN" >&2; echo "$out" >&2; exit 1; }
  awk '/^requests:/ && ($10 != 0 || $12 != 0 || $14 != 0) { bad = 1 } /^status codes:/ && ($5 + $7 + $9 != 0) { bad = 1 } END { exit bad }' <<<"$out" \
    || { echo "$name: h2load saw failures:" >&2; grep -E '^(requests|status codes):' <<<"$out" >&2; exit 1; }
  [ -n "${negotiated[$name]:-}" ] || negotiated[$name]=$(awk '/^TLS Protocol:/ {p = $3} /^Cipher:/ {c = $2} /^Server Temp Key:/ {k = $4} /^Application protocol:/ {a = $3} END { print p, c, k, a }' <<<"$out")
  requests=$(awk '/^requests:/ {print $8}' <<<"$out")   # succeeded
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  # Percentiles over every request's time (µs, third column of the log).
  read -r p50 p99 mean max < <(cut -f3 "$work/h2load.log" | sort -n | awk '{ a[NR] = $1; s += $1 } END {
    printf "%.3f %.3f %.3f %.3f\n", a[int(NR * 0.50) + 1] / 1000, a[int(NR * 0.99) + 1] / 1000, s / NR / 1000, a[NR] / 1000 }')
  printf '%s %s %s %s %s %s %s %s\n' "$name" "$rps" "$p50" "$p99" \
    "$(cpu_per "$((after - before))" "$requests" 100000)" "$(rss_mib "$pid")" "$mean" "$max" >> "$results"
}

# measure_hs NAME PID PORT: ab over HTTPS without keep-alive: one new connection and one full
# TLS handshake per request. Extra column: new TCP connections per request (kernel count).
measure_hs() {
  local name=$1 pid=$2 port=$3 out before after opens_before opens_after requests rps
  before=$(cpu_ticks "$pid"); opens_before=$(passive_opens)
  # ab exits non-zero on a socket error; say which one instead of leaving silently (set -e).
  out=$(ab -q -t "$DURATION" -n "$((DURATION * 20000))" -c "$HANDSHAKE_CONCURRENCY" "https://127.0.0.1:$port/small" 2>&1) \
    || { echo "$name: ab failed:" >&2; tail -5 <<<"$out" >&2; exit 1; }
  [ -z "${DEBUG_WRK:-}" ] || echo "$out" >&2
  after=$(cpu_ticks "$pid"); opens_after=$(passive_opens)
  awk '/^Failed requests:/ && $3 != 0 { bad = 1 } /^Non-2xx/ { bad = 1 } END { exit bad }' <<<"$out" \
    || { echo "$name: ab saw failures:" >&2; grep -E '^(Complete|Failed|Non-2xx)' <<<"$out" >&2; exit 1; }
  [ -n "${negotiated_hs[$name]:-}" ] || negotiated_hs[$name]=$(awk -F'[:,]' '/^SSL\/TLS Protocol:/ { gsub(/ /, "", $2); print $2, $3 }' <<<"$out")
  requests=$(awk '/^Complete requests:/ {print $3}' <<<"$out")
  rps=$(awk '/^Requests per second:/ {print $4}' <<<"$out")
  printf '%s %s %s %s %s %s %s\n' "$name" "$rps" \
    "$(awk '$1 == "50%" {print $2}' <<<"$out")" "$(awk '$1 == "99%" {print $2}' <<<"$out")" \
    "$(cpu_per "$((after - before))" "$requests" 1000)" "$(rss_mib "$pid")" \
    "$(awk -v o="$((opens_after - opens_before))" -v n="$requests" 'BEGIN { printf "%.2f", o / n }')" >> "$results"
}

median() {  # column $2 of lines for server $1
  awk -v s="$1" -v c="$2" '$1 == s {print $c}' "$results" | sort -n | awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# rounds "SERVER..." COMMAND: runs COMMAND SERVER for each server, ROUNDS times, the order
# reversed every other round so that drift hits all equally.
rounds() {
  local servers=$1 cmd=$2 round server order
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order=$servers; else order=$(tr ' ' '\n' <<<"$servers" | tac | tr '\n' ' '); fi
    for server in $order; do "$cmd" "$server"; done
  done
}
http_one() {
  case $1 in
    headland) measure headland "$hl_pid" "$hl_port" "$path" ;;
    headland-log) measure headland-log "$hl_log_pid" "$hl_log_port" "$path" ;;
    nginx) measure nginx "$ngx_pid" "$ngx_port" "$path" ;;
    nginx-log) measure nginx-log "$ngx_log_pid" "$ngx_log_port" "$path" ;;
    haproxy) measure haproxy "$hap_pid" "$hap_port" "$path" ;;
    caddy) measure caddy "$cd_pid" "$cd_port" "$path" ;;
    direct) measure direct "$(cat "$work/upstream.pid")" "$upstream_port" "$path" ;;
  esac
}
h2_one() {
  case $1 in
    headland) measure_h2 headland "$hlt_pid" "$hlt_port" ;;
    nginx) measure_h2 nginx "$ngxt_pid" "$ngxt_port" ;;
    haproxy) measure_h2 haproxy "$hapt_pid" "$hapt_port" ;;
    caddy) measure_h2 caddy "$cdt_pid" "$cdt_port" ;;
  esac
}
hs_one() {
  case $1 in
    headland) measure_hs headland "$hlt_pid" "$hlt_port" ;;
    nginx) measure_hs nginx "$ngxt_pid" "$ngxt_port" ;;
    haproxy) measure_hs haproxy "$hapt_pid" "$hapt_port"
      # HAProxy's own count over the last second, read before it decays: 0 = no resumption.
      hap_reuse+=("$(haproxy_info "$work/haproxy-tls.sock" SslFrontendSessionReuse_pct)") ;;
    caddy) measure_hs caddy "$cdt_pid" "$cdt_port" ;;
  esac
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) printf "n/a"; else printf "%.2f", a / b }'; }
# versus COLUMN: Headland's median of COLUMN over each other proxy's.
versus() {
  local h; h=$(median headland "$1")
  echo "Headland/nginx $(ratio "$h" "$(median nginx "$1")"), Headland/HAProxy $(ratio "$h" "$(median haproxy "$1")"), Headland/Caddy $(ratio "$h" "$(median caddy "$1")")"
}

# rss_row NAME BEFORE-KIB WITH-KIB N: prints and records (in $results: name, MiB before and
# with, KiB per connection) what N held connections cost.
rss_row() {
  local row
  row=$(awk -v a="$2" -v b="$3" -v n="$4" 'BEGIN { printf "%.1f %.1f %.2f", a / 1024, b / 1024, (b - a) / n }')
  echo "$1 $row" >> "$results"
  # shellcheck disable=SC2086 # the three numbers of $row are the three columns
  printf '%-9s %14s %20s %16s\n' "$1" $row
}

# idle NAME PID PORT: holds IDLE_CONNECTIONS keep-alive connections open on the server and
# records its RSS before and with them; every one must still be open once RSS is read.
idle() {
  local name=$1 pid=$2 port=$3 before with open
  before=$(rss_kib "$pid")
  hold "$name" "$port" "$IDLE_CONNECTIONS" idle.test keepalive
  sleep 1
  with=$(rss_kib "$pid")
  open=$(hold_open)
  release
  [ "$open" = "$IDLE_CONNECTIONS" ] \
    || { echo "$name: only $open of $IDLE_CONNECTIONS idle connections were still open when its RSS was read" >&2; exit 1; }
  rss_row "$name" "$before" "$with" "$IDLE_CONNECTIONS"
}

ws_upstream_stats() {  # "upgrades U open O", as ws_upstream.py counts them
  local fd
  exec {fd}<>"/dev/tcp/127.0.0.1/$ws_port"
  printf 'GET /stats HTTP/1.1\r\nHost: stats\r\n\r\n' >&"$fd"
  tail -n 1 <&"$fd"
  exec {fd}>&-
}
# ws_idle NAME PID PORT: holds WS_CONNECTIONS idle WebSocket connections through the server
# to ws_upstream.py and records its RSS before and with them. The run stops unless the client
# got a 101 with the right accept key on every one, the upstream saw every upgrade, and all
# were still open on both sides once RSS was read.
ws_idle() {
  local name=$1 pid=$2 port=$3 before with open upgrades_before upgrades upstream_open
  read -r _ upgrades_before _ _ <<<"$(ws_upstream_stats)"
  before=$(rss_kib "$pid")
  hold "$name" "$port" "$WS_CONNECTIONS" ws.test websocket
  sleep 1
  with=$(rss_kib "$pid")
  open=$(hold_open)
  read -r _ upgrades _ upstream_open <<<"$(ws_upstream_stats)"
  release
  if [ "$open" != "$WS_CONNECTIONS" ] || [ $((upgrades - upgrades_before)) != "$WS_CONNECTIONS" ] || [ "$upstream_open" != "$WS_CONNECTIONS" ]; then
    echo "$name: of $WS_CONNECTIONS WebSocket connections, the upstream saw $((upgrades - upgrades_before)) upgrades; when RSS was read, $open were open at the client and $upstream_open at the upstream" >&2
    exit 1
  fi
  rss_row "$name" "$before" "$with" "$WS_CONNECTIONS"
  # The next server starts with no connection left at the upstream.
  for _ in $(seq 1 100); do
    read -r _ _ _ upstream_open <<<"$(ws_upstream_stats)"
    [ "$upstream_open" != 0 ] || return 0
    sleep 0.1
  done
  echo "$name: $upstream_open upstream WebSocket connections still open 10 s after the clients closed theirs" >&2
  exit 1
}

first_workers=$(echo "$WORKERS" | awk '{print $1}')
declare -A negotiated=() negotiated_hs=()
hap_reuse=()
started_at=$(date +%s)
wait_port "$upstream_port"
echo "Headland $("$headland" --version | awk '{print $2}') ($headland) vs $(nginx -v 2>&1 | sed 's/.*version: //') vs $(haproxy -v | head -1 | awk '{print $1, $3}') vs Caddy $(caddy version | awk '{print $1}') (GOMAXPROCS = workers), wrk $CONNECTIONS connections, ${DURATION}s x $ROUNDS rounds"
echo "machine: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), loopback, no CPU pinning (clients, upstream and proxy share the cores)"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $WORKERS; do
  start_proxies "$n"
  for path in /small /64k; do
    results="$work/results-$n-${path#/}"
    : > "$results"
    servers="headland nginx haproxy caddy direct"
    if [ "$path" = /small ] && [ ${#log_pids[@]} -gt 0 ]; then servers="headland headland-log nginx nginx-log haproxy caddy direct"; fi
    rounds "$servers" http_one
    echo
    echo "== $n worker(s), HTTP/1.1 keep-alive, GET $path ($( [ "$path" = /small ] && echo '20 B' || echo '64 KiB') body), medians"
    printf '%-12s %12s %9s %9s %15s %9s\n' server "req/s" "p50 ms" "p99 ms" "CPU s/100k req" "RSS MiB"
    for server in $servers; do
      printf '%-12s %12s %9s %9s %15s %9s\n' "$server" "$(median "$server" 2)" "$(median "$server" 3)" "$(median "$server" 4)" "$(median "$server" 5)" "$(median "$server" 6)"
    done
    hl=$(median headland 2); ng=$(median nginx 2); hl_cpu=$(median headland 5); ng_cpu=$(median nginx 5)
    echo "ratios: req/s $(versus 2), Headland/direct $(ratio "$hl" "$(median direct 2)"); CPU per request $(versus 5)"
    if [ "$path" = /small ] && [ ${#log_pids[@]} -gt 0 ]; then
      echo "access log on / off: Headland req/s $(ratio "$(median headland-log 2)" "$hl"), CPU per request $(ratio "$(median headland-log 5)" "$hl_cpu"); nginx req/s $(ratio "$(median nginx-log 2)" "$ng"), CPU per request $(ratio "$(median nginx-log 5)" "$ng_cpu")"
      echo "  (log lines written: Headland $(wc -l < "$work/hl-log/access.log"), nginx $(wc -l < "$work/nginx-access.log"); target: Headland req/s ratio >= 0.90)"
    fi
  done
  if [ "$n" = "$first_workers" ] && [ "$IDLE_CONNECTIONS" -gt 0 ]; then
    results="$work/results-idle"; : > "$results"
    echo
    echo "== $n worker(s), $IDLE_CONNECTIONS idle keep-alive client connections, RSS"
    printf '%-9s %14s %20s %16s\n' server "RSS before MiB" "RSS with idle MiB" "KiB per conn"
    idle headland "$hl_pid" "$hl_port"
    idle nginx "$ngx_pid" "$ngx_port"
    idle haproxy "$hap_pid" "$hap_port"
    idle caddy "$cd_pid" "$cd_port"
    echo "ratios: KiB per connection $(versus 4); all $IDLE_CONNECTIONS still open when RSS was read"
  fi
  stop_proxies
done

if [ "$WS_CONNECTIONS" -gt 0 ]; then
  ws_port=$((BASE_PORT + 11))
  python3 benches/compare/ws_upstream.py "$ws_port" & pids+=("$!")
  wait_port "$ws_port"
  start_ws_proxies
  results="$work/results-ws"; : > "$results"
  echo
  echo "== $first_workers worker(s), $WS_CONNECTIONS idle proxied WebSocket connections (client and upstream sides held), RSS"
  printf '%-9s %14s %20s %16s\n' server "RSS before MiB" "RSS with idle MiB" "KiB per conn"
  ws_idle headland "$hlw_pid" "$hlw_port"
  ws_idle nginx "$ngxw_pid" "$ngxw_port"
  ws_idle haproxy "$hapw_pid" "$hapw_port"
  ws_idle caddy "$cdw_pid" "$cdw_port"
  echo "ratios: KiB per connection $(versus 4); each: $WS_CONNECTIONS upgrades seen by the upstream, $WS_CONNECTIONS 101s with the right accept key at the client, all open on both sides when RSS was read"
  stop_ws_proxies
fi

if [ "$TLS" = 1 ]; then
  start_tls_proxies
  results="$work/results-h2"; : > "$results"
  rounds "headland nginx haproxy caddy" h2_one
  echo
  echo "== $first_workers worker(s), HTTP/2 over TLS (ALPN h2, ECDSA P-256), h2load $H2_CLIENTS connections x $H2_STREAMS streams, GET /small, upstream HTTP/1.1 keep-alive, medians"
  printf '%-12s %12s %9s %9s %9s %9s %15s %9s\n' server "req/s" "p50 ms" "p99 ms" "mean ms" "max ms" "CPU s/100k req" "RSS MiB"
  for server in headland nginx haproxy caddy; do
    printf '%-12s %12s %9s %9s %9s %9s %15s %9s\n' "$server" "$(median "$server" 2)" "$(median "$server" 3)" "$(median "$server" 4)" "$(median "$server" 7)" "$(median "$server" 8)" "$(median "$server" 5)" "$(median "$server" 6)"
  done
  echo "ratios: req/s $(versus 2); CPU per request $(versus 5)"
  echo "negotiated: headland ${negotiated[headland]}; nginx ${negotiated[nginx]}; haproxy ${negotiated[haproxy]}; caddy ${negotiated[caddy]}"

  results="$work/results-hs"; : > "$results"
  rounds "headland nginx haproxy caddy" hs_one
  echo
  echo "== $first_workers worker(s), new TLS connections: ab -c $HANDSHAKE_CONCURRENCY over HTTPS without keep-alive (HTTP/1.0, a full handshake per request), GET /small, medians"
  printf '%-12s %14s %9s %9s %17s %9s %14s\n' server "handshakes/s" "p50 ms" "p99 ms" "CPU s/1k hshake" "RSS MiB" "TCP conns/req"
  for server in headland nginx haproxy caddy; do
    printf '%-12s %14s %9s %9s %17s %9s %14s\n' "$server" "$(median "$server" 2)" "$(median "$server" 3)" "$(median "$server" 4)" "$(median "$server" 5)" "$(median "$server" 6)" "$(median "$server" 7)"
  done
  echo "ratios: handshakes/s $(versus 2); CPU per handshake $(versus 5)"
  echo "negotiated: headland ${negotiated_hs[headland]}; nginx ${negotiated_hs[nginx]}; haproxy ${negotiated_hs[haproxy]}; caddy ${negotiated_hs[caddy]}; HAProxy's SslFrontendSessionReuse_pct (an estimate over the last second) after each of its runs: ${hap_reuse[*]} (about 0: full handshakes; a client resuming sessions, such as wrk, shows about 100)"
  stop_tls_proxies
fi
echo
echo "total time: $(( $(date +%s) - started_at )) s"
