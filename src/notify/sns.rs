//! SNS failure notifications, behind the [`FailureNotifier`] port.

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_sns::Client;
use aws_sdk_sns::error::DisplayErrorContext;

use crate::domain::outcome::FailureNotice;
use crate::ports::{BoxFuture, FailureNotifier, SinkError};

pub fn client(sdk: &SdkConfig) -> Client {
    Client::from_conf(
        aws_sdk_sns::config::Builder::from(sdk)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .build(),
    )
}

pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        Self {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

impl FailureNotifier for SnsNotifier {
    fn publish<'a>(&'a self, notice: &'a FailureNotice) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.client
                .publish()
                .topic_arn(&self.topic_arn)
                .subject(notice.subject())
                .message(notice.body())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| SinkError {
                    operation: "Publish",
                    message: DisplayErrorContext(&e).to_string(),
                })
        })
    }
}
