#!/usr/bin/env bash
# The fan-out benchmark (benches/fanout.rs): records/s against the server's own
# ceiling, client CPU per record, peak RSS, requests and write units per
# record, first pass and redelivery, for both write modes; then cold start.
#
#   scripts/bench.sh                       # embedded engine, 200,000 records
#   scripts/bench.sh --records 1250000     # the seed's day
#   scripts/bench.sh --server dynamodb-local --records 200000
#   scripts/bench.sh --help                # every option
#
# With --server dynamodb-local it starts DynamoDB Local (scripts/dynamodb-local.sh)
# unless DYNAMODB_LOCAL_ENDPOINT already names one, and stops what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ " $* " == *" dynamodb-local "* || " $* " == *"--server=dynamodb-local"* ]] \
    && [[ -z "${DYNAMODB_LOCAL_ENDPOINT:-}" ]]; then
    trap 'scripts/dynamodb-local.sh stop' EXIT
    endpoint_line=$(scripts/dynamodb-local.sh start 8001)
    export "${endpoint_line?}"
fi

cargo bench --bench fanout -- "$@"
