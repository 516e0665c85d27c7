#!/usr/bin/env bash
# The fan-out benchmark (benches/fanout.rs): records/s against the server's own
# ceiling, client CPU per record, peak RSS, requests and write units per
# record (reported by the server, and computed by DynamoDB's billing rule),
# first pass and redelivery, for both write modes, on a KEYS_ONLY date index
# without the run ledger unless told otherwise; then cold start.
#
#   scripts/bench.sh                       # embedded engine, 200,000 records
#   scripts/bench.sh --records 1250000     # the seed's day
#   scripts/bench.sh --server dynamodb-local --records 200000
#   scripts/bench.sh --index-projection keys-only,include-execution   # both indexes
#   scripts/bench.sh --ledger off,on       # without and with the run ledger, side by
#       side, and the ledger's targets: first pass within 10% of the rate without
#       it, <= 5 ledger requests; the redelivery superseded, <= 5 requests in all,
#       0 write units on the chargebacks table, handled in < 100 ms
#   scripts/bench.sh --records 1250000 --ledger off,on --write-mode batch-statement \
#       --ceiling-records 20000 --cold-starts 0   # the day, a smaller ceiling
#   scripts/bench.sh --help                # every option
#
# Five measurements replace the ones above when asked for (first pass,
# redelivery, ceiling and cold start are then skipped; run the script twice
# for both). Each prints one row per run with PASS/FAIL against its targets;
# a FAIL does not fail the script. They take one --index-projection
# (keys-only by default; the last two only keys-only) and run without the
# ledger, but for the last two.
#
#   scripts/bench.sh --write-capacity default      # or 500,1000; the product through a
#       proxy playing a table of R writes/s (default: 100..5000 batch-statement,
#       100..2000 update-item). PASS: done, reached >= 0.90 R once the burst is
#       spent, <= 0.05 throttled writes per stamped record.
#   scripts/bench.sh --write-capacity 500 --write-mode batch-statement
#   scripts/bench.sh --max-write-rate 500,1000     # MAX_WRITE_RATE=R on the unlimited
#       engine: the rate kept, first write to last. PASS: within 5% of R.
#   scripts/bench.sh --compare-binary PATH --repeats 5   # another build against this
#       one, interleaved, --records each: records/s and CPU per record per run, medians, ratios.
#   scripts/bench.sh --resume-after-deadline       # the deadline control: a delivery stopped
#       about halfway by `invoke --timeout` (calibrated by an undeadlined pass just before, or
#       --resume-stop-after SECONDS), then delivered again, with the run ledger (resumed after
#       its checkpoint) and without (today: the whole day again). PASS: the second delivery
#       writes <= the records left after the checkpoint + 2,000 + MAX_CONCURRENCY x batch,
#       and reads <= the index pages after the checkpoint + 1.
#   scripts/bench.sh --backlog --ledger off,on     # executions 1-4 of a day in ONE Lambda
#       event, beside the four as four invocations (today: about 2.5 x the day in write
#       units). PASS: the one event costs <= 1.02 x execution 4's selection in write units.
#
# --capacity-records sets the records of the first two (default 20,000; 3,000
# at R <= 100).
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
