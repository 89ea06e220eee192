#!/usr/bin/env bash
# What a Headland node costs its etcd: starts etcd on loopback and NODES nodes (127.0.0.21…)
# sharing it, each with a region, a health-checked pool and a geo name, lets them run
# SECONDS seconds at rest, then flips one node's app down and up CHANGES times, and prints
# etcd's own counters (gRPC messages received and sent by method, bytes in and out) per node and second.
# Used for the 50-edge estimate in deploy/README.md.
#
#   benches/cluster/etcd-traffic.sh [HEADLAND_BINARY]     (default: target/release/headland,
#                                                          else target/debug/headland)
# Needs etcd (Debian etcd-server), python3, curl.
set -euo pipefail

NODES=${NODES:-3}
SECONDS_AT_REST=${SECONDS_AT_REST:-60}
CHANGES=${CHANGES:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
headland=${1:-$root/target/release/headland}
[ -x "$headland" ] || headland=$root/target/debug/headland
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=$(free_port); peer=$(free_port)
etcd --name bench --data-dir "$work/etcd" --log-level error \
  --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "bench=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$client/health" >/dev/null && break; sleep 0.1; done

# One small app per node whose health can be switched: 200 unless the file "down" exists.
cat >"$work/app.py" <<'PY'
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        down = os.path.exists(sys.argv[2])
        self.send_response(503 if down else 200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY

regions=""
for i in $(seq 1 "$NODES"); do
  regions+="[regions.r$i]
addresses = [\"192.0.2.$i\"]
location = { lat = $((i * 10)).0, lon = $((i * 20)).0 }
"
done
for i in $(seq 1 "$NODES"); do
  dir=$work/node$i; mkdir -p "$dir"
  app=$(free_port)
  python3 "$work/app.py" "$app" "$dir/down" & pids+=($!)
  cat >"$dir/headland.toml" <<TOML
[node]
name = "node-$i"
region = "r$i"
state_dir = "$dir"

[listen]
http = ["127.0.0.$((20 + i)):$(free_port)"]
admin = "127.0.0.1:$(free_port)"

[access_log]
output = "off"

[geoip]
database = "$root/geoip/test-city.mmdb"

$regions
[dns.zones."example.com"]
file = "$root/config/zones/tests/example.com.zone"

[dns.zones."example.com".geo.api]
regions = [$(for j in $(seq 1 "$NODES"); do printf '"r%s",' "$j"; done | sed 's/,$//')]

[upstreams.app]
servers = ["127.0.0.1:$app"]
health = { path = "/", interval = "1s", rise = 1, fall = 1 }

[[routes]]
host = "api.example.com"
upstream = "app"

[cluster]
endpoints = ["http://127.0.0.1:$client"]
TOML
  "$headland" run --config "$dir/headland.toml" >"$dir/out.log" 2>&1 & pids+=($!)
done

scrape() {
  curl -s "http://127.0.0.1:$client/metrics" | python3 -c '
import sys, collections
totals = collections.Counter()
for line in sys.stdin:
    if line.startswith("#"): continue
    name, _, value = line.rpartition(" ")
    if name.startswith("grpc_server_msg_received_total"):
        method = name.split("grpc_method=\"")[1].split("\"")[0]
        totals["requests " + method] += float(value)
    elif name.startswith("grpc_server_msg_sent_total"):
        method = name.split("grpc_method=\"")[1].split("\"")[0]
        totals["answers " + method] += float(value)
    elif name.startswith("etcd_network_client_grpc_received_bytes_total"):
        totals["bytes in"] += float(value)
    elif name.startswith("etcd_network_client_grpc_sent_bytes_total"):
        totals["bytes out"] += float(value)
    elif name.startswith("etcd_debugging_mvcc_keys_total"):
        totals["keys"] = float(value)
for k, v in sorted(totals.items()): print(f"{k}\t{v}")
'
}
# Let every node join and settle (leases, first reports) before measuring.
sleep 10
scrape >"$work/before"
sleep "$SECONDS_AT_REST"
scrape >"$work/rest"
for _ in $(seq 1 "$CHANGES"); do
  touch "$work/node1/down"; sleep 3; rm -f "$work/node1/down"; sleep 3
done
scrape >"$work/changes"

report() { # FROM TO SECONDS LABEL
  python3 - "$1" "$2" "$3" "$4" "$NODES" <<'PY'
import sys
def read(p): return {k: float(v) for k, v in (l.rstrip("\n").split("\t") for l in open(p))}
a, b, secs, label, nodes = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
print(f"## {label}: {secs:.0f} s, {nodes} nodes")
for k in sorted(b):
    if k == "keys": print(f"  keys in etcd: {b[k]:.0f}"); continue
    d = b[k] - a.get(k, 0.0)
    if d: print(f"  {k:28s} {d:10.0f} total  {d / secs / nodes:8.2f} per node per second")
PY
}
echo "etcd $(etcd --version | head -1 | awk '{print $3}'), $("$headland" --version)"
report "$work/before" "$work/rest" "$SECONDS_AT_REST" "at rest"
report "$work/rest" "$work/changes" "$((CHANGES * 6))" "one node's app down 3 s, up 3 s, $CHANGES times"
