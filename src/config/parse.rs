//! One parser per variable: the text of the environment in, a typed value
//! or a [`ConfigError`] naming the variable out.

use std::time::Duration;

use tracing::level_filters::LevelFilter;

use super::{
    ConfigError, LogFormat, MAX_LEDGER_TTL_DAYS, MAX_MAX_CONCURRENCY, MAX_MAX_WRITE_RATE,
    WriteMode, XrayDaemon,
};

pub(super) fn write_mode(value: &str) -> Result<WriteMode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "update-item" => Ok(WriteMode::UpdateItem),
        "batch-statement" => Ok(WriteMode::BatchStatement),
        _ => Err(invalid(
            "WRITE_MODE",
            value,
            "expected update-item or batch-statement",
        )),
    }
}

/// Tracing is on where Lambda runs with active tracing (it then sets the
/// daemon address), and elsewhere only when asked with `XRAY_TRACING=on`.
/// `XRAY_TRACING=off` turns it off in Lambda too.
pub(super) fn xray_daemon(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<XrayDaemon>, ConfigError> {
    let asked = match get("XRAY_TRACING") {
        None => get("AWS_LAMBDA_FUNCTION_NAME").is_some(),
        Some(value) => match value.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" => true,
            "off" | "false" | "0" => false,
            _ => return Err(invalid("XRAY_TRACING", &value, "expected on or off")),
        },
    };
    if !asked {
        return Ok(None);
    }
    let Some(address) = get("AWS_XRAY_DAEMON_ADDRESS") else {
        return Ok(None);
    };
    // Lambda writes "169.254.79.129:2000"; the daemon's own docs allow
    // "tcp:HOST:PORT udp:HOST:PORT", of which segments use the UDP one.
    let udp = address
        .split_whitespace()
        .find_map(|part| part.strip_prefix("udp:"))
        .unwrap_or(address.trim());
    udp.parse().map(|addr| Some(XrayDaemon(addr))).map_err(|_| {
        invalid(
            "AWS_XRAY_DAEMON_ADDRESS",
            &address,
            "expected IP:PORT (or \"tcp:IP:PORT udp:IP:PORT\")",
        )
    })
}

/// CloudWatch namespaces: 1 to 255 characters, letters, digits and `.-_/#: `,
/// and not starting with `AWS/` (reserved for AWS services).
pub(super) fn metrics_namespace(value: &str) -> Result<String, ConfigError> {
    let ok = (1..=255).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_/#: ".contains(&b))
        && !value.starts_with("AWS/");
    if ok {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            "METRICS_NAMESPACE",
            value,
            "a CloudWatch namespace is 1 to 255 characters of A-Z, a-z, 0-9 and . - _ / # : \
             or space, and does not start with AWS/",
        ))
    }
}

pub(super) fn progress_interval(value: &str) -> Result<Duration, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(s) if (1..=900).contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(invalid(
            "PROGRESS_LOG_INTERVAL_SECONDS",
            value,
            "expected whole seconds from 1 to 900",
        )),
    }
}

pub(super) fn invalid(
    variable: &'static str,
    value: &str,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError {
        variable,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Our `LOG_LEVEL` names, and Lambda's own `AWS_LAMBDA_LOG_LEVEL` ones.
pub(super) fn parse_level(variable: &'static str, value: &str) -> Result<LevelFilter, ConfigError> {
    match value.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Ok(LevelFilter::TRACE),
        "DEBUG" => Ok(LevelFilter::DEBUG),
        "INFO" => Ok(LevelFilter::INFO),
        "WARN" | "WARNING" => Ok(LevelFilter::WARN),
        "ERROR" | "FATAL" => Ok(LevelFilter::ERROR),
        _ => Err(invalid(
            variable,
            value,
            "expected TRACE, DEBUG, INFO, WARN (or WARNING), ERROR or FATAL, in any case",
        )),
    }
}

pub(super) fn log_format(value: &str) -> Result<LogFormat, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err(invalid("LOG_FORMAT", value, "expected json or text")),
    }
}

/// DynamoDB table and index names: 3 to 255 of `[A-Za-z0-9_.-]`.
pub(super) fn resource_name(variable: &'static str, value: String) -> Result<String, ConfigError> {
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

pub(super) fn region(value: String) -> Result<String, ConfigError> {
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

pub(super) fn max_concurrency(value: &str) -> Result<usize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(invalid(
            "MAX_CONCURRENCY",
            value,
            format!("expected a whole number from 1 to {MAX_MAX_CONCURRENCY}"),
        )),
    }
}

pub(super) fn max_write_rate(value: &str) -> Result<u32, ConfigError> {
    match value.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_MAX_WRITE_RATE).contains(&n) => Ok(n),
        _ => Err(invalid(
            "MAX_WRITE_RATE",
            value,
            format!(
                "expected writes per second, a whole number from 1 to {MAX_MAX_WRITE_RATE} \
                 (unset it for no limit but the table's)"
            ),
        )),
    }
}

pub(super) fn ledger_ttl_days(value: &str) -> Result<u32, ConfigError> {
    match value.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_LEDGER_TTL_DAYS).contains(&n) => Ok(n),
        _ => Err(invalid(
            "LEDGER_TTL_DAYS",
            value,
            format!("expected days, a whole number from 1 to {MAX_LEDGER_TTL_DAYS}"),
        )),
    }
}

pub(super) fn topic_arn(value: &str) -> Result<String, ConfigError> {
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
pub(super) fn deadline_margin(value: &str) -> Result<Duration, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(ms) if (1_000..=600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(invalid(
            "DEADLINE_SAFETY_MARGIN_MS",
            value,
            "expected milliseconds from 1000 to 600000",
        )),
    }
}

pub(super) fn queue_url(value: &str) -> Result<String, ConfigError> {
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
