//! The part of the Logs Insights query language the runbook uses, parsed:
//! tokens, then one [`Command`] per `|`-separated command. Anything else is
//! an error.

use anyhow::{Context as _, anyhow, bail, ensure};
use regex::Regex;

use super::eval::Val;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A field name, keyword, function name or period (`1h`); backticked
    /// names arrive here without their backticks.
    Word(String),
    Text(String),
    Regex(String),
    Number(f64),
    Symbol(&'static str),
    Pipe,
}

fn tokenize(query: &str) -> anyhow::Result<Vec<Token>> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    // Other characters need backticks, as the documentation says.
    let is_word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '@' | '.');
    while i < chars.len() {
        let c = chars[i];
        match c {
            _ if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '"' | '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    let ch = *chars.get(i).ok_or_else(|| anyhow!("unterminated string"))?;
                    i += 1;
                    match ch {
                        '\\' => {
                            text.push(*chars.get(i).ok_or_else(|| anyhow!("dangling \\"))?);
                            i += 1;
                        }
                        _ if ch == c => break,
                        _ => text.push(ch),
                    }
                }
                tokens.push(Token::Text(text));
            }
            '/' => {
                // Kept as written (escapes included) for the regex parser.
                let mut pattern = String::new();
                i += 1;
                loop {
                    let ch = *chars.get(i).ok_or_else(|| anyhow!("unterminated regex"))?;
                    i += 1;
                    match ch {
                        '\\' => {
                            pattern.push('\\');
                            pattern.push(*chars.get(i).ok_or_else(|| anyhow!("dangling \\"))?);
                            i += 1;
                        }
                        '/' => break,
                        _ => pattern.push(ch),
                    }
                }
                tokens.push(Token::Regex(pattern));
            }
            '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&ch| ch == '`')
                    .ok_or_else(|| anyhow!("unterminated backtick"))?;
                tokens.push(Token::Word(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            _ if c.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                if i < chars.len() && chars[i].is_alphabetic() {
                    while i < chars.len() && chars[i].is_alphabetic() {
                        i += 1;
                    }
                    tokens.push(Token::Word(chars[start..i].iter().collect()));
                } else {
                    let text: String = chars[start..i].iter().collect();
                    tokens.push(Token::Number(text.parse()?));
                }
            }
            _ if c.is_alphabetic() || c == '@' || c == '_' => {
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            _ => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let symbol = ["!=", "<=", ">=", "=~"]
                    .into_iter()
                    .find(|s| *s == two)
                    .or_else(|| {
                        ["(", ")", ",", "[", "]", "=", "<", ">", "*"]
                            .into_iter()
                            .find(|s| s.starts_with(c))
                    })
                    .ok_or_else(|| anyhow!("unexpected {c:?} in the query"))?;
                tokens.push(Token::Symbol(symbol));
                i += symbol.len();
            }
        }
    }
    Ok(tokens)
}

#[derive(Debug)]
pub(super) enum Operand {
    Field(String),
    Literal(Val),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
pub(super) enum Match {
    Substring(String),
    Pattern(Regex),
}

#[derive(Debug)]
pub(super) enum Condition {
    Or(Box<Condition>, Box<Condition>),
    And(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
    IsPresent(String),
    Compare(Operand, Comparison, Operand),
    Like(Operand, Match),
    In(Operand, Vec<Operand>),
}

#[derive(Debug)]
pub(super) enum Aggregate {
    /// `count(*)` / `count()` when `None`.
    Count(Option<String>),
    CountDistinct(String),
    Sum(String),
    Min(String),
    Max(String),
}

#[derive(Debug)]
pub(super) enum GroupKey {
    Field(String),
    /// `bin(period)`, in milliseconds.
    Bin(i64),
}

#[derive(Debug)]
pub(super) enum Command {
    Fields(Vec<String>),
    Display(Vec<String>),
    Filter(Condition),
    Parse {
        field: String,
        literals: Vec<String>,
        names: Vec<String>,
    },
    Stats {
        aggregates: Vec<(Aggregate, String)>,
        by: Vec<(GroupKey, String)>,
    },
    Sort(Vec<(String, bool)>),
    Limit(usize),
}

/// A parsed query: its commands, in order.
pub(super) struct Query(pub(super) Vec<Command>);

/// The tokens of one command, consumed front to back.
struct Tokens {
    tokens: Vec<Token>,
    at: usize,
}

impl Tokens {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> anyhow::Result<Token> {
        let token = self
            .tokens
            .get(self.at)
            .cloned()
            .ok_or_else(|| anyhow!("the command ends too soon"))?;
        self.at += 1;
        Ok(token)
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let found = self.is_word(word);
        if found {
            self.at += 1;
        }
        found
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect_symbol(&mut self, symbol: &str) -> anyhow::Result<()> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            bail!("expected {symbol:?}, found {:?}", self.peek())
        }
    }

    fn field(&mut self) -> anyhow::Result<String> {
        match self.next()? {
            Token::Word(w) if !is_keyword(&w) => Ok(w),
            other => bail!("expected a field name, found {other:?}"),
        }
    }

    fn done(&self) -> anyhow::Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(extra) => bail!("unexpected {extra:?}"),
        }
    }
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "and" | "or" | "not" | "like" | "in" | "as" | "by" | "asc" | "desc"
    )
}

impl Query {
    pub(super) fn parse(text: &str) -> anyhow::Result<Self> {
        let mut commands = Vec::new();
        for tokens in tokenize(text)?.split(|t| *t == Token::Pipe) {
            let mut tokens = Tokens {
                tokens: tokens.to_vec(),
                at: 0,
            };
            let Token::Word(name) = tokens.next()? else {
                bail!("a command must start with its name");
            };
            let command = match name.as_str() {
                "fields" => Command::Fields(field_list(&mut tokens)?),
                "display" => Command::Display(field_list(&mut tokens)?),
                "filter" => Command::Filter(condition(&mut tokens)?),
                "parse" => parse_command(&mut tokens)?,
                "stats" => stats_command(&mut tokens)?,
                "sort" => {
                    let mut keys = Vec::new();
                    loop {
                        let field = tokens.field()?;
                        // The documentation always names the order; so must we.
                        let descending = if tokens.eat_word("desc") {
                            true
                        } else if tokens.eat_word("asc") {
                            false
                        } else {
                            bail!("sort {field}: say asc or desc")
                        };
                        keys.push((field, descending));
                        if !tokens.eat_symbol(",") {
                            break;
                        }
                    }
                    Command::Sort(keys)
                }
                "limit" => match tokens.next()? {
                    Token::Number(n) if n >= 1.0 && n.fract() == 0.0 => Command::Limit(n as usize),
                    other => bail!("limit needs a whole number, found {other:?}"),
                },
                other => bail!("the evaluator does not know the command {other:?}"),
            };
            tokens.done().with_context(|| format!("in `{name}`"))?;
            commands.push(command);
        }
        Ok(Self(commands))
    }
}

fn field_list(tokens: &mut Tokens) -> anyhow::Result<Vec<String>> {
    let mut names = vec![tokens.field()?];
    while tokens.eat_symbol(",") {
        names.push(tokens.field()?);
    }
    Ok(names)
}

/// `parse [field] "glob" as a, b, ...` (regex mode is not implemented).
fn parse_command(tokens: &mut Tokens) -> anyhow::Result<Command> {
    let field = match tokens.peek() {
        Some(Token::Word(_)) => tokens.field()?,
        _ => "@message".into(),
    };
    let Token::Text(glob) = tokens.next()? else {
        bail!("parse: only glob patterns (in quotes) are implemented");
    };
    ensure!(tokens.eat_word("as"), "parse: as expected");
    let names = field_list(tokens)?;
    let literals: Vec<String> = glob.split('*').map(str::to_owned).collect();
    ensure!(
        literals.len() - 1 == names.len(),
        "parse: {} wildcards but {} names",
        literals.len() - 1,
        names.len()
    );
    Ok(Command::Parse {
        field,
        literals,
        names,
    })
}

fn stats_command(tokens: &mut Tokens) -> anyhow::Result<Command> {
    let mut aggregates = Vec::new();
    loop {
        let Token::Word(function) = tokens.next()? else {
            bail!("stats: an aggregation function expected");
        };
        tokens.expect_symbol("(")?;
        // `count(*)` and `count()` alike.
        let argument =
            if tokens.eat_symbol("*") || matches!(tokens.peek(), Some(Token::Symbol(")"))) {
                None
            } else {
                Some(tokens.field()?)
            };
        tokens.expect_symbol(")")?;
        let shown = format!("{function}({})", argument.as_deref().unwrap_or("*"));
        let needs = |argument: Option<String>| {
            argument.ok_or_else(|| anyhow!("{function}() needs a field"))
        };
        let aggregate = match function.as_str() {
            "count" => Aggregate::Count(argument),
            "count_distinct" => Aggregate::CountDistinct(needs(argument)?),
            "sum" => Aggregate::Sum(needs(argument)?),
            "min" => Aggregate::Min(needs(argument)?),
            "max" => Aggregate::Max(needs(argument)?),
            other => bail!("the evaluator does not know the function {other}()"),
        };
        let name = if tokens.eat_word("as") {
            tokens.field()?
        } else {
            shown
        };
        aggregates.push((aggregate, name));
        if !tokens.eat_symbol(",") {
            break;
        }
    }
    let mut by = Vec::new();
    if tokens.eat_word("by") {
        loop {
            let field = tokens.field()?;
            if field == "bin" && tokens.eat_symbol("(") {
                let Token::Word(period) = tokens.next()? else {
                    bail!("bin() needs a period such as 1h");
                };
                tokens.expect_symbol(")")?;
                by.push((GroupKey::Bin(period_ms(&period)?), format!("bin({period})")));
            } else {
                by.push((GroupKey::Field(field.clone()), field));
            }
            if !tokens.eat_symbol(",") {
                break;
            }
        }
    }
    Ok(Command::Stats { aggregates, by })
}

/// `bin()` periods of fixed length (months, quarters and years are not).
fn period_ms(period: &str) -> anyhow::Result<i64> {
    let digits = period
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| anyhow!("bin({period}): no unit"))?;
    let count: i64 = period[..digits].parse()?;
    let unit = match &period[digits..] {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 7 * 86_400_000,
        other => bail!("bin(): the unit {other:?} is not implemented"),
    };
    ensure!(count > 0, "bin(): a zero period");
    Ok(count * unit)
}

/// `a or b`, `a and b`, `not a`, parentheses, comparisons, `like`, `=~`,
/// `in [...]`, `ispresent(f)`; `and` binds tighter than `or`.
fn condition(tokens: &mut Tokens) -> anyhow::Result<Condition> {
    let mut left = conjunction(tokens)?;
    while tokens.eat_word("or") {
        left = Condition::Or(Box::new(left), Box::new(conjunction(tokens)?));
    }
    Ok(left)
}

fn conjunction(tokens: &mut Tokens) -> anyhow::Result<Condition> {
    let mut left = negation(tokens)?;
    while tokens.eat_word("and") {
        left = Condition::And(Box::new(left), Box::new(negation(tokens)?));
    }
    Ok(left)
}

fn negation(tokens: &mut Tokens) -> anyhow::Result<Condition> {
    if tokens.eat_word("not") {
        return Ok(Condition::Not(Box::new(negation(tokens)?)));
    }
    if tokens.eat_symbol("(") {
        let inner = condition(tokens)?;
        tokens.expect_symbol(")")?;
        return Ok(inner);
    }
    if tokens.is_word("ispresent") {
        tokens.next()?;
        tokens.expect_symbol("(")?;
        let field = tokens.field()?;
        tokens.expect_symbol(")")?;
        return Ok(Condition::IsPresent(field));
    }
    let left = operand(tokens)?;
    if tokens.eat_word("like") || tokens.eat_symbol("=~") {
        return Ok(Condition::Like(left, pattern(tokens)?));
    }
    if tokens.is_word("not") {
        tokens.next()?;
        ensure!(tokens.eat_word("like"), "not like expected");
        return Ok(Condition::Not(Box::new(Condition::Like(
            left,
            pattern(tokens)?,
        ))));
    }
    if tokens.eat_word("in") {
        tokens.expect_symbol("[")?;
        let mut items = vec![operand(tokens)?];
        while tokens.eat_symbol(",") {
            items.push(operand(tokens)?);
        }
        tokens.expect_symbol("]")?;
        return Ok(Condition::In(left, items));
    }
    let comparison = match tokens.next()? {
        Token::Symbol("=") => Comparison::Eq,
        Token::Symbol("!=") => Comparison::Ne,
        Token::Symbol("<") => Comparison::Lt,
        Token::Symbol("<=") => Comparison::Le,
        Token::Symbol(">") => Comparison::Gt,
        Token::Symbol(">=") => Comparison::Ge,
        other => bail!("a comparison expected, found {other:?}"),
    };
    Ok(Condition::Compare(left, comparison, operand(tokens)?))
}

fn operand(tokens: &mut Tokens) -> anyhow::Result<Operand> {
    Ok(match tokens.next()? {
        Token::Word(w) if !is_keyword(&w) => Operand::Field(w),
        Token::Text(t) => Operand::Literal(Val::Text(t)),
        Token::Number(n) => Operand::Literal(Val::Num(n)),
        other => bail!("a field or a value expected, found {other:?}"),
    })
}

fn pattern(tokens: &mut Tokens) -> anyhow::Result<Match> {
    Ok(match tokens.next()? {
        Token::Text(t) => Match::Substring(t),
        Token::Regex(r) => Match::Pattern(insights_regex(&r).with_context(|| format!("/{r}/"))?),
        other => bail!("like needs \"text\" or /regex/, found {other:?}"),
    })
}

/// A `/regex/` of `like` or `=~`, compiled by the `regex` crate: a search (it
/// may match anywhere), case-sensitive unless `(?i)`. The runbook may use the
/// common subset of regex flavours, where Insights' and Rust's agree:
/// literals, `.`, classes with ranges and `\d \w \s`, groups (`(?:...)`,
/// `(?<name>...)`), `|`, `* + ? {m,n}` greedy or lazy, `^ $`, a leading
/// `(?i)`. The crate refuses what it lacks (look-around, back-references);
/// what it has but other flavours spell or read differently is refused here:
/// escaped letters other than `\d \w \s \D \W \S \n \t \r` (`\b`, `\A`,
/// `\p{L}`, ...), `\<` and `\>`, other `(?...)` groups and flags, and `[`
/// inside `[...]`.
pub(super) fn insights_regex(pattern: &str) -> anyhow::Result<Regex> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut in_class = false;
    let mut at = 0;
    while at < chars.len() {
        match chars[at] {
            '\\' => {
                let c = *chars.get(at + 1).ok_or_else(|| anyhow!("a dangling \\"))?;
                ensure!(
                    matches!(c, 'd' | 'w' | 's' | 'D' | 'W' | 'S' | 'n' | 't' | 'r')
                        || (c.is_ascii_punctuation() && !matches!(c, '<' | '>')),
                    "the escape \\{c} is not in the common subset of regex flavours"
                );
                at += 1;
            }
            '[' if in_class => bail!("a [ inside [...] (escape it)"),
            '[' => {
                in_class = true;
                // A `]` first (after any `^`) is a literal.
                if chars.get(at + 1) == Some(&'^') {
                    at += 1;
                }
                if chars.get(at + 1) == Some(&']') {
                    at += 1;
                }
            }
            ']' if in_class => in_class = false,
            '(' if !in_class && chars.get(at + 1) == Some(&'?') => {
                let rest: String = chars[at + 2..].iter().collect();
                let named = rest
                    .strip_prefix('<')
                    .is_some_and(|name| name.starts_with(|c: char| c.is_alphabetic() || c == '_'));
                ensure!(
                    rest.starts_with(':') || named || (at == 0 && rest.starts_with("i)")),
                    "only (?:...), (?<name>...) and a leading (?i) are in the common subset"
                );
            }
            _ => {}
        }
        at += 1;
    }
    Ok(Regex::new(pattern)?)
}
