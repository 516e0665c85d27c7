//! One integration-test binary. Scenarios run against every real backend: the
//! embedded engine always, DynamoDB Local when `DYNAMODB_LOCAL_ENDPOINT` names
//! it (`.ci/run` starts it and sets it). Without it those tests are listed as
//! ignored and a notice says so: nothing skips silently. The same goes for the
//! deployment package, tested when `./build.sh` has written it.
//!
//! Each module lists its own tests (`tests()`, beside their definitions);
//! this file only gathers them and runs them.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};

use consolidation_updater::settings::WriteMode;
use support::{Backend, Server};

/// `trials!("prefix"; f, g)`: a trial per async test function without
/// arguments, named `prefix::f`. `trials!(make, "prefix"; f, g)`: each made
/// by `make("prefix::f", f)` instead.
macro_rules! trials {
    ($prefix:literal; $($name:ident),* $(,)?) => {
        trials!($crate::test, $prefix; $($name),*)
    };
    ($make:expr, $prefix:literal; $($name:ident),* $(,)?) => {
        vec![$($make(concat!($prefix, "::", stringify!($name)), $name)),*]
    };
}

/// `server_tests![f, g]`: each async `fn(Backend)` with its name, as
/// [`ServerTest`]s (a constant's value).
macro_rules! server_tests {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |backend| Box::pin($name(backend)))),*]
    };
}

mod binary;
mod capacity_proxy;
mod cli;
mod dead_letters;
mod debug_level;
mod faults;
mod fuzz_corpus;
mod insights;
mod ledger;
mod ledger_cli;
mod observability;
mod package;
mod property;
mod proxy;
mod resume;
mod runtime_api;
mod runtime_api_stub;
mod scenarios;
mod support;

const DYNAMODB_LOCAL_ENDPOINT: &str = "DYNAMODB_LOCAL_ENDPOINT";
const MOTO_ENDPOINT: &str = "MOTO_ENDPOINT";

/// A test of one server, given as [`Backend`].
pub type ServerTest = fn(Backend) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// What the tests can run against besides the embedded engine, from the
/// environment.
pub struct Backends {
    pub dynamodb_local: Option<String>,
    pub moto: Option<String>,
    pub package: Option<PathBuf>,
}

pub fn run(test: impl Future<Output = anyhow::Result<()>>) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("runtime: {e}")))?;
    runtime
        .block_on(test)
        .map_err(|e| Failed::from(format!("{e:#}")))
}

/// An async test that needs nothing from outside (the embedded engine at most).
pub fn test<F>(name: impl Into<String>, test: impl FnOnce() -> F + Send + 'static) -> Trial
where
    F: Future<Output = anyhow::Result<()>>,
{
    Trial::test(name, move || run(test()))
}

/// A test without I/O.
pub fn sync_test(name: &str, test: fn() -> anyhow::Result<()>) -> Trial {
    Trial::test(name, move || {
        test().map_err(|e| Failed::from(format!("{e:#}")))
    })
}

impl Backends {
    fn from_env() -> Self {
        let set = |name: &str| std::env::var(name).ok().filter(|e| !e.is_empty());
        Self {
            dynamodb_local: set(DYNAMODB_LOCAL_ENDPOINT),
            moto: set(MOTO_ENDPOINT),
            package: package::package_path(),
        }
    }

    /// A test on DynamoDB Local, writing with `write_mode`; listed as ignored
    /// when there is none.
    pub fn on_dynamodb_local<F>(
        &self,
        write_mode: WriteMode,
        name: impl Into<String>,
        test: impl FnOnce(Backend) -> F + Send + 'static,
    ) -> Trial
    where
        F: Future<Output = anyhow::Result<()>>,
    {
        let backend = self.dynamodb_local.clone().map(|endpoint| Backend {
            server: Server::DynamoDbLocal(endpoint),
            write_mode,
        });
        let ignored = backend.is_none();
        Trial::test(name, move || match backend {
            Some(backend) => run(test(backend)),
            None => Err(Failed::from(format!(
                "{DYNAMODB_LOCAL_ENDPOINT} is not set"
            ))),
        })
        .with_ignored_flag(ignored)
    }

    /// A test on moto's server (given its endpoint); listed as ignored when
    /// there is none.
    pub fn on_moto<F>(
        &self,
        name: impl Into<String>,
        test: impl FnOnce(String) -> F + Send + 'static,
    ) -> Trial
    where
        F: Future<Output = anyhow::Result<()>>,
    {
        let endpoint = self.moto.clone();
        let ignored = endpoint.is_none();
        Trial::test(name, move || match endpoint {
            Some(endpoint) => run(test(endpoint)),
            None => Err(Failed::from(format!("{MOTO_ENDPOINT} is not set"))),
        })
        .with_ignored_flag(ignored)
    }

    /// `test` on the embedded engine (`{prefix}::embedded::{name}`, one
    /// `UpdateItem` per record) and on DynamoDB Local
    /// (`{prefix}::dynamodb_local::{name}`, batch statements).
    pub fn on_both_servers(&self, prefix: &str, name: &str, test: ServerTest) -> [Trial; 2] {
        [
            crate::test(format!("{prefix}::embedded::{name}"), move || {
                test(Backend::embedded())
            }),
            self.on_dynamodb_local(
                WriteMode::BatchStatement,
                format!("{prefix}::dynamodb_local::{name}"),
                test,
            ),
        ]
    }

    fn notice(&self) -> String {
        [
            match &self.dynamodb_local {
                Some(endpoint) => format!("DynamoDB Local suite: running against {endpoint}"),
                None => format!(
                    "DynamoDB Local suite: NOT RUN ({DYNAMODB_LOCAL_ENDPOINT} is not set; its tests \
                     are listed as ignored). `.ci/run` starts DynamoDB Local and runs it."
                ),
            },
            match &self.moto {
                Some(endpoint) => format!("SQS/SNS suite: running against moto at {endpoint}"),
                None => format!(
                    "SQS/SNS suite: NOT RUN ({MOTO_ENDPOINT} is not set; its tests are listed as \
                     ignored). `.ci/run` starts moto's server and runs it."
                ),
            },
            match &self.package {
                Some(zip) => format!("Deployment package: testing {}", zip.display()),
                None => format!(
                    "Deployment package: NOT TESTED (no consolidation-updater.zip at the \
                     repository root and {} is not set; its test is listed as ignored). \
                     `.ci/run` builds it with ./build.sh and tests it.",
                    package::PACKAGE_ZIP
                ),
            },
        ]
        .join("\n")
    }
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let backends = Backends::from_env();
    let notice = backends.notice();
    eprintln!("{notice}");

    let trials = [
        scenarios::tests,
        faults::tests,
        dead_letters::tests,
        ledger::tests,
        resume::tests,
        capacity_proxy::tests,
        fuzz_corpus::tests,
        property::tests,
        insights::tests,
        observability::tests,
        debug_level::tests,
        binary::tests,
        cli::tests,
        ledger_cli::tests,
        package::tests,
    ]
    .iter()
    .flat_map(|tests| tests(&backends))
    .collect();

    let conclusion = libtest_mimic::run(&args, trials);
    eprintln!("{notice}");
    conclusion.exit_code()
}
