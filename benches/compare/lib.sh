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
# $14, $2 and so on below are awk's fields, not the shell's.
# shellcheck disable=SC2016
cpu_ticks() { sum_over_tree "$1" stat '{print $14 + $15}'; }       # user + system ticks
# shellcheck disable=SC2016
peak_rss_kib() { sum_over_tree "$1" status '/VmHWM/ {print $2}'; }
# shellcheck disable=SC2016
rss_kib() { sum_over_tree "$1" status '/VmRSS/ {print $2}'; }

# hold NAME PORT N HOST MODE: hold_connections.py opens N connections to PORT (MODE keepalive
# or websocket) and holds them; the run stops unless every one was made and answered as MODE
# requires. Its stdin and stdout are FIFOs, so that it can be asked later how many of them
# are still open (hold_open) and told to close them (release).
hold() {
  local name=$1 status
  shift
  [ -p "$work/hold-in" ] || mkfifo "$work/hold-in" "$work/hold-out"
  python3 benches/compare/hold_connections.py "$@" <"$work/hold-in" >"$work/hold-out" & hold_pid=$!; pids+=("$hold_pid")
  exec {hold_in}>"$work/hold-in" {hold_out}<"$work/hold-out"
  read -r status <&"$hold_out" || true
  [ "${status%% *}" = ready ] || { echo "$name: ${status:-hold_connections.py ended without a word}" >&2; exit 1; }
}
hold_open() {
  local open
  kill -0 "$hold_pid" 2>/dev/null || { echo "hold_connections.py ended while holding" >&2; exit 1; }
  echo >&"$hold_in"
  read -r _ open <&"$hold_out"
  echo "$open"
}
release() {
  exec {hold_in}>&- {hold_out}<&-
  wait "$hold_pid" 2>/dev/null || true
}
