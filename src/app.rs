//! The composition root: settings and an SDK configuration in, a wired
//! handler out. Lambda and the CLI build the same thing here, once.

use std::sync::Arc;

use aws_config::SdkConfig;
use tracing::{info, warn};

use crate::aws;
use crate::config::Settings;
use crate::fanout::{FanOut, Progress};
use crate::handler::BatchHandler;
use crate::notify::sns::SnsNotifier;
use crate::queue::sqs::SqsDeadLetters;
use crate::store::dynamodb::DynamoStore;
use crate::telemetry::events::SettingsInEffect;

/// The chargebacks table the settings name, written as they say. Lambda
/// and the CLI build it first, once: the settings in effect are said here.
pub fn store(settings: &Settings, sdk: &SdkConfig) -> DynamoStore {
    SettingsInEffect {
        settings,
        region: sdk.region().map(|r| r.as_ref()),
    }
    .emit();
    DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        &settings.table_name,
        &settings.date_index,
    )
    .with_write_mode(settings.write_mode)
}

/// The handler with the store, the dead-letter queue and the notifier the
/// settings name. Missing optional parts are said at start-up, once.
pub async fn handler(
    settings: &Settings,
    sdk: &SdkConfig,
    store: Arc<DynamoStore>,
    progress: Arc<Progress>,
) -> BatchHandler<DynamoStore> {
    let mut handler = BatchHandler::new(
        FanOut::new(store, settings.max_concurrency, progress)
            .with_max_write_rate(settings.max_write_rate)
            .with_progress_log(settings.progress_interval),
    )
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
