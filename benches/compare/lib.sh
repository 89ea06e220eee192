# shellcheck shell=bash
# Sourced by the comparison scripts: a work directory and the processes started in it
# (append their pids to `pids`), all removed or stopped when the script exits.
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# wait_port PORT: returns once something accepts connections on 127.0.0.1:PORT (10 s at most).
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 1
}

# start_upstream PORT: the loopback origin of the HTTP comparisons, an nginx answering
# GET /small (20 bytes) and GET /64k (64 KiB of random bytes) over keep-alive.
start_upstream() {
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
    listen 127.0.0.1:$1 backlog=4096;
    keepalive_requests 1000000;
    location = /small { default_type text/plain; return 200 "hello from upstream\n"; }
    location = /64k { alias $work/64k.bin; }
  }
}
EOF
  nginx -c "$work/upstream.conf" -g "daemon off;" & pids+=($!)
}
