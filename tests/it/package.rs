//! The deployment package `./build.sh` writes, opened as Lambda opens it: one
//! executable `bootstrap` at the root of the zip, started against a
//! runtime-API stub. It proves the artifact we ship, not the test build.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use consolidation_updater::local::TableShape;
use libtest_mimic::{Failed, Trial};

use crate::Backends;
use crate::runtime_api::*;
use crate::support::*;

/// Listed as ignored when there is no package.
pub fn tests(backends: &Backends) -> Vec<Trial> {
    let package = backends.package.clone();
    let ignored = package.is_none();
    vec![
        Trial::test(
            "package::the_packaged_bootstrap_polls_handles_a_kafka_event_and_posts_the_response",
            move || match package {
                Some(zip) => crate::run(
                    the_packaged_bootstrap_polls_handles_a_kafka_event_and_posts_the_response(zip),
                ),
                None => Err(Failed::from("no deployment package: run ./build.sh")),
            },
        )
        .with_ignored_flag(ignored),
    ]
}

/// Where the test finds the package: this variable, else `./build.sh`'s
/// default output at the repository root.
pub const PACKAGE_ZIP: &str = "PACKAGE_ZIP";

/// An emulator command that runs a package built for another architecture,
/// e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu` for the arm64 package on
/// x86-64 (Debian: qemu-user, libc6-arm64-cross).
pub const PACKAGE_RUNNER: &str = "PACKAGE_RUNNER";

pub fn package_path() -> Option<PathBuf> {
    match std::env::var(PACKAGE_ZIP) {
        Ok(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("consolidation-updater.zip");
            default.exists().then_some(default)
        }
    }
}

/// ELF `e_machine` of the architecture these tests run on.
fn host_machine() -> Option<u16> {
    match std::env::consts::ARCH {
        "x86_64" => Some(0x3e),
        "aarch64" => Some(0xb7),
        _ => None,
    }
}

/// Unpacks the archive's only entry, checking what Lambda needs of it.
/// Returns what to start: the bootstrap itself, or a script that starts it
/// under `runner`.
fn unpack_bootstrap(zip: &Path, into: &Path, runner: Option<&str>) -> anyhow::Result<PathBuf> {
    let file = std::fs::File::open(zip).with_context(|| format!("{}", zip.display()))?;
    let mut archive = zip::ZipArchive::new(file).context("not a zip archive")?;
    let names: Vec<&str> = archive.file_names().collect();
    ensure!(
        names == ["bootstrap"],
        "the package must hold `bootstrap` alone, at its root; it holds {names:?}"
    );
    let mut entry = archive.by_name("bootstrap")?;
    let mode = entry
        .unix_mode()
        .context("bootstrap has no Unix mode: Lambda would not find it executable")?;
    ensure!(
        mode & 0o555 == 0o555,
        "bootstrap must be readable and executable by all, its mode is {mode:o}"
    );
    let mut binary = Vec::new();
    entry.read_to_end(&mut binary)?;

    ensure!(
        binary.starts_with(b"\x7fELF"),
        "bootstrap is not an ELF binary"
    );
    let machine = binary
        .get(18..20)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .context("truncated ELF header")?;
    if runner.is_none() && host_machine() != Some(machine) {
        bail!(
            "bootstrap is built for ELF machine {machine:#x}, not for this {} host: \
             build the native package (`./build.sh --arch {}`) or set {PACKAGE_RUNNER}",
            std::env::consts::ARCH,
            std::env::consts::ARCH
        );
    }
    // Stripped: no symbol table section name left in the string table.
    ensure!(
        !binary.windows(8).any(|w| w == b".symtab\0"),
        "bootstrap is not stripped"
    );

    std::fs::create_dir_all(into)?;
    let path = into.join("bootstrap");
    std::fs::write(&path, &binary)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    let Some(runner) = runner else {
        return Ok(path);
    };
    let script = into.join("run-bootstrap");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {runner} {} \"$@\"\n", path.display()),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

pub async fn the_packaged_bootstrap_polls_handles_a_kafka_event_and_posts_the_response(
    zip: PathBuf,
) -> anyhow::Result<()> {
    let unpacked = std::env::temp_dir().join(format!(
        "consolidation-updater-package-{}",
        std::process::id()
    ));
    let result = async {
        let runner = std::env::var(PACKAGE_RUNNER).ok().filter(|r| !r.is_empty());
        let bootstrap = unpack_bootstrap(&zip, &unpacked, runner.as_deref())?;

        // Built without the embedded engine: the demo is not in it.
        let demo = tokio::process::Command::new(&bootstrap)
            .arg("demo")
            .env_clear()
            .output()
            .await?;
        ensure!(
            !demo.status.success(),
            "the packaged bootstrap still runs the embedded demo"
        );

        let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
        let (response, stdout, stderr) = one_lambda_invocation_of(&bootstrap, &table).await?;
        ensure!(
            response == Some(serde_json::json!({"batchItemFailures": []})),
            "response {response:?}; stdout: {stdout}; stderr: {stderr}"
        );
        ensure!(
            table
                .execution_of(&chargeback("cb-1", "2025-11-20", ""))
                .await?
                == Some(2),
            "the sample event's chargeback was not stamped; stdout: {stdout}"
        );
        ensure!(
            stdout
                .lines()
                .any(|l| l.contains("\"message outcome: applied\"")),
            "no outcome line in {stdout}"
        );
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&unpacked);
    result
}
