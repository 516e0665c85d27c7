//! The AWS SDK's configuration, shared by the DynamoDB, SQS and SNS clients:
//! how it is loaded (region, timeouts, no SDK retries) and the client each
//! service is built with.

use std::time::Duration;

use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::DEFAULT_REGION;

/// A connect that takes longer than this will not succeed (no VPC endpoint,
/// wrong security group): fail fast so the message is handed back promptly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// DynamoDB answers in milliseconds; an attempt this slow is retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads the AWS configuration the standard way (environment, profile,
/// container or instance credentials, `AWS_ENDPOINT_URL*`) with our timeouts.
/// The region is `region` when given (`AWS_REGION`), else `AWS_DEFAULT_REGION`
/// or the profile's, else [`DEFAULT_REGION`]; never an instance-metadata
/// probe, which would stall a laptop.
pub async fn load_sdk_config(region: Option<&str>) -> SdkConfig {
    let region = match region {
        Some(region) => RegionProviderChain::first_try(Region::new(region.to_owned())),
        None => RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
            .or_else(ProfileFileRegionProvider::new())
            .or_else(Region::new(DEFAULT_REGION)),
    };
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        // Our own policy (crate::retry) retries; two layers would multiply attempts.
        .retry_config(RetryConfig::disabled())
        // Responses are a few hundred bytes, each attempt is bounded by
        // ATTEMPT_TIMEOUT: the per-request throughput monitor buys nothing.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .load()
        .await
}

/// A DynamoDB client for a local DynamoDB-compatible server (the embedded
/// engine, DynamoDB Local): the SDK configuration as loaded, with this
/// endpoint and static credentials, since a local server accepts any.
pub fn local_client(sdk: &SdkConfig, endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "local",
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An SQS client with the SDK's standard retries: a dead-letter send is rare,
/// and a short hiccup should not hand a poison message back.
pub fn sqs_client(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(sdk)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .build(),
    )
}

/// An SNS client with the SDK's standard retries, as [`sqs_client`].
pub(crate) fn sns_client(sdk: &SdkConfig) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::from_conf(
        aws_sdk_sns::config::Builder::from(sdk)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .build(),
    )
}
