//! The fuzz target's saved corpus, replayed as an ordinary test (fuzzing
//! itself needs a nightly compiler and is not part of CI).

use anyhow::{Context as _, ensure};
use libtest_mimic::Trial;

use crate::Backends;

pub fn tests(_: &Backends) -> Vec<Trial> {
    trials!(crate::sync_test, "fuzz_corpus"; every_saved_input_decodes_without_panicking)
}

fn every_saved_input_decodes_without_panicking() -> anyhow::Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/decode_record");
    let entries = std::fs::read_dir(dir).with_context(|| dir.to_owned())?;
    let mut replayed = 0;
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path())?;
        consolidation_updater::testing::exercise_decoders(&bytes);
        replayed += 1;
    }
    ensure!(replayed >= 4, "only {replayed} inputs in {dir}");
    eprintln!("fuzz corpus: {replayed} inputs replayed without a panic");
    Ok(())
}
