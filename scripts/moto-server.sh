#!/usr/bin/env bash
# Run moto's server (PyPI moto[server]) on loopback as the local SQS and SNS
# for the integration tests.
#
#   scripts/moto-server.sh start [PORT]   # default port 4566
#   scripts/moto-server.sh stop
#
# `start` prints exactly one line on stdout: MOTO_ENDPOINT=http://127.0.0.1:PORT
# (everything else goes to stderr), so a caller can `export "$(... start)"`.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/.." && pwd))"
STATE_DIR="$ROOT/.ci/cache/moto"
PID_FILE="$STATE_DIR/pid"
LOG_FILE="$STATE_DIR/server.log"
# Pinned so every machine tests against the same emulation.
MOTO_VERSION="${MOTO_VERSION:-5.2.1}"

log() { echo "moto-server: $*" >&2; }
die() { echo "moto-server: error: $*" >&2; exit 1; }

ready() {
    python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
PY
}

start() {
    local port="${1:-4566}"
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port: $port"
    mkdir -p "$STATE_DIR"
    if [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        ready "$port" || die "a moto server from an earlier start runs but not on port $port; run stop first"
        echo "MOTO_ENDPOINT=http://127.0.0.1:$port"
        return
    fi
    if ! python3 -c "import moto, flask" 2>/dev/null \
        || [[ "$(python3 -c 'import moto; print(moto.__version__)')" != "$MOTO_VERSION" ]]; then
        log "installing moto[server]==$MOTO_VERSION"
        python3 -m pip install --quiet "moto[server]==$MOTO_VERSION" >&2
    fi
    ready "$port" && die "port $port is already taken by another process"
    log "starting moto on port $port"
    # Close inherited descriptors so a caller waiting on a pipe is not held open.
    nohup python3 -m moto.server -H 127.0.0.1 -p "$port" </dev/null >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    for _ in $(seq 1 120); do
        if ready "$port"; then
            log "ready (pid $(cat "$PID_FILE")); log: ${LOG_FILE#"$ROOT/"}"
            echo "MOTO_ENDPOINT=http://127.0.0.1:$port"
            return
        fi
        kill -0 "$(cat "$PID_FILE")" 2>/dev/null || break
        sleep 0.5
    done
    tail -n 40 "$LOG_FILE" >&2 || true
    stop
    die "moto did not come up on port $port"
}

stop() {
    [[ -f "$PID_FILE" ]] || return 0
    local pid
    pid="$(cat "$PID_FILE")"
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping moto (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    *) echo "usage: $0 start [PORT] | stop" >&2; exit 2 ;;
esac
