//! Configuration, read from the environment once at start-up into one typed
//! struct. A bad value stops start-up with a message naming the variable.

use std::time::Duration;

use thiserror::Error;
use tracing::level_filters::LevelFilter;

mod parse;

use parse::{
    deadline_margin, ledger_ttl_days, log_format, max_concurrency, max_write_rate,
    metrics_namespace, parse_level, progress_interval, queue_url, region, resource_name, topic_arn,
    write_mode, xray_daemon,
};

pub(crate) const DEFAULT_TABLE_NAME: &str = "poc-chargeback-chargebacks-dev";
pub(crate) const DEFAULT_REGION: &str = "sa-east-1";
pub(crate) const DEFAULT_DATE_INDEX: &str = "partition_date-index";
/// Updates in flight per invocation. Measured against DynamoDB Local and the
/// embedded engine (see the README): beyond this the rate stops improving on
/// two cores, and real DynamoDB (a few ms per update) needs this many to stamp
/// a million records well inside one invocation.
pub(crate) const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// New work stops this long before the invocation's deadline unless
/// configured otherwise: room for the updates in flight to finish (each is
/// bounded by the SDK's attempt timeout) and for the response to be posted.
pub(crate) const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_secs(10);
/// Far beyond any useful value; guards against a typo (e.g. 100000).
pub(crate) const MAX_MAX_CONCURRENCY: usize = 4096;
/// The highest `MAX_WRITE_RATE` accepted: far above any one table's
/// capacity, low enough to catch a value typed in the wrong unit.
pub(crate) const MAX_MAX_WRITE_RATE: u32 = 1_000_000;
/// The CloudWatch namespace of our metrics, as the seed names it.
pub(crate) const DEFAULT_METRICS_NAMESPACE: &str = "POC-Chargeback/ConsolidationUpdater";
/// How long the run ledger keeps a run after its last write.
pub(crate) const DEFAULT_LEDGER_TTL_DAYS: u32 = 35;
/// Ten years: beyond it, a typo.
pub(crate) const MAX_LEDGER_TTL_DAYS: u32 = 3650;
/// How often a long fan-out logs its progress.
pub(crate) const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

/// Every invalid setting at once, so that one start-up names them all
/// instead of one fix and one restart per variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The variables at fault, in the order they were read.
    pub fn variables(&self) -> Vec<&'static str> {
        self.0.iter().map(|e| e.variable).collect()
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            all => {
                write!(f, "invalid configuration ({} variables): ", all.len())?;
                for (i, problem) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects the problems of the variables read so far.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    /// The value when it is valid; otherwise the problem is kept and the
    /// default stands in, so the remaining variables are still checked.
    fn take<T>(&mut self, read: Result<T, ConfigError>) -> Option<T> {
        read.map_err(|problem| self.0.push(problem)).ok()
    }
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
    /// `MAX_WRITE_RATE`: writes per second per invocation the pacing never
    /// exceeds; `None`: only the table's throttling paces.
    pub max_write_rate: Option<u32>,
    pub dlq_url: Option<String>,
    /// SNS topic for one failure summary per invocation with failures.
    pub failure_topic_arn: Option<String>,
    /// New work stops this long before the invocation's deadline.
    pub deadline_margin: Duration,
    /// CloudWatch namespace of the EMF metrics.
    pub metrics_namespace: String,
    /// How often a long fan-out logs its progress.
    pub progress_interval: Duration,
    /// Send X-Ray subsegments to the daemon at `AWS_XRAY_DAEMON_ADDRESS`:
    /// on in Lambda when that variable is set (active tracing), and outside
    /// Lambda only when `XRAY_TRACING=on` asks for it.
    pub xray: Option<XrayDaemon>,
    /// The function as Lambda names it; `None` outside Lambda.
    pub function: Option<FunctionIdentity>,
    /// How the conditional updates are sent.
    pub write_mode: WriteMode,
    /// `LEDGER_TABLE_NAME`: the run ledger's table; `None`: no ledger.
    pub ledger_table: Option<String>,
    /// `LEDGER_TTL_DAYS`: how long the ledger keeps a run after its last write.
    pub ledger_ttl_days: u32,
}

/// How each record's conditional update is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// One `UpdateItem` per record.
    UpdateItem,
    /// PartiQL `BatchExecuteStatement`, 25 conditional `UPDATE`s per request.
    /// The default: in the benchmark (README, Measured) it stamps about twice
    /// as fast as `UpdateItem` with a tenth of the client CPU and a 25th of
    /// the requests, for the same write units.
    #[default]
    BatchStatement,
}

/// `AWS_LAMBDA_FUNCTION_NAME` and `AWS_LAMBDA_FUNCTION_VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionIdentity {
    pub name: String,
    pub version: String,
}

impl FunctionIdentity {
    /// The function Lambda runs, from its variables; `None` outside Lambda.
    pub fn from_env() -> Option<Self> {
        Self::from_lookup(&|name: &str| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Option<Self> {
        get("AWS_LAMBDA_FUNCTION_NAME").map(|name| Self {
            name,
            version: get("AWS_LAMBDA_FUNCTION_VERSION").unwrap_or_else(|| "$LATEST".into()),
        })
    }

    /// For a runtime started without Lambda's variables (a local test).
    pub fn unnamed() -> Self {
        Self {
            name: env!("CARGO_PKG_NAME").into(),
            version: "$LATEST".into(),
        }
    }
}

/// Where X-Ray segments go: the daemon's UDP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XrayDaemon(pub std::net::SocketAddr);

impl Settings {
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`; empty values count as unset. Every
    /// invalid value is reported, not only the first.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut problems = Problems::default();
        let log_level = match get("LOG_LEVEL") {
            Some(value) => problems.take(parse_level("LOG_LEVEL", &value)),
            None => get("AWS_LAMBDA_LOG_LEVEL")
                .and_then(|value| problems.take(parse_level("AWS_LAMBDA_LOG_LEVEL", &value))),
        }
        .unwrap_or(LevelFilter::INFO);
        let table_name = problems.take(resource_name(
            "DYNAMODB_TABLE_NAME",
            get("DYNAMODB_TABLE_NAME").unwrap_or_else(|| DEFAULT_TABLE_NAME.into()),
        ));
        let region = get("AWS_REGION").and_then(|v| problems.take(region(v)));
        let log_format = get("LOG_FORMAT").and_then(|v| problems.take(log_format(&v)));
        let date_index = problems.take(resource_name(
            "CHARGEBACK_DATE_INDEX",
            get("CHARGEBACK_DATE_INDEX").unwrap_or_else(|| DEFAULT_DATE_INDEX.into()),
        ));
        let max_concurrency =
            get("MAX_CONCURRENCY").and_then(|v| problems.take(max_concurrency(&v)));
        let max_write_rate = get("MAX_WRITE_RATE").and_then(|v| problems.take(max_write_rate(&v)));
        let dlq_url = get("DLQ_URL").and_then(|v| problems.take(queue_url(&v)));
        let failure_topic_arn = get("FAILURE_TOPIC_ARN").and_then(|v| problems.take(topic_arn(&v)));
        let deadline_margin =
            get("DEADLINE_SAFETY_MARGIN_MS").and_then(|v| problems.take(deadline_margin(&v)));
        let metrics_namespace =
            get("METRICS_NAMESPACE").and_then(|v| problems.take(metrics_namespace(&v)));
        let progress_interval =
            get("PROGRESS_LOG_INTERVAL_SECONDS").and_then(|v| problems.take(progress_interval(&v)));
        let xray = problems.take(xray_daemon(&get)).flatten();
        let write_mode = get("WRITE_MODE").and_then(|v| problems.take(write_mode(&v)));
        let ledger_table = get("LEDGER_TABLE_NAME")
            .and_then(|v| problems.take(resource_name("LEDGER_TABLE_NAME", v)));
        let ledger_ttl_days =
            get("LEDGER_TTL_DAYS").and_then(|v| problems.take(ledger_ttl_days(&v)));
        match (table_name, date_index) {
            (Some(table_name), Some(date_index)) if problems.0.is_empty() => Ok(Self {
                table_name,
                region,
                log_level,
                log_format,
                date_index,
                max_concurrency: max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY),
                max_write_rate,
                dlq_url,
                failure_topic_arn,
                deadline_margin: deadline_margin.unwrap_or(DEFAULT_DEADLINE_MARGIN),
                metrics_namespace: metrics_namespace
                    .unwrap_or_else(|| DEFAULT_METRICS_NAMESPACE.into()),
                progress_interval: progress_interval.unwrap_or(DEFAULT_PROGRESS_INTERVAL),
                xray,
                write_mode: write_mode.unwrap_or_default(),
                ledger_table,
                ledger_ttl_days: ledger_ttl_days.unwrap_or(DEFAULT_LEDGER_TTL_DAYS),
                function: FunctionIdentity::from_lookup(&get),
            }),
            _ => Err(ConfigErrors(problems.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigErrors> {
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
        assert_eq!(s.metrics_namespace, "POC-Chargeback/ConsolidationUpdater");
        assert_eq!(s.progress_interval, DEFAULT_PROGRESS_INTERVAL);
        assert_eq!((s.xray, s.function), (None, None));
        assert_eq!(s.write_mode, WriteMode::BatchStatement);
        assert_eq!((s.ledger_table, s.ledger_ttl_days), (None, 35));
    }

    #[test]
    fn the_ledger_is_named_and_its_ttl_checked() {
        let s = settings(&[("LEDGER_TABLE_NAME", "runs"), ("LEDGER_TTL_DAYS", "7")]).unwrap();
        assert_eq!(
            (s.ledger_table.as_deref(), s.ledger_ttl_days),
            (Some("runs"), 7)
        );
        for bad in ["0", "-1", "3651", "a week"] {
            let problems = settings(&[("LEDGER_TTL_DAYS", bad)]).unwrap_err();
            assert_eq!(problems.variables(), ["LEDGER_TTL_DAYS"], "{bad}");
        }
        let problems = settings(&[("LEDGER_TABLE_NAME", "no spaces allowed")]).unwrap_err();
        assert_eq!(problems.variables(), ["LEDGER_TABLE_NAME"]);
    }

    #[test]
    fn tracing_is_on_in_lambda_and_off_elsewhere_unless_asked() {
        let daemon = ("AWS_XRAY_DAEMON_ADDRESS", "169.254.79.129:2000");
        let lambda = ("AWS_LAMBDA_FUNCTION_NAME", "updater");
        let on = Some(XrayDaemon("169.254.79.129:2000".parse().unwrap()));
        assert_eq!(settings(&[daemon, lambda]).unwrap().xray, on);
        assert_eq!(settings(&[daemon]).unwrap().xray, None);
        assert_eq!(
            settings(&[daemon, ("XRAY_TRACING", "on")]).unwrap().xray,
            on
        );
        assert_eq!(
            settings(&[daemon, lambda, ("XRAY_TRACING", "off")])
                .unwrap()
                .xray,
            None
        );
        // No daemon address (tracing not active): nothing to send to.
        assert_eq!(settings(&[lambda]).unwrap().xray, None);
        let both = (
            "AWS_XRAY_DAEMON_ADDRESS",
            "tcp:127.0.0.1:2000 udp:127.0.0.1:2001",
        );
        assert_eq!(
            settings(&[both, lambda]).unwrap().xray,
            Some(XrayDaemon("127.0.0.1:2001".parse().unwrap()))
        );
    }

    #[test]
    fn the_function_identity_comes_from_lambdas_variables() {
        let s = settings(&[
            ("AWS_LAMBDA_FUNCTION_NAME", "updater"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "7"),
        ])
        .unwrap();
        assert_eq!(
            s.function,
            Some(FunctionIdentity {
                name: "updater".into(),
                version: "7".into()
            })
        );
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
            ("MAX_WRITE_RATE", " 750 "),
            ("DLQ_URL", "https://sqs.us-east-2.amazonaws.com/1/dlq"),
            (
                "FAILURE_TOPIC_ARN",
                "arn:aws:sns:us-east-2:123456789012:failures",
            ),
            ("DEADLINE_SAFETY_MARGIN_MS", "2500"),
            ("METRICS_NAMESPACE", "Team/Updater"),
            ("PROGRESS_LOG_INTERVAL_SECONDS", "3"),
            ("WRITE_MODE", "Update-Item"),
        ])
        .unwrap();
        assert_eq!(s.write_mode, WriteMode::UpdateItem);
        assert_eq!(s.metrics_namespace, "Team/Updater");
        assert_eq!(s.progress_interval, Duration::from_secs(3));
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
        assert_eq!(s.max_write_rate, Some(750));
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
            ("MAX_WRITE_RATE", "0"),
            ("MAX_WRITE_RATE", "1.5k"),
            ("MAX_WRITE_RATE", "2000000"),
            ("DYNAMODB_TABLE_NAME", "no spaces allowed"),
            ("CHARGEBACK_DATE_INDEX", "x"),
            ("AWS_REGION", "Sao Paulo"),
            ("DLQ_URL", "my-queue"),
            ("LOG_FORMAT", "xml"),
            ("FAILURE_TOPIC_ARN", "failures"),
            ("DEADLINE_SAFETY_MARGIN_MS", "-1"),
            ("DEADLINE_SAFETY_MARGIN_MS", "900000"),
            ("DEADLINE_SAFETY_MARGIN_MS", "0"),
            ("METRICS_NAMESPACE", "AWS/Lambda"),
            ("METRICS_NAMESPACE", "no{braces}"),
            ("PROGRESS_LOG_INTERVAL_SECONDS", "0"),
            ("PROGRESS_LOG_INTERVAL_SECONDS", "soon"),
            ("XRAY_TRACING", "maybe"),
            ("WRITE_MODE", "fast"),
        ] {
            let error = settings(&[(variable, value)]).unwrap_err();
            assert_eq!(error.variables(), [variable]);
            assert!(error.to_string().contains(variable), "{error}");
        }
    }

    #[test]
    fn every_invalid_value_is_reported_at_once() {
        let error = settings(&[
            ("LOG_LEVEL", "LOUD"),
            ("MAX_CONCURRENCY", "0"),
            ("DYNAMODB_TABLE_NAME", "x"),
            ("WRITE_MODE", "fast"),
            ("XRAY_TRACING", "maybe"),
            ("DLQ_URL", "https://sqs.us-east-2.amazonaws.com/1/dlq"),
        ])
        .unwrap_err();
        assert_eq!(
            error.variables(),
            [
                "LOG_LEVEL",
                "DYNAMODB_TABLE_NAME",
                "MAX_CONCURRENCY",
                "XRAY_TRACING",
                "WRITE_MODE"
            ]
        );
        let text = error.to_string();
        assert!(
            text.starts_with("invalid configuration (5 variables): "),
            "{text}"
        );
        assert!(
            text.contains("TRACE, DEBUG, INFO, WARN (or WARNING), ERROR or FATAL"),
            "the accepted levels are named: {text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
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
