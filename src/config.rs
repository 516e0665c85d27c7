//! Configuration, read from the environment once at start-up into one typed
//! struct. A bad value stops start-up with a message naming the variable.

use std::time::Duration;

use thiserror::Error;
use tracing::level_filters::LevelFilter;

pub const DEFAULT_TABLE_NAME: &str = "poc-chargeback-chargebacks-dev";
pub const DEFAULT_REGION: &str = "sa-east-1";
pub const DEFAULT_DATE_INDEX: &str = "partition_date-index";
/// Updates in flight per invocation. Measured against DynamoDB Local and the
/// embedded engine (see the README): beyond this the rate stops improving on
/// two cores, and real DynamoDB (a few ms per update) needs this many to stamp
/// a million records well inside one invocation.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
pub use crate::handler::DEFAULT_DEADLINE_MARGIN;
/// Far beyond any useful value; guards against a typo (e.g. 100000).
pub const MAX_MAX_CONCURRENCY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid configuration: {variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (always, in Lambda).
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub table_name: String,
    /// `AWS_REGION` when set. Unset, the SDK's chain decides (`AWS_DEFAULT_REGION`,
    /// the profile's region) and falls back to [`DEFAULT_REGION`].
    pub region: Option<String>,
    pub log_level: LevelFilter,
    /// `None` means "the mode's default" (JSON in Lambda, text in the CLI).
    pub log_format: Option<LogFormat>,
    pub date_index: String,
    pub max_concurrency: usize,
    pub dlq_url: Option<String>,
    /// SNS topic for one failure summary per invocation with failures.
    pub failure_topic_arn: Option<String>,
    /// New work stops this long before the invocation's deadline.
    pub deadline_margin: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let log_level = match get("LOG_LEVEL") {
            Some(value) => parse_level("LOG_LEVEL", &value)?,
            None => match get("AWS_LAMBDA_LOG_LEVEL") {
                Some(value) => parse_level("AWS_LAMBDA_LOG_LEVEL", &value)?,
                None => LevelFilter::INFO,
            },
        };
        Ok(Self {
            table_name: resource_name(
                "DYNAMODB_TABLE_NAME",
                get("DYNAMODB_TABLE_NAME").unwrap_or_else(|| DEFAULT_TABLE_NAME.into()),
            )?,
            region: get("AWS_REGION").map(region).transpose()?,
            log_level,
            log_format: get("LOG_FORMAT").map(|v| log_format(&v)).transpose()?,
            date_index: resource_name(
                "CHARGEBACK_DATE_INDEX",
                get("CHARGEBACK_DATE_INDEX").unwrap_or_else(|| DEFAULT_DATE_INDEX.into()),
            )?,
            max_concurrency: get("MAX_CONCURRENCY")
                .map(|v| max_concurrency(&v))
                .transpose()?
                .unwrap_or(DEFAULT_MAX_CONCURRENCY),
            dlq_url: get("DLQ_URL").map(|v| queue_url(&v)).transpose()?,
            failure_topic_arn: get("FAILURE_TOPIC_ARN")
                .map(|v| topic_arn(&v))
                .transpose()?,
            deadline_margin: get("DEADLINE_SAFETY_MARGIN_MS")
                .map(|v| deadline_margin(&v))
                .transpose()?
                .unwrap_or(DEFAULT_DEADLINE_MARGIN),
        })
    }
}

fn invalid(variable: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Our `LOG_LEVEL` names, and Lambda's own `AWS_LAMBDA_LOG_LEVEL` ones.
fn parse_level(variable: &'static str, value: &str) -> Result<LevelFilter, ConfigError> {
    match value.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Ok(LevelFilter::TRACE),
        "DEBUG" => Ok(LevelFilter::DEBUG),
        "INFO" => Ok(LevelFilter::INFO),
        "WARN" | "WARNING" => Ok(LevelFilter::WARN),
        "ERROR" | "FATAL" => Ok(LevelFilter::ERROR),
        _ => Err(invalid(
            variable,
            value,
            "expected one of TRACE, DEBUG, INFO, WARN (or WARNING), ERROR, FATAL",
        )),
    }
}

fn log_format(value: &str) -> Result<LogFormat, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err(invalid("LOG_FORMAT", value, "expected json or text")),
    }
}

/// DynamoDB table and index names: 3 to 255 of `[A-Za-z0-9_.-]`.
fn resource_name(variable: &'static str, value: String) -> Result<String, ConfigError> {
    let ok = (3..=255).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(value)
    } else {
        Err(invalid(
            variable,
            &value,
            "a DynamoDB name is 3 to 255 characters of A-Z, a-z, 0-9, '_', '-', '.'",
        ))
    }
}

fn region(value: String) -> Result<String, ConfigError> {
    let ok = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && value.contains('-');
    if ok {
        Ok(value)
    } else {
        Err(invalid(
            "AWS_REGION",
            &value,
            "expected a region name such as sa-east-1",
        ))
    }
}

fn max_concurrency(value: &str) -> Result<usize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(invalid(
            "MAX_CONCURRENCY",
            value,
            format!("expected a whole number from 1 to {MAX_MAX_CONCURRENCY}"),
        )),
    }
}

fn topic_arn(value: &str) -> Result<String, ConfigError> {
    let trimmed = value.trim();
    if trimmed.starts_with("arn:") && trimmed.split(':').count() >= 6 {
        Ok(trimmed.to_owned())
    } else {
        Err(invalid(
            "FAILURE_TOPIC_ARN",
            value,
            "expected an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)",
        ))
    }
}

/// At least 1 s (room for the updates in flight and the response), at most
/// 10 minutes (more would leave Lambda's longest Kafka invocation no time for work).
fn deadline_margin(value: &str) -> Result<Duration, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(ms) if (1_000..=600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(invalid(
            "DEADLINE_SAFETY_MARGIN_MS",
            value,
            "expected milliseconds from 1000 to 600000",
        )),
    }
}

fn queue_url(value: &str) -> Result<String, ConfigError> {
    let trimmed = value.trim();
    if trimmed.starts_with("https://") || trimmed.starts_with("http://") {
        Ok(trimmed.to_owned())
    } else {
        Err(invalid(
            "DLQ_URL",
            value,
            "expected an SQS queue URL (https://...)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.table_name, DEFAULT_TABLE_NAME);
        assert_eq!(s.region, None);
        assert_eq!(s.log_level, LevelFilter::INFO);
        assert_eq!(s.log_format, None);
        assert_eq!(s.date_index, "partition_date-index");
        assert_eq!(s.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert_eq!(s.dlq_url, None);
        assert_eq!(s.failure_topic_arn, None);
        assert_eq!(s.deadline_margin, DEFAULT_DEADLINE_MARGIN);
    }

    #[test]
    fn every_variable_is_read() {
        let s = settings(&[
            ("DYNAMODB_TABLE_NAME", "chargebacks-prod"),
            ("AWS_REGION", "us-east-2"),
            ("LOG_LEVEL", "debug"),
            ("LOG_FORMAT", "JSON"),
            ("CHARGEBACK_DATE_INDEX", "by-date"),
            ("MAX_CONCURRENCY", "16"),
            ("DLQ_URL", "https://sqs.us-east-2.amazonaws.com/1/dlq"),
            (
                "FAILURE_TOPIC_ARN",
                "arn:aws:sns:us-east-2:123456789012:failures",
            ),
            ("DEADLINE_SAFETY_MARGIN_MS", "2500"),
        ])
        .unwrap();
        assert_eq!(
            s.failure_topic_arn.as_deref(),
            Some("arn:aws:sns:us-east-2:123456789012:failures")
        );
        assert_eq!(s.deadline_margin, Duration::from_millis(2500));
        assert_eq!(s.table_name, "chargebacks-prod");
        assert_eq!(s.region.as_deref(), Some("us-east-2"));
        assert_eq!(s.log_level, LevelFilter::DEBUG);
        assert_eq!(s.log_format, Some(LogFormat::Json));
        assert_eq!(s.date_index, "by-date");
        assert_eq!(s.max_concurrency, 16);
        assert_eq!(
            s.dlq_url.as_deref(),
            Some("https://sqs.us-east-2.amazonaws.com/1/dlq")
        );
    }

    #[test]
    fn log_levels_are_case_insensitive_and_accept_warning() {
        for (value, level) in [
            ("Info", LevelFilter::INFO),
            ("WARNING", LevelFilter::WARN),
            ("warn", LevelFilter::WARN),
            ("ERROR", LevelFilter::ERROR),
        ] {
            assert_eq!(settings(&[("LOG_LEVEL", value)]).unwrap().log_level, level);
        }
    }

    #[test]
    fn lambdas_own_log_level_applies_when_log_level_is_unset() {
        let s = settings(&[("AWS_LAMBDA_LOG_LEVEL", "TRACE")]).unwrap();
        assert_eq!(s.log_level, LevelFilter::TRACE);
        let s = settings(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]).unwrap();
        assert_eq!(s.log_level, LevelFilter::ERROR);
        let s = settings(&[("AWS_LAMBDA_LOG_LEVEL", "TRACE"), ("LOG_LEVEL", "WARN")]).unwrap();
        assert_eq!(s.log_level, LevelFilter::WARN);
    }

    #[test]
    fn an_invalid_value_names_its_variable() {
        for (variable, value) in [
            ("LOG_LEVEL", "LOUD"),
            ("AWS_LAMBDA_LOG_LEVEL", "verbose"),
            ("MAX_CONCURRENCY", "0"),
            ("MAX_CONCURRENCY", "ten"),
            ("MAX_CONCURRENCY", "100000"),
            ("DYNAMODB_TABLE_NAME", "no spaces allowed"),
            ("CHARGEBACK_DATE_INDEX", "x"),
            ("AWS_REGION", "Sao Paulo"),
            ("DLQ_URL", "my-queue"),
            ("LOG_FORMAT", "xml"),
            ("FAILURE_TOPIC_ARN", "failures"),
            ("DEADLINE_SAFETY_MARGIN_MS", "-1"),
            ("DEADLINE_SAFETY_MARGIN_MS", "900000"),
            ("DEADLINE_SAFETY_MARGIN_MS", "0"),
        ] {
            let error = settings(&[(variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable);
            assert!(error.to_string().contains(variable), "{error}");
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = settings(&[("DLQ_URL", ""), ("LOG_LEVEL", " "), ("MAX_CONCURRENCY", "")]).unwrap();
        assert_eq!(
            (s.dlq_url, s.log_level, s.max_concurrency),
            (None, LevelFilter::INFO, DEFAULT_MAX_CONCURRENCY)
        );
    }
}
