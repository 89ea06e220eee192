#!/usr/bin/env bash
# Renders the admin status page in headless Chromium: the DOM after the page's first /status
# fetch has rendered (for tests to assert on), a laptop screenshot and a phone screenshot.
#
#   tests/browser/status-page.sh URL OUT_DIR
#   tests/browser/status-page.sh http://127.0.0.1:9901/ target/status-page
#
# Writes OUT_DIR/status-page.html, OUT_DIR/status-page.png (1280x900),
# OUT_DIR/status-page-phone.png (390x844) and Chromium's own messages to OUT_DIR/chromium.log.
# Exits 77 (the usual "skipped" status) when neither `chromium` nor `chromium-browser` is
# installed, 1 when a run fails or leaves an empty file, 2 on wrong usage.
#
# --virtual-time-budget makes Chromium wait before dumping or capturing: virtual time stands
# still while a network request is in flight (checked with a /status that answered after 12 s
# of real time), so the budget only has to cover the page's timers, not the server's speed.
# The page refreshes every 5 s, so 10 s of virtual time is the first fetch and two refreshes.
set -euo pipefail

VIRTUAL_TIME_BUDGET_MS=${VIRTUAL_TIME_BUDGET_MS:-10000}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}  # seconds of real time per Chromium run

if [[ $# -ne 2 ]]; then
    echo "usage: $0 URL OUT_DIR" >&2
    exit 2
fi
url=$1
out_dir=$2

chromium=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $chromium ]]; then
    echo "status-page: chromium is not installed (apt-get install chromium)" >&2
    exit 77
fi

mkdir -p "$out_dir"
log=$out_dir/chromium.log
: >"$log"
profiles=$(mktemp -d)
trap 'rm -rf "$profiles"' EXIT

# render OUTPUT CHROMIUM_ARGS...: one run with a fresh profile, so no cache or session storage
# carries over. --dump-dom writes the DOM to stdout; screenshots go to their own file.
render() {
    local output=$1
    shift
    local stdout=$log
    [[ $1 == --dump-dom ]] && stdout=$output
    # A file left by an earlier call must not pass for this run's output.
    rm -f "$output"
    local profile
    profile=$(mktemp -d -p "$profiles")
    if ! timeout "$RUN_TIMEOUT" "$chromium" --headless=new --no-sandbox --disable-gpu \
        --hide-scrollbars --user-data-dir="$profile" \
        --virtual-time-budget="$VIRTUAL_TIME_BUDGET_MS" "$@" "$url" >>"$stdout" 2>>"$log"; then
        echo "status-page: chromium failed writing $output; its last messages:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    if [[ ! -s $output ]]; then
        echo "status-page: $output is empty" >&2
        exit 1
    fi
    echo "$output"
}

render "$out_dir/status-page.html" --dump-dom
render "$out_dir/status-page.png" --screenshot="$out_dir/status-page.png" --window-size=1280,900
render "$out_dir/status-page-phone.png" --screenshot="$out_dir/status-page-phone.png" \
    --window-size=390,844
