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
