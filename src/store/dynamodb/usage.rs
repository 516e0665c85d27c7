//! What the adapter has cost so far: requests sent (every attempt counts) and
//! the write capacity DynamoDB reported consuming.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::ConsumedCapacity;

/// Write capacity units, as `ReturnConsumedCapacity=INDEXES` splits them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WriteUnits {
    pub table: f64,
    pub indexes: f64,
}

/// The running totals of one store.
#[derive(Debug, Default)]
pub(super) struct Usage {
    /// Write capacity units DynamoDB reported for our writes, in thousandths:
    /// the table's, and its indexes'.
    table_write_milliunits: AtomicU64,
    index_write_milliunits: AtomicU64,
    /// Requests sent (every attempt counts).
    requests: Arc<AtomicU64>,
}

impl Usage {
    /// `client`, counting in here each request it transmits.
    pub(super) fn counting(&self, client: &Client) -> Client {
        Client::from_conf(
            client
                .config()
                .to_builder()
                .interceptor(RequestCounter(Arc::clone(&self.requests)))
                .build(),
        )
    }

    pub(super) fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(super) fn write_units(&self) -> WriteUnits {
        let units = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64 / 1000.0;
        WriteUnits {
            table: units(&self.table_write_milliunits),
            indexes: units(&self.index_write_milliunits),
        }
    }

    /// Adds what a response says it consumed.
    pub(super) fn tally_capacity<'a>(
        &self,
        consumed: impl IntoIterator<Item = &'a ConsumedCapacity>,
    ) {
        let milli = |units: f64| (units * 1000.0).round() as u64;
        for capacity in consumed {
            let indexes: f64 = capacity
                .global_secondary_indexes()
                .into_iter()
                .flat_map(|gsi| gsi.values())
                .chain(
                    capacity
                        .local_secondary_indexes()
                        .into_iter()
                        .flat_map(|lsi| lsi.values()),
                )
                .filter_map(|c| c.capacity_units)
                .sum();
            // Older servers give only the total.
            let table = capacity
                .table()
                .and_then(|t| t.capacity_units)
                .unwrap_or_else(|| capacity.capacity_units.unwrap_or(0.0) - indexes);
            self.table_write_milliunits
                .fetch_add(milli(table), Ordering::Relaxed);
            self.index_write_milliunits
                .fetch_add(milli(indexes), Ordering::Relaxed);
        }
    }
}

/// Counts each request the client transmits, retries included.
#[derive(Debug)]
struct RequestCounter(Arc<AtomicU64>);

impl aws_sdk_dynamodb::config::Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _config: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::Capacity;

    use super::*;

    fn units(capacity_units: f64) -> Capacity {
        Capacity::builder().capacity_units(capacity_units).build()
    }

    #[test]
    fn index_units_are_told_from_the_table_s() {
        let usage = Usage::default();
        let write = ConsumedCapacity::builder()
            .capacity_units(3.0)
            .table(units(1.0))
            .global_secondary_indexes("by-date", units(1.5))
            .local_secondary_indexes("by-status", units(0.5))
            .build();
        usage.tally_capacity([&write, &write]);
        assert_eq!(
            usage.write_units(),
            WriteUnits {
                table: 2.0,
                indexes: 4.0
            }
        );
    }

    #[test]
    fn a_server_that_gives_only_the_total_has_the_indexes_taken_from_it() {
        let usage = Usage::default();
        let write = ConsumedCapacity::builder()
            .capacity_units(2.5)
            .global_secondary_indexes("by-date", units(1.0))
            .build();
        usage.tally_capacity([&write]);
        assert_eq!(
            usage.write_units(),
            WriteUnits {
                table: 1.5,
                indexes: 1.0
            }
        );
        usage.tally_capacity([&ConsumedCapacity::builder().build()]);
        assert_eq!(
            usage.write_units().table,
            1.5,
            "no units said, none counted"
        );
    }
}
