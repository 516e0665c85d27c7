//! The direction of dependencies inside `src/`, checked from the source text:
//! the domain imports nothing of the rest of the crate, and no two top-level
//! modules depend on each other, directly or around a loop. ARCHITECTURE.md
//! draws the same map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                files.push((path, text));
            }
        }
    }
    files
}

/// The top-level module a file of `src/` belongs to (`store` for
/// `src/store/dynamodb/reads.rs`); `None` for the crate roots and the binary.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first.strip_suffix(".rs") {
        // The crate roots; `src/bin/` is the binary, a crate of its own.
        Some("lib" | "main") => None,
        None if first == "bin" => None,
        Some(module) => Some(module.to_owned()),
        None => Some(first.to_owned()),
    }
}

/// The top-level modules a file's non-test code names through `crate::`,
/// including inside grouped imports (`use crate::{a, b::c}`).
fn crate_references(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                if !name.is_empty() {
                    found.insert(name.to_owned());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in sources(&src) {
        let Some(module) = top_module(&src, &file) else {
            continue;
        };
        let uses: Vec<String> = crate_references(&text)
            .into_iter()
            .filter(|used| *used != module)
            .collect();
        graph.entry(module).or_default().extend(uses);
    }
    graph
}

#[test]
fn the_domain_imports_nothing_from_the_rest_of_the_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for (file, text) in sources(&src.join("domain")) {
        for used in crate_references(&text) {
            if used != "domain" {
                offenders.push(format!("{} uses crate::{used}", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the core must stay pure: {offenders:#?}"
    );
}

#[test]
fn no_two_modules_depend_on_each_other_around_a_loop() {
    let graph = dependency_graph();
    // Depth-first search; a module met again while still on the path closes a loop.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if !done.insert(module.to_owned()) {
            return None;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("modules depend on each other: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_check_sees_grouped_and_inline_references() {
    let text = "use crate::{config::Settings, domain};\nfn f() { crate::telemetry::x(); }\n\
                #[cfg(test)]\nmod tests { use crate::store; }";
    assert_eq!(
        crate_references(text),
        BTreeSet::from(["config".into(), "domain".into(), "telemetry".into()])
    );
}
