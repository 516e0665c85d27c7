//! The composition root: settings and an SDK configuration in, a wired
//! store, fan-out and handler out. Lambda and every command build them
//! here, once, and differ only where this file says so.

use std::sync::Arc;

use aws_config::SdkConfig;
use tracing::{info, warn};

use crate::aws;
use crate::config::Settings;
use crate::fanout::{FanOut, Progress};
use crate::handler::BatchHandler;
use crate::ledger::Ledger;
use crate::notify::sns::SnsNotifier;
use crate::queue::sqs::SqsDeadLetters;
use crate::store::dynamodb::DynamoStore;
use crate::telemetry::events::SettingsInEffect;

/// The chargebacks table the settings name, written as they say, through
/// `client` (the SDK's own, or one pointed at a local endpoint). Every
/// command and Lambda build it here first, once: the settings in effect are
/// said here.
pub fn store(
    settings: &Settings,
    sdk: &SdkConfig,
    client: aws_sdk_dynamodb::Client,
) -> DynamoStore {
    SettingsInEffect {
        settings,
        region: sdk.region().map(|r| r.as_ref()),
    }
    .emit();
    DynamoStore::new(client, &settings.table_name, &settings.date_index)
        .with_write_mode(settings.write_mode)
}

/// The SDK configuration and the store for a command run outside Lambda,
/// the table described once before any message.
pub async fn connect(settings: &Settings) -> (SdkConfig, Arc<DynamoStore>) {
    let sdk = aws::load_sdk_config(settings.region.as_deref()).await;
    let store = Arc::new(store(settings, &sdk, aws_sdk_dynamodb::Client::new(&sdk)));
    store.warm_up().await;
    (sdk, store)
}

/// The fan-out over `store` with the settings' limits and progress log.
pub fn fan_out(
    settings: &Settings,
    store: Arc<DynamoStore>,
    progress: Arc<Progress>,
) -> FanOut<DynamoStore> {
    FanOut::new(store, settings.max_concurrency, progress)
        .with_max_write_rate(settings.max_write_rate)
        .with_progress_log(settings.progress_interval)
}

/// The run ledger the settings name, reached the way `store` reaches the
/// chargebacks table; off when `LEDGER_TABLE_NAME` is unset. Said once.
pub fn ledger(settings: &Settings, store: &DynamoStore) -> Ledger {
    match &settings.ledger_table {
        Some(table) => {
            info!(
                ledger_table = %table,
                ledger_ttl_days = settings.ledger_ttl_days,
                "run ledger on: a delivery of a day's run already completed is answered from it"
            );
            Ledger::new(
                Arc::new(store.ledger(table, settings.ledger_ttl_days)),
                table,
            )
        }
        None => {
            info!(
                "LEDGER_TABLE_NAME is not set: the run ledger is off; a day delivered again is stamped again in full, its records' conditions declining what is done"
            );
            Ledger::off()
        }
    }
}

/// The handler `redrive` replays dead letters through: the same as
/// Lambda's but with no dead-letter queue of its own, so that a message
/// failing again stays where it is instead of being parked a second time,
/// and no notifier (the command reports what is still failing itself).
pub fn redrive_handler(settings: &Settings, store: Arc<DynamoStore>) -> BatchHandler<DynamoStore> {
    let ledger = ledger(settings, &store);
    BatchHandler::new(fan_out(settings, store, Arc::default()))
        .with_ledger(ledger)
        .with_deadline_margin(settings.deadline_margin)
}

/// The handler with the store, the dead-letter queue and the notifier the
/// settings name. Missing optional parts are said at start-up, once.
pub async fn handler(
    settings: &Settings,
    sdk: &SdkConfig,
    store: Arc<DynamoStore>,
    progress: Arc<Progress>,
) -> BatchHandler<DynamoStore> {
    let ledger = ledger(settings, &store);
    let mut handler = BatchHandler::new(fan_out(settings, store, progress))
        .with_ledger(ledger)
        .with_deadline_margin(settings.deadline_margin);
    match &settings.dlq_url {
        Some(url) => {
            let queue = SqsDeadLetters::connect(aws::sqs_client(sdk), url).await;
            info!(dlq_url = %url, message_limit = queue.message_limit(), fifo = queue.is_fifo(),
                "poison messages go to the dead-letter queue");
            handler = handler.with_dead_letters(Arc::new(queue));
        }
        None => warn!(
            "DLQ_URL is not set: a poison message will be handed back to Lambda, and its \
             partition will stop there until it is fixed or skipped"
        ),
    }
    if let Some(arn) = &settings.failure_topic_arn {
        let mut notifier = SnsNotifier::new(aws::sns_client(sdk), arn);
        if let Some(function) = &settings.function {
            notifier = notifier.in_group_of(&function.name);
        }
        handler = handler.with_notifier(Arc::new(notifier));
    }
    handler
}
