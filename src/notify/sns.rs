//! SNS failure notifications, behind the [`FailureNotifier`] port, to a
//! standard or a FIFO topic.

use aws_sdk_sns::Client;
use aws_sdk_sns::error::DisplayErrorContext;

use crate::domain::failure::SinkError;
use crate::domain::fifo::FifoPlacement;
use crate::domain::outcome::FailureNotice;
use crate::ports::{BoxFuture, FailureNotifier};

/// The message group of notices when no function name is known (the CLI).
pub(crate) const DEFAULT_NOTICE_GROUP: &str = "consolidation-updater";

/// SNS requires a FIFO topic's name to end in `.fifo` and allows no dot in a
/// standard topic's, so the ARN tells them apart without `GetTopicAttributes`
/// (a permission the function does not need otherwise).
fn is_fifo_arn(topic_arn: &str) -> bool {
    topic_arn.ends_with(".fifo")
}

pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
    /// On a FIFO topic, the message group of every notice.
    fifo_group: Option<String>,
}

impl SnsNotifier {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        let topic_arn = topic_arn.into();
        Self {
            client,
            fifo_group: is_fifo_arn(&topic_arn).then(|| DEFAULT_NOTICE_GROUP.to_owned()),
            topic_arn,
        }
    }

    /// On a FIFO topic, publishes in `function`'s message group (see
    /// [`FifoPlacement::of_notice`]); a standard topic ignores it.
    pub fn in_group_of(mut self, function: &str) -> Self {
        if self.fifo_group.is_some() {
            self.fifo_group = Some(function.to_owned());
        }
        self
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo_group.is_some()
    }
}

impl FailureNotifier for SnsNotifier {
    fn publish<'a>(&'a self, notice: &'a FailureNotice) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let body = notice.body().map_err(|e| SinkError::Unencodable {
                what: "failure notice",
                message: e.to_string(),
            })?;
            let placement = self
                .fifo_group
                .as_deref()
                .map(|group| FifoPlacement::of_notice(group, &notice.request_id, &body));
            self.client
                .publish()
                .topic_arn(&self.topic_arn)
                .subject(notice.subject())
                .message(body)
                .set_message_group_id(placement.as_ref().map(|p| p.group.to_string()))
                .set_message_deduplication_id(
                    placement.as_ref().map(|p| p.deduplication.to_string()),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| SinkError::Refused {
                    operation: "Publish",
                    message: DisplayErrorContext(&e).to_string(),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier(topic_arn: &str) -> SnsNotifier {
        let config = aws_sdk_sns::Config::builder()
            .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
            .build();
        SnsNotifier::new(Client::from_conf(config), topic_arn)
    }

    #[test]
    fn a_fifo_topic_is_known_by_its_arn_and_grouped_by_function() {
        let fifo = notifier("arn:aws:sns:sa-east-1:123456789012:failures.fifo");
        assert_eq!(fifo.fifo_group.as_deref(), Some(DEFAULT_NOTICE_GROUP));
        let named = fifo.in_group_of("consolidation-updater-prod");
        assert_eq!(
            named.fifo_group.as_deref(),
            Some("consolidation-updater-prod")
        );
        let standard = notifier("arn:aws:sns:sa-east-1:123456789012:failures")
            .in_group_of("consolidation-updater-prod");
        assert!(!standard.is_fifo(), "a standard topic takes no group");
    }
}
