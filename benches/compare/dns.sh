#!/usr/bin/env bash
# Headland's authoritative DNS beside gdnsd 3.x (plugin_geoip, city-auto-mode) on this
# machine, in the same run: both serve the same example.com zone (the static records of
# benches/compare/gdnsd/example.com.zone) and the geo name api.example.com answered from
# geoip/test-city.mmdb by nearest region (apac 192.0.2.10, na 198.51.100.10, eu 203.0.113.10),
# with EDNS Client Subnet. dig first checks that both give the same answers; then dnsperf
# drives the same UDP load at each in turn, per scenario:
#   static        a mix of static queries (A, AAAA, MX, TXT, SOA, CNAME, NXDOMAIN), EDNS, no ECS
#   geo           api.example.com A, EDNS, no ECS (the resolver's address, 127.0.0.1, is looked up)
#   geo-ecs-apac  api.example.com A with ECS 10.1.0.0/16 (MY -> apac)
#   geo-ecs-na    api.example.com A with ECS 10.2.0.0/16 (US -> na)
#   geo-ecs-eu    api.example.com A with ECS 10.3.0.0/16 (DE -> eu)
# dnsperf 2.10 sends one fixed EDNS option per run (-E), hence one run per ECS subnet.
# Prints queries/s, lost queries, average/max latency and its standard deviation, server CPU
# per query and peak RSS for each, and the ratios Headland/gdnsd.
#
#   benches/compare/dns.sh                          # defaults below, about 3 minutes
#   DURATION=5 SCENARIOS="static geo-ecs-eu" benches/compare/dns.sh
#   SERVERS=gdnsd benches/compare/dns.sh            # gdnsd only (no Headland needed)
#   HEADLAND=/path/to/headland benches/compare/dns.sh
#
# CPU placement (PIN=1, the default on 2+ cores): each server runs on CPU 0 only and dnsperf on
# the other CPUs, the same for both servers, so the client never steals the server's core. With
# PIN=0 nothing is pinned and the servers share every core with dnsperf. THREADS sets gdnsd's
# udp_threads/tcp_threads and Headland's [node] threads (default 1).
#
# Loopback only; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

DURATION=${DURATION:-15}        # seconds of load per server and scenario (dnsperf -l)
CLIENTS=${CLIENTS:-4}           # dnsperf -c: client sockets (spread over SO_REUSEPORT threads)
OUTSTANDING=${OUTSTANDING:-100} # dnsperf -q: queries in flight
THREADS=${THREADS:-1}           # server threads
PIN=${PIN:-1}                   # 1: server on CPU 0, dnsperf on the other CPUs
BASE_PORT=${BASE_PORT:-18950}
SERVERS=${SERVERS:-"headland gdnsd"}
SCENARIOS=${SCENARIOS:-"static geo geo-ecs-apac geo-ecs-na geo-ecs-eu"}
GEOIP_DB=${GEOIP_DB:-$repo/geoip/test-city.mmdb}

want() { [[ " $SERVERS " == *" $1 "* ]]; }

# Debian packages, installed only when a command is missing.
missing=()
for pair in gdnsd:gdnsd dnsperf:dnsperf bind9-dnsutils:dig util-linux:taskset; do
  command -v "${pair#*:}" >/dev/null 2>&1 || missing+=("${pair%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Installing gdnsd on a systemd host also starts the packaged service on port 53; it does not
  # get in the way here (other ports) but you may want `systemctl disable --now gdnsd`.
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi
[ -r "$GEOIP_DB" ] || { echo "no GeoIP database at $GEOIP_DB (see geoip/README.md)" >&2; exit 1; }

headland=""
if want headland; then
  if [ -n "${HEADLAND:-}" ]; then
    headland=$HEADLAND
  else
    [ -x target/release/headland ] || cargo build --release
    headland=$repo/target/release/headland
  fi
  [ -x "$headland" ] || { echo "no Headland binary at $headland" >&2; exit 1; }
fi

# shellcheck source=benches/compare/lib.sh
source benches/compare/lib.sh
trap 'exit 130' INT TERM

server_cpus="" client_cpus=""
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  last=$(( $(nproc) - 1 )); others=1; [ "$last" -eq 1 ] || others=1-$last
  server_cpus="taskset -c 0"; client_cpus="taskset -c $others"
  placement="server on CPU 0, dnsperf on CPU $others"
else
  placement="no CPU pinning"
fi

hl_port=$((BASE_PORT + 1)); gd_port=$((BASE_PORT + 2)); hl_admin_port=$((BASE_PORT + 3))
zone_src=benches/compare/gdnsd/example.com.zone

# ---- gdnsd: its own config directory (config + zones/), run_dir and state_dir under $work.
start_gdnsd() {
  local dir=$work/gdnsd
  mkdir -p "$dir/zones"
  sed -e "s|@PORT@|$gd_port|g" -e "s|@DIR@|$dir|g" -e "s|@THREADS@|$THREADS|g" \
      -e "s|@GEOIP_DB@|$GEOIP_DB|g" benches/compare/gdnsd/config.in > "$dir/config"
  { cat "$zone_src"; echo; echo "; geo name: plugin_geoip resource 'api' (see config)"; echo "api 30 DYNA geoip!api"; } \
    > "$dir/zones/example.com"
  gdnsd -c "$dir" checkconf > "$work/gdnsd-checkconf.log" 2>&1 \
    || { echo "gdnsd rejects its config:" >&2; cat "$work/gdnsd-checkconf.log" >&2; exit 1; }
  $server_cpus gdnsd -c "$dir" start > "$work/gdnsd.log" 2>&1 & gd_pid=$!; pids+=($gd_pid)
  wait_dns gdnsd "$gd_pid" "$gd_port" "$work/gdnsd.log" \
    || { echo "gdnsd did not start; its log:" >&2; tail -20 "$work/gdnsd.log" >&2; exit 1; }
}

# ---- Headland: the same zone file; api.example.com is a [dns.zones.*.geo] name.
start_headland() {
  local dir=$work/headland
  mkdir -p "$dir/state"
  cp "$zone_src" "$dir/example.com.zone"
  cat > "$dir/headland.toml" <<EOF
[node]
name = "bench"
region = "eu"
state_dir = "$dir/state"
threads = $THREADS

[listen]
http = []
dns = ["127.0.0.1:$hl_port"]
admin = "127.0.0.1:$hl_admin_port"

[access_log]
output = "off"

[geoip]
database = "$GEOIP_DB"

[regions.apac]
addresses = ["192.0.2.10"]
location = { lat = 3.14, lon = 101.69 }
[regions.na]
addresses = ["198.51.100.10"]
location = { lat = 39.0, lon = -77.5 }
[regions.eu]
addresses = ["203.0.113.10"]
location = { lat = 50.1, lon = 8.7 }

[dns.zones."example.com"]
file = "$dir/example.com.zone"
[dns.zones."example.com".geo.api]
regions = ["apac", "na", "eu"]
ttl = 30
policy = "nearest"

# Response rate limiting off: dnsperf sends hundreds of thousands of identical queries from
# 127.0.0.1, which RRL exists to cut down, and gdnsd has no RRL; the comparison measures
# answering, like for like. (Loopback is also exempt by default; this does not rely on it.)
[dns.rate_limit]
responses_per_second = 0
EOF
  RUST_LOG=${RUST_LOG:-error} $server_cpus "$headland" run --config "$dir/headland.toml" > "$work/headland.log" 2>&1 &
  hl_pid=$!; pids+=($hl_pid)
  if ! wait_dns headland "$hl_pid" "$hl_port" "$work/headland.log"; then
    {
      echo
      echo "Headland did not answer DNS on 127.0.0.1:$hl_port (udp) within 15 s."
      if kill -0 "$hl_pid" 2>/dev/null; then echo "It is running but not answering DNS."
      else wait "$hl_pid" && rc=0 || rc=$?; echo "It exited with status $rc."; fi
      echo "This build may not have the DNS server yet ([listen] dns, [dns.zones.*], [regions.*],"
      echo "[geoip]). Its output, then its config (both removed on exit):"
      tail -30 "$work/headland.log" | sed 's/^/  | /'
      echo "--- headland.toml"; sed 's/^/  | /' "$dir/headland.toml"
      echo "Run SERVERS=gdnsd $0 to measure gdnsd alone."
    } >&2
    exit 1
  fi
}

# wait_dns NAME PID PORT LOG: until the server answers an SOA query over UDP (15 s at most).
wait_dns() {
  local deadline=$((SECONDS + 15))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$2" 2>/dev/null || return 1
    if dig @127.0.0.1 -p "$3" example.com SOA +time=1 +tries=1 +norec 2>/dev/null | grep -q 'status: NOERROR'; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# ---- answers: "STATUS TYPE RDATA ... (sorted; names, TTLs, class left out) [ECS scope]".
answer() {  # PORT NAME TYPE [SUBNET]
  local out ecs=()
  [ -z "${4:-}" ] || ecs=("+subnet=$4")
  out=$(dig @127.0.0.1 -p "$1" "$2" "$3" "${ecs[@]}" +time=2 +tries=1 +norec 2>&1 </dev/null) || { echo "no answer"; return; }
  local status rrs scope
  status=$(awk '/->>HEADER<<-/ {sub(/,$/, "", $6); print $6}' <<<"$out")
  rrs=$(awk '/^;; ANSWER SECTION:/ {a = 1; next} /^$/ {a = 0} a && !/^;/ {$1 = $2 = $3 = ""; sub(/^ +/, ""); print}' <<<"$out" | sort | paste -sd' ' -)
  scope=$(awk '/CLIENT-SUBNET:/ {print $3}' <<<"$out")
  echo "$status ${rrs:--}${scope:+ (ECS $scope)}"
}

verify() {
  local failed=0 label name type subnet expect hl gd
  echo
  echo "== answers (dig) before the load"
  echo "(status, answer records without name/TTL, and ECS as address/source/scope)"
  printf '%-34s %-44s %s\n' query headland gdnsd
  while IFS='|' read -r label name type subnet expect; do
    [ "$subnet" = - ] && subnet=""
    hl="(not run)"; gd="(not run)"
    want headland && hl=$(answer "$hl_port" "$name" "$type" "$subnet")
    want gdnsd && gd=$(answer "$gd_port" "$name" "$type" "$subnet")
    printf '%-34s %-44s %s\n' "$label" "$hl" "$gd"
    # Geo answers with ECS must be the expected region's address on both; other answers
    # (no ECS: where 127.0.0.1 goes; static records) are compared and differences shown.
    for got in "$hl" "$gd"; do
      [ "$got" = "(not run)" ] && continue
      if [ "$expect" != - ] && [[ "$got" != "NOERROR A $expect"* ]]; then
        echo "   ^ expected NOERROR A $expect" >&2; failed=1
      fi
    done
    if want headland && want gdnsd && [ "${hl% (ECS*}" != "${gd% (ECS*}" ]; then
      echo "   ^ the servers differ (records shown with TTLs; compare by hand)"
    fi
  done <<EOF
api A, ECS 10.1.0.0/16|api.example.com|A|10.1.0.0/16|192.0.2.10
api A, ECS 10.2.0.0/16|api.example.com|A|10.2.0.0/16|198.51.100.10
api A, ECS 10.3.0.0/16|api.example.com|A|10.3.0.0/16|203.0.113.10
api A, ECS 10.3.4.0/24|api.example.com|A|10.3.4.0/24|203.0.113.10
api A, ECS 2001:db8:2::/48|api.example.com|A|2001:db8:2::/48|198.51.100.10
api A, ECS 192.0.2.0/24|api.example.com|A|192.0.2.0/24|192.0.2.10
api A, no ECS (127.0.0.1)|api.example.com|A|-|-
www A|www.example.com|A|-|-
www AAAA|www.example.com|AAAA|-|-
docs A (CNAME)|docs.example.com|A|-|-
example.com MX|example.com|MX|-|-
nope A (NXDOMAIN)|nope.example.com|A|-|-
api AAAA (NODATA)|api.example.com|AAAA|-|-
EOF
  [ "$failed" = 0 ] || { echo "wrong geo answers: not measuring" >&2; exit 1; }
}

# ---- load
printf '%s\n' 'www.example.com A' 'www.example.com AAAA' 'example.com MX' 'example.com TXT' \
  'example.com SOA' 'docs.example.com A' 'static.example.com A' 'nope.example.com A' > "$work/static.txt"
echo 'api.example.com A' > "$work/geo.txt"

ecs_option() {  # CIDR (IPv4, prefix a multiple of 8) -> dnsperf -E value: option 8, RFC 7871
  local addr=${1%/*} len=${1#*/} hex i
  IFS=. read -r -a o <<<"$addr"
  hex=$(printf '0001%02x00' "$len")
  for ((i = 0; i < len / 8; i++)); do hex+=$(printf '%02x' "${o[$i]}"); done
  echo "8:$hex"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # all threads of the process
peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# measure SCENARIO SERVER PID PORT -> appends a line to $results
measure() {
  local scenario=$1 name=$2 pid=$3 port=$4 file opts=(-e) out before after
  case $scenario in
    static) file=$work/static.txt ;;
    geo) file=$work/geo.txt ;;
    geo-ecs-apac) file=$work/geo.txt; opts+=(-E "$(ecs_option 10.1.0.0/16)") ;;
    geo-ecs-na) file=$work/geo.txt; opts+=(-E "$(ecs_option 10.2.0.0/16)") ;;
    geo-ecs-eu) file=$work/geo.txt; opts+=(-E "$(ecs_option 10.3.0.0/16)") ;;
    *) echo "unknown scenario $scenario" >&2; exit 1 ;;
  esac
  before=$(cpu_ticks "$pid")
  out=$(timeout $((DURATION + 30)) $client_cpus dnsperf -s 127.0.0.1 -p "$port" -d "$file" -l "$DURATION" \
        -c "$CLIENTS" -q "$OUTSTANDING" -t 2 "${opts[@]}" 2>&1) \
    || { echo "dnsperf against $name failed:" >&2; echo "$out" >&2; exit 1; }
  after=$(cpu_ticks "$pid")
  [ -z "${DEBUG_DNSPERF:-}" ] || echo "$out" >&2
  awk -v s="$name" -v sc="$scenario" -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" -v rss="$(peak_rss_kib "$pid")" '
    /Queries completed:/ { done = $3 }
    /Queries lost:/ { lost = $3 }
    /Response codes:/ { sub(/.*Response codes: */, ""); codes = $0; gsub(/ /, "_", codes) }
    /Queries per second:/ { qps = $4 }
    /Average Latency/ { avg = $4; max = $8; sub(/\)/, "", max) }
    /Latency StdDev/ { sd = $4 }
    END {
      cpu = done > 0 ? (t / hz) * 1e6 / done : 0
      printf "%s %s %.0f %d %.3f %.3f %.3f %.2f %.1f %s\n", sc, s, qps, lost, avg * 1000, max * 1000, sd * 1000, cpu, rss / 1024, codes
    }' <<<"$out" >> "$results"
  # Errors mean the server is not doing the work being measured: stop.
  local codes
  codes=$(col "$scenario" "$name" 10 | tr _ ' ')
  if grep -Eq 'SERVFAIL|REFUSED|FORMERR|NOTIMP|BADVERS' <<<"$codes"; then
    echo "$name, $scenario: error responses: $codes" >&2
    exit 1
  fi
}

col() { awk -v sc="$1" -v s="$2" -v c="$3" '$1 == sc && $2 == s {print $c}' "$results"; }

results=$work/results
: > "$results"
want gdnsd && start_gdnsd
want headland && start_headland
versions=()
want headland && versions+=("Headland $("$headland" --version 2>/dev/null | awk '{print $2}')")
want gdnsd && versions+=("gdnsd $(awk '/gdnsd version/ {print $4; exit}' "$work/gdnsd.log")")
versions=$(printf '%s vs ' "${versions[@]}"); versions=${versions% vs }
echo "$versions, dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}'): UDP, EDNS, $CLIENTS clients x $OUTSTANDING outstanding, ${DURATION}s per run, $THREADS server thread(s)"
echo "machine: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), loopback, $placement"
verify

n=0
for scenario in $SCENARIOS; do
  n=$((n + 1))
  # Alternate which server goes first, so that drift hits both.
  if [ $((n % 2)) -eq 1 ]; then order="headland gdnsd"; else order="gdnsd headland"; fi
  for server in $order; do
    want "$server" || continue
    case $server in
      headland) measure "$scenario" headland "$hl_pid" "$hl_port" ;;
      gdnsd) measure "$scenario" gdnsd "$gd_pid" "$gd_port" ;;
    esac
  done
  echo
  case $scenario in
    static) what="static mix: A, AAAA, MX, TXT, SOA, CNAME, A x2, NXDOMAIN" ;;
    geo) what="api.example.com A, no ECS (client 127.0.0.1)" ;;
    geo-ecs-apac) what="api.example.com A, ECS 10.1.0.0/16 -> apac" ;;
    geo-ecs-na) what="api.example.com A, ECS 10.2.0.0/16 -> na" ;;
    geo-ecs-eu) what="api.example.com A, ECS 10.3.0.0/16 -> eu" ;;
  esac
  echo "== $scenario: $what"
  printf '%-9s %11s %7s %8s %8s %10s %10s %8s  %s\n' server "queries/s" lost "avg ms" "max ms" "stddev ms" "CPU us/q" "RSS MiB" "response codes"
  for server in headland gdnsd; do
    want "$server" || continue
    printf '%-9s %11s %7s %8s %8s %10s %10s %8s  %s\n' "$server" "$(col "$scenario" "$server" 3)" \
      "$(col "$scenario" "$server" 4)" "$(col "$scenario" "$server" 5)" "$(col "$scenario" "$server" 6)" \
      "$(col "$scenario" "$server" 7)" "$(col "$scenario" "$server" 8)" "$(col "$scenario" "$server" 9)" \
      "$(col "$scenario" "$server" 10 | tr _ ' ')"
  done
  if want headland && want gdnsd; then
    awk -v q1="$(col "$scenario" headland 3)" -v q2="$(col "$scenario" gdnsd 3)" \
        -v l1="$(col "$scenario" headland 5)" -v l2="$(col "$scenario" gdnsd 5)" \
        -v c1="$(col "$scenario" headland 8)" -v c2="$(col "$scenario" gdnsd 8)" 'BEGIN {
      printf "ratios Headland/gdnsd: queries/s %.2f, avg latency %.2f, CPU per query %.2f\n", \
        (q2 > 0 ? q1 / q2 : 0), (l2 > 0 ? l1 / l2 : 0), (c2 > 0 ? c1 / c2 : 0) }'
  fi
done

if want headland && want gdnsd; then
  echo
  echo "== summary (markdown)"
  echo "| scenario | Headland q/s | gdnsd q/s | H/gdnsd | avg latency H / gdnsd | CPU per query H/gdnsd | lost H / gdnsd |"
  echo "|---|---|---|---|---|---|---|"
  for scenario in $SCENARIOS; do
    awk -v sc="$scenario" -v q1="$(col "$scenario" headland 3)" -v q2="$(col "$scenario" gdnsd 3)" \
        -v l1="$(col "$scenario" headland 5)" -v l2="$(col "$scenario" gdnsd 5)" \
        -v c1="$(col "$scenario" headland 8)" -v c2="$(col "$scenario" gdnsd 8)" \
        -v x1="$(col "$scenario" headland 4)" -v x2="$(col "$scenario" gdnsd 4)" 'BEGIN {
      printf "| %s | %d | %d | %.2f | %s / %s ms | %.2f | %s / %s |\n", sc, q1, q2, (q2 > 0 ? q1 / q2 : 0), l1, l2, (c2 > 0 ? c1 / c2 : 0), x1, x2 }'
  done
fi
