//! The runbook's queries, read out of `docs/operations.md`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, anyhow, ensure};

use super::eval::Results;
use super::logs::LogGroup;

const RUNBOOK: &str = include_str!("../../../docs/operations.md");

/// The runbook's queries: each ```insights block, by the `####` heading
/// before it.
pub(super) struct Runbook(BTreeMap<String, String>);

impl Runbook {
    pub(super) fn load() -> anyhow::Result<Self> {
        let mut queries = BTreeMap::new();
        let mut heading: Option<String> = None;
        let mut lines = RUNBOOK.lines();
        while let Some(line) = lines.next() {
            if let Some(fence) = line.trim_start().strip_prefix("```") {
                let mut body = String::new();
                loop {
                    let inner = lines
                        .next()
                        .ok_or_else(|| anyhow!("a code block that never ends"))?;
                    if inner.trim_start().starts_with("```") {
                        break;
                    }
                    body.push_str(inner);
                    body.push('\n');
                }
                if fence.trim() == "insights" {
                    let name = heading.take().ok_or_else(|| {
                        anyhow!("an insights block without a #### heading:\n{body}")
                    })?;
                    ensure!(
                        queries.insert(name.clone(), body).is_none(),
                        "two queries named {name:?}"
                    );
                }
            } else if let Some(name) = line.strip_prefix("#### ") {
                heading = Some(name.trim().to_owned());
            } else if line.starts_with('#') {
                heading = None;
            }
        }
        Ok(Self(queries))
    }

    pub(super) fn names(&self) -> BTreeSet<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// The query of the heading `name`, run on `group`.
    pub(super) fn run(&self, group: &LogGroup, name: &str) -> anyhow::Result<Results> {
        let text = self
            .0
            .get(name)
            .ok_or_else(|| anyhow!("no query {name:?} in the runbook"))?;
        group
            .run(text)
            .with_context(|| format!("runbook query {name:?}"))
    }
}
