//! The evaluator's own rules, on hand-made events and patterns: run by the
//! runbook's test before its checks on the binary's real lines.

use anyhow::{Context as _, ensure};

use super::logs::LogGroup;
use super::query::insights_regex;

/// Rules of the evaluator on hand-made events and patterns, next to the
/// runbook's checks on real ones.
pub(super) fn evaluator_follows_the_documented_rules() -> anyhow::Result<()> {
    let group = LogGroup::from_lines(
        "test",
        &[
            r#"{"timestamp":"2026-01-01T10:00:00.000Z","level":"INFO","message":"Alpha beta","n":2,"flag":true,"nested":{"a":{"b":"deep"}},"list":[{"id":"x"},{"id":"y"}]}"#,
            r#"{"timestamp":"2026-01-01T10:59:59.999Z","level":"INFO","message":"alpha","n":"3","flag":false}"#,
            r#"{"timestamp":"2026-01-01T11:00:00.000Z","level":"WARN","message":"gamma"}"#,
            "plain text line, not JSON",
        ],
    )?;
    let n = |query: &str| -> anyhow::Result<usize> { Ok(group.run(query)?.rows.len()) };
    ensure!(
        n("filter message like \"alpha\"")? == 1,
        "case-sensitive substring"
    );
    ensure!(n("filter message like /^alpha$/")? == 1, "anchored regex");
    ensure!(n("filter message =~ /(?i)ALPHA/")? == 2, "(?i)");
    ensure!(
        n("filter message like \"lph\"")? == 2,
        "substring, not word"
    );
    ensure!(
        n("filter nested.a.b = \"deep\" and list.1.id = \"y\"")? == 1,
        "flattened"
    );
    ensure!(
        n("filter flag = 1")? == 1 && n("filter flag = 0")? == 1,
        "booleans"
    );
    ensure!(
        n("filter n > 2")? == 1,
        "a numeric string compares as a number"
    );
    ensure!(
        n("filter n = 9 or not ispresent(n)")? == 2,
        "absent: false, not: true"
    );
    ensure!(n("filter level in [\"WARN\", \"ERROR\"]")? == 1);
    ensure!(
        n("filter @message like \"plain text\"")? == 1,
        "@message is the raw line"
    );
    let sums = group.run("stats count(*) as all, count(n) as with_n, sum(n) as total")?;
    ensure!(sums.totals(&["all", "with_n", "total"])? == [4.0, 2.0, 5.0]);
    let bins = group.run("filter ispresent(level) | stats count(*) as c by bin(1h)")?;
    let per_bin: Vec<(String, f64)> = bins
        .rows
        .iter()
        .map(|r| {
            (
                r.text("bin(1h)").unwrap_or_default(),
                r.num("c").unwrap_or(0.0),
            )
        })
        .collect();
    ensure!(
        per_bin
            == [
                ("2026-01-01 10:00:00.000".to_owned(), 2.0),
                ("2026-01-01 11:00:00.000".to_owned(), 1.0)
            ],
        "{per_bin:?}"
    );
    ensure!(
        group.run("stats count(*) by level").is_err(),
        "grouping by a field some events lack is refused"
    );
    ensure!(group.run("filter message like /a{2,/").is_err());
    ensure!(
        group.run("dedup message").is_err(),
        "unknown commands are refused"
    );
    let parsed = group.run("parse message \"* beta\" as first | filter ispresent(first)")?;
    ensure!(parsed.rows.len() == 1 && parsed.rows[0].text("first").as_deref() == Some("Alpha"));
    let kept = group.run("parse message \"nothing * here\" as x | stats count(*) as c")?;
    ensure!(
        kept.totals(&["c"])? == [4.0],
        "events that do not match a parse stay"
    );

    for (pattern, text, expected) in [
        ("a.c", "xabcx", true),
        ("^a.c$", "xabcx", false),
        ("colou?r", "color", true),
        ("^(ab)+$", "ababab", true),
        ("^(ab)+$", "ababa", false),
        ("^a{2,3}$", "aaaa", false),
        ("^a{2,3}$", "aaa", true),
        ("[0-9]+ms", "took 12ms", true),
        ("[^a-z]", "abc", false),
        ("\\d\\s\\w", "1 x", true),
        ("^(START|END) RequestId", "END RequestId: x", true),
        ("^x.*?y$", "xaaay", true),
        ("a\\.b", "axb", false),
        ("; dead-lettered$", "refused; dead-lettered", true),
    ] {
        let regex = insights_regex(pattern).with_context(|| format!("/{pattern}/"))?;
        ensure!(
            regex.is_match(text) == expected,
            "/{pattern}/ on {text:?} should be {expected}"
        );
    }
    for bad in ["(ab", "a)", "*a", "\\b", "[a-", "(?=a)"] {
        ensure!(insights_regex(bad).is_err(), "/{bad}/ must be refused");
    }
    Ok(())
}
