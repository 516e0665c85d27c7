//! Running a parsed query over log events: the values and events it sees,
//! `filter`, `parse`, `stats`, `sort`, `limit`, and the results the tests read.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{anyhow, ensure};

use super::query::{Aggregate, Command, Comparison, Condition, GroupKey, Match, Operand, Query};

/// A field's value. JSON numbers (and booleans, as 1 and 0) are numbers;
/// everything else is text.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Num(f64),
    Text(String),
}

impl Val {
    /// Text that reads as a number counts as one in arithmetic and ordering
    /// (the seed's `sum()` over `parse`d text relies on it).
    pub(super) fn number(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Text(t) => t.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        }
    }

    pub(super) fn text(&self) -> String {
        match self {
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
            Val::Num(n) => n.to_string(),
            Val::Text(t) => t.clone(),
        }
    }
}

/// One log event: its discovered fields, `@`-fields included.
#[derive(Debug, Clone, Default)]
pub(super) struct Event(pub(super) BTreeMap<String, Val>);

impl Event {
    pub(super) fn get(&self, field: &str) -> Option<&Val> {
        self.0.get(field)
    }

    pub(super) fn num(&self, field: &str) -> Option<f64> {
        self.get(field).and_then(Val::number)
    }

    pub(super) fn text(&self, field: &str) -> Option<String> {
        self.get(field).map(Val::text)
    }
}

/// A query's result: rows of named values, and the columns to show.
#[derive(Debug)]
pub(super) struct Results {
    pub(super) columns: Vec<String>,
    pub(super) rows: Vec<Event>,
}

impl Results {
    /// The sum of each column over every row (every `bin()` of a summary).
    pub(super) fn totals(&self, columns: &[&str]) -> anyhow::Result<Vec<f64>> {
        columns
            .iter()
            .map(|c| {
                self.rows.iter().try_fold(0.0, |sum, row| {
                    row.num(c)
                        .map(|n| sum + n)
                        .ok_or_else(|| anyhow!("no number in column {c} of {row:?}"))
                })
            })
            .collect()
    }

    /// `value` summed per distinct `key` (over every `bin()`).
    pub(super) fn sum_by(&self, key: &str, value: &str) -> anyhow::Result<BTreeMap<String, f64>> {
        let mut sums = BTreeMap::new();
        for row in &self.rows {
            let k = row
                .text(key)
                .ok_or_else(|| anyhow!("no {key} in {row:?}"))?;
            let v = row
                .num(value)
                .ok_or_else(|| anyhow!("no {value} in {row:?}"))?;
            *sums.entry(k).or_insert(0.0) += v;
        }
        Ok(sums)
    }

    pub(super) fn ensure_hourly_bins(&self) -> anyhow::Result<()> {
        for row in &self.rows {
            let bin = row.text("bin(1h)").unwrap_or_default();
            ensure!(bin.ends_with(":00:00.000"), "not an hour: {bin:?}");
        }
        Ok(())
    }

    pub(super) fn ensure_sorted_by_time(&self) -> anyhow::Result<()> {
        let times: Vec<f64> = self
            .rows
            .iter()
            .map(|r| r.num("@timestamp").unwrap_or(f64::NAN))
            .collect();
        ensure!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "not in time order: {times:?}"
        );
        Ok(())
    }
}

impl Query {
    pub(super) fn run(&self, events: &[Event]) -> anyhow::Result<Results> {
        let mut rows: Vec<Event> = events.to_vec();
        let mut columns: Option<Vec<String>> = None;
        for command in &self.0 {
            match command {
                // `fields` chooses what is shown; later commands still see
                // every field (the documentation's own examples filter on
                // fields they do not list).
                Command::Fields(names) | Command::Display(names) => columns = Some(names.clone()),
                Command::Filter(condition) => rows.retain(|row| condition.holds(row)),
                Command::Parse {
                    field,
                    literals,
                    names,
                } => {
                    for row in &mut rows {
                        let captures = row.text(field).and_then(|t| glob_captures(literals, &t));
                        for (name, value) in names.iter().zip(captures.unwrap_or_default()) {
                            row.0.insert(name.clone(), Val::Text(value));
                        }
                    }
                }
                Command::Stats { aggregates, by } => {
                    rows = stats(&rows, aggregates, by)?;
                    columns = Some(
                        by.iter()
                            .map(|(_, name)| name.clone())
                            .chain(aggregates.iter().map(|(_, name)| name.clone()))
                            .collect(),
                    );
                }
                Command::Sort(keys) => sort(&mut rows, keys)?,
                Command::Limit(n) => rows.truncate(*n),
            }
        }
        let columns = columns.unwrap_or_else(|| vec!["@timestamp".into(), "@message".into()]);
        Ok(Results { columns, rows })
    }
}

/// A glob's captures: the first literal where it first occurs, then each `*`
/// up to the next occurrence of the literal after it; a trailing `*` takes
/// the rest of the text (the documentation's `latency := *` example captures
/// the number at the end of the line, so it cannot be lazy).
fn glob_captures(literals: &[String], text: &str) -> Option<Vec<String>> {
    let (first, rest) = literals.split_first()?;
    let mut at = text.find(first.as_str())? + first.len();
    let mut captures = Vec::new();
    for (i, literal) in rest.iter().enumerate() {
        if i == rest.len() - 1 && literal.is_empty() {
            captures.push(text[at..].to_owned());
            at = text.len();
        } else {
            let found = text[at..].find(literal.as_str())? + at;
            captures.push(text[at..found].to_owned());
            at = found + literal.len();
        }
    }
    Some(captures)
}

impl Operand {
    fn value<'a>(&'a self, event: &'a Event) -> Option<&'a Val> {
        match self {
            Operand::Field(name) => event.get(name),
            Operand::Literal(value) => Some(value),
        }
    }
}

/// Numbers compare as numbers (text that reads as a number too); other text
/// compares exactly, case-sensitive, and only for (in)equality: the
/// documentation does not say how text orders, so `<` on text is false.
fn compare(left: &Val, comparison: Comparison, right: &Val) -> bool {
    match (left.number(), right.number()) {
        (Some(a), Some(b)) => match comparison {
            Comparison::Eq => a == b,
            Comparison::Ne => a != b,
            Comparison::Lt => a < b,
            Comparison::Le => a <= b,
            Comparison::Gt => a > b,
            Comparison::Ge => a >= b,
        },
        _ => match comparison {
            Comparison::Eq => left.text() == right.text(),
            Comparison::Ne => left.text() != right.text(),
            _ => false,
        },
    }
}

impl Condition {
    /// A condition on a field the event does not have is false (so `!=` too);
    /// `not` turns that into true.
    fn holds(&self, event: &Event) -> bool {
        match self {
            Condition::Or(a, b) => a.holds(event) || b.holds(event),
            Condition::And(a, b) => a.holds(event) && b.holds(event),
            Condition::Not(inner) => !inner.holds(event),
            Condition::IsPresent(field) => event.get(field).is_some(),
            Condition::Compare(a, comparison, b) => match (a.value(event), b.value(event)) {
                (Some(x), Some(y)) => compare(x, *comparison, y),
                _ => false,
            },
            Condition::Like(operand, matcher) => operand.value(event).is_some_and(|v| {
                let text = v.text();
                match matcher {
                    Match::Substring(s) => text.contains(s.as_str()),
                    Match::Pattern(regex) => regex.is_match(&text),
                }
            }),
            Condition::In(operand, items) => operand.value(event).is_some_and(|v| {
                items.iter().any(|item| {
                    item.value(event)
                        .is_some_and(|w| compare(v, Comparison::Eq, w))
                })
            }),
        }
    }
}

/// Groups in the order they first appear. Grouping by a field an event lacks
/// is refused: the documentation does not say where such events go.
fn stats(
    rows: &[Event],
    aggregates: &[(Aggregate, String)],
    by: &[(GroupKey, String)],
) -> anyhow::Result<Vec<Event>> {
    let mut groups: Vec<(Vec<Val>, Vec<&Event>)> = Vec::new();
    let mut index: HashMap<Vec<String>, usize> = HashMap::new();
    for row in rows {
        let mut key = Vec::with_capacity(by.len());
        for (group, name) in by {
            key.push(match group {
                GroupKey::Field(field) => row.get(field).cloned().ok_or_else(|| {
                    anyhow!("stats by {name}: an event without it (filter with ispresent first)")
                })?,
                GroupKey::Bin(period) => {
                    let at = row.num("@timestamp").unwrap_or(0.0) as i64;
                    let start = at.div_euclid(*period) * period;
                    let time = chrono::DateTime::from_timestamp_millis(start)
                        .ok_or_else(|| anyhow!("bad timestamp {start}"))?;
                    Val::Text(time.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
                }
            });
        }
        let text_key: Vec<String> = key.iter().map(Val::text).collect();
        let at = *index.entry(text_key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(row);
    }
    let mut out = Vec::with_capacity(groups.len());
    for (key, members) in groups {
        let mut row = Event::default();
        for ((_, name), value) in by.iter().zip(key) {
            row.0.insert(name.clone(), value);
        }
        for (aggregate, name) in aggregates {
            let numbers =
                |field: &str| -> Vec<f64> { members.iter().filter_map(|m| m.num(field)).collect() };
            // Values that are absent (or not numbers) take no part; with none
            // at all the result is absent too.
            let value = match aggregate {
                Aggregate::Count(None) => Some(members.len() as f64),
                Aggregate::Count(Some(field)) => {
                    Some(members.iter().filter(|m| m.get(field).is_some()).count() as f64)
                }
                Aggregate::CountDistinct(field) => Some(
                    members
                        .iter()
                        .filter_map(|m| m.text(field))
                        .collect::<BTreeSet<_>>()
                        .len() as f64,
                ),
                Aggregate::Sum(field) => {
                    let values = numbers(field);
                    (!values.is_empty()).then(|| values.iter().sum())
                }
                Aggregate::Min(field) => numbers(field).into_iter().reduce(f64::min),
                Aggregate::Max(field) => numbers(field).into_iter().reduce(f64::max),
            };
            if let Some(value) = value {
                row.0.insert(name.clone(), Val::Num(value));
            }
        }
        out.push(row);
    }
    Ok(out)
}

/// A stable sort; a row without the key is refused (where Insights puts them
/// is not documented).
fn sort(rows: &mut [Event], keys: &[(String, bool)]) -> anyhow::Result<()> {
    for row in rows.iter() {
        for (key, _) in keys {
            ensure!(row.get(key).is_some(), "sort by {key}: a row without it");
        }
    }
    rows.sort_by(|a, b| {
        keys.iter()
            .map(|(key, descending)| {
                let (x, y) = (a.get(key), b.get(key));
                let order = match (x.and_then(Val::number), y.and_then(Val::number)) {
                    (Some(p), Some(q)) => p.total_cmp(&q),
                    _ => x.map(Val::text).cmp(&y.map(Val::text)),
                };
                if *descending { order.reverse() } else { order }
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(())
}
