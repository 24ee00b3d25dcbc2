//! Query text → [`Expr`]: a recursive-descent parser over [`super::lex`]'s
//! tokens, bounded in length and depth, compiling every regex under a size
//! limit as it is read.

use super::lex::{self, Tok, Token};
use super::*;
use crate::matcher::{Matcher, Pattern};

mod stages;

/// Parses `text`, compiling regexes under `regex_size_limit` bytes. The
/// error is lowercase and says what to change.
pub fn parse(text: &str, regex_size_limit: usize) -> Result<Expr, String> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "the query is {} bytes, more than the {MAX_QUERY_BYTES} a query may have: shorten it",
            text.len()
        ));
    }
    if text.trim().is_empty() {
        return Err("the query is empty: give a stream selector such as {app=\"name\"}".into());
    }
    let tokens = lex::tokens(text).map_err(|error| format!("parse error {error}"))?;
    let mut parser = Parser {
        tokens,
        next: 0,
        depth: 0,
        regex_size_limit,
        end: text.len(),
    };
    let expr = parser.expr()?;
    if let Some(token) = parser.peek_token() {
        return Err(parser.error_at(
            token.at,
            &format!("unexpected {} after a whole query", token.kind.describe()),
        ));
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
    regex_size_limit: usize,
    end: usize,
}

/// What a primary expression turned out to be, before binary operators.
enum Parsed {
    Log(LogQuery),
    Metric(MetricExpr),
}

const AGGREGATES: [(&str, AggregateOp); 5] = [
    ("sum", AggregateOp::Sum),
    ("count", AggregateOp::Count),
    ("min", AggregateOp::Min),
    ("max", AggregateOp::Max),
    ("avg", AggregateOp::Avg),
];

const RANGES: [(&str, RangeFunction); 4] = [
    ("count_over_time", RangeFunction::CountOverTime),
    ("rate", RangeFunction::Rate),
    ("bytes_over_time", RangeFunction::BytesOverTime),
    ("bytes_rate", RangeFunction::BytesRate),
];

/// Names Loki knows that tailwater does not answer: refused by name.
const UNSUPPORTED: [&str; 22] = [
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "sort",
    "sort_desc",
    "approx_topk",
    "avg_over_time",
    "sum_over_time",
    "min_over_time",
    "max_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "quantile_over_time",
    "first_over_time",
    "last_over_time",
    "absent_over_time",
    "rate_counter",
    "label_replace",
    "regexp",
    "pattern",
    "unpack",
];

impl Parser {
    fn peek_token(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn peek(&self) -> Option<&Tok> {
        self.peek_token().map(|token| &token.kind)
    }

    fn peek_ident(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Ident(name)) => Some(name),
            _ => None,
        }
    }

    fn advance(&mut self) -> Option<Tok> {
        let token = self.tokens.get(self.next)?.kind.clone();
        self.next += 1;
        Some(token)
    }

    fn at(&self) -> usize {
        self.peek_token().map_or(self.end, |token| token.at)
    }

    fn error_at(&self, at: usize, message: &str) -> String {
        format!("parse error at {at}: {message}")
    }

    fn error(&self, message: &str) -> String {
        self.error_at(self.at(), message)
    }

    fn found(&self) -> String {
        self.peek()
            .map_or_else(|| "the end of the query".to_owned(), Tok::describe)
    }

    fn expect(&mut self, wanted: Tok, what: &str) -> Result<(), String> {
        if self.peek() == Some(&wanted) {
            self.next += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected {what}, found {}", self.found())))
        }
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(&format!(
                "the query nests deeper than {MAX_DEPTH} levels: simplify it"
            )));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, String> {
        match self.binary(0)? {
            Parsed::Log(query) => Ok(Expr::Log(query)),
            Parsed::Metric(metric) => Ok(Expr::Metric(metric)),
        }
    }

    /// Binary operators by precedence climbing: `+ -` below `* /`.
    fn binary(&mut self, min_precedence: u8) -> Result<Parsed, String> {
        self.deeper()?;
        let mut left = self.primary()?;
        loop {
            let (op, precedence) = match self.peek() {
                Some(Tok::Plus) => (BinaryOp::Add, 1),
                Some(Tok::Minus) => (BinaryOp::Sub, 1),
                Some(Tok::Star) => (BinaryOp::Mul, 2),
                Some(Tok::Slash) => (BinaryOp::Div, 2),
                Some(Tok::EqEq | Tok::Gt | Tok::Ge | Tok::Lt | Tok::Le | Tok::Ne) => {
                    return Err(self.error("comparisons between metric queries are not supported: compare in Grafana instead"));
                }
                _ => break,
            };
            if precedence < min_precedence {
                break;
            }
            let at = self.at();
            self.next += 1;
            if self.peek_ident().is_some_and(|name| {
                matches!(
                    name,
                    "on" | "ignoring" | "bool" | "group_left" | "group_right"
                )
            }) {
                return Err(self.error("vector matching (on, ignoring, bool, group_left, group_right) is not supported"));
            }
            let right = self.binary(precedence + 1)?;
            let (Parsed::Metric(l), Parsed::Metric(r)) = (left, right) else {
                return Err(self.error_at(at, "arithmetic takes metric queries or numbers on both sides, not log queries: wrap a log query in count_over_time(...[5m])"));
            };
            left = Parsed::Metric(MetricExpr::Binary {
                op,
                left: Box::new(l),
                right: Box::new(r),
            });
        }
        self.depth -= 1;
        Ok(left)
    }

    fn primary(&mut self) -> Result<Parsed, String> {
        match self.peek().cloned() {
            Some(Tok::LBrace) => Ok(Parsed::Log(self.log_query()?)),
            Some(Tok::Number(number)) => {
                self.next += 1;
                Ok(Parsed::Metric(MetricExpr::Number(number)))
            }
            Some(Tok::Minus) => {
                self.next += 1;
                match self.advance() {
                    Some(Tok::Number(number)) => Ok(Parsed::Metric(MetricExpr::Number(-number))),
                    _ => Err(self.error("a '-' here must start a number")),
                }
            }
            Some(Tok::LParen) => {
                self.next += 1;
                let inner = self.binary(0)?;
                self.expect(Tok::RParen, "')'")?;
                Ok(inner)
            }
            Some(Tok::Ident(name)) => self.function(&name).map(Parsed::Metric),
            _ => Err(self.error(&format!(
                "expected a stream selector such as {{app=\"name\"}} or a metric query, found {}",
                self.found()
            ))),
        }
    }

    fn function(&mut self, name: &str) -> Result<MetricExpr, String> {
        if let Some((_, op)) = AGGREGATES.iter().find(|(known, _)| *known == name) {
            self.next += 1;
            return self.aggregate(*op);
        }
        if let Some((_, function)) = RANGES.iter().find(|(known, _)| *known == name) {
            self.next += 1;
            return self.range(*function).map(MetricExpr::Range);
        }
        if name == "vector" {
            self.next += 1;
            self.expect(Tok::LParen, "'(' after vector")?;
            let value = match self.advance() {
                Some(Tok::Number(number)) => number,
                _ => return Err(self.error("vector takes a number: vector(1)")),
            };
            self.expect(Tok::RParen, "')'")?;
            return Ok(MetricExpr::Vector(value));
        }
        if UNSUPPORTED.contains(&name) {
            return Err(self.error(&format!("{name} is not supported by tailwater: use count_over_time, rate, bytes_over_time or bytes_rate, and sum, count, min, max or avg")));
        }
        Err(self.error(&format!("unknown function or name '{name}': start with a stream selector such as {{app=\"name\"}}")))
    }

    fn aggregate(&mut self, op: AggregateOp) -> Result<MetricExpr, String> {
        let mut grouping = self.grouping()?;
        self.expect(Tok::LParen, "'(' after the aggregation")?;
        let inner = match self.binary(0)? {
            Parsed::Metric(metric) => metric,
            Parsed::Log(_) => {
                return Err(self.error("an aggregation takes a metric query, not log lines: wrap them in count_over_time(...[5m])"))
            }
        };
        if self.peek() == Some(&Tok::Comma) {
            return Err(self.error("aggregations with a parameter (topk) are not supported"));
        }
        self.expect(Tok::RParen, "')'")?;
        if let Some(after) = self.grouping()? {
            if grouping.is_some() {
                return Err(self.error("give by or without once"));
            }
            grouping = Some(after);
        }
        Ok(MetricExpr::Aggregate {
            op,
            grouping,
            inner: Box::new(inner),
        })
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, String> {
        let without = match self.peek_ident() {
            Some("by") => false,
            Some("without") => true,
            _ => return Ok(None),
        };
        self.next += 1;
        self.expect(Tok::LParen, "'(' after by or without")?;
        let mut labels = Vec::new();
        while let Some(Tok::Ident(label)) = self.peek().cloned() {
            self.next += 1;
            labels.push(label);
            if self.peek() != Some(&Tok::Comma) {
                break;
            }
            self.next += 1;
        }
        self.expect(Tok::RParen, "')' or a label name")?;
        Ok(Some(Grouping { without, labels }))
    }

    /// `f({…} | stages [5m])`, `f({…}[5m] | stages)` or `f(({…})[5m])`,
    /// with an optional `offset`.
    fn range(&mut self, function: RangeFunction) -> Result<RangeExpr, String> {
        self.expect(Tok::LParen, "'(' after the function")?;
        let parenthesized = self.peek() == Some(&Tok::LParen);
        if parenthesized {
            self.next += 1;
        }
        let mut query = self.log_query()?;
        if parenthesized {
            self.expect(Tok::RParen, "')'")?;
        }
        self.expect(Tok::LBracket, "a range such as [5m]")?;
        let range_ns = match self.advance() {
            Some(Tok::Duration(ns)) if ns > 0 => ns,
            _ => return Err(self.error("a range is a positive duration such as [5m]")),
        };
        self.expect(Tok::RBracket, "']'")?;
        if query.stages.is_empty() && !parenthesized {
            query.stages = self.stages()?;
        }
        let mut offset_ns = 0;
        if self.peek_ident() == Some("offset") {
            self.next += 1;
            offset_ns = match self.advance() {
                Some(Tok::Duration(ns)) => ns,
                _ => return Err(self.error("offset takes a duration such as 1h")),
            };
        }
        if self.peek() == Some(&Tok::Comma) {
            return Err(self.error("range functions with a parameter are not supported"));
        }
        self.expect(Tok::RParen, "')'")?;
        if self
            .peek_ident()
            .is_some_and(|name| name == "by" || name == "without")
        {
            return Err(self.error(
                "by and without go with an aggregation: sum by (level) (count_over_time(...))",
            ));
        }
        Ok(RangeExpr {
            function,
            query,
            range_ns,
            offset_ns,
        })
    }

    fn log_query(&mut self) -> Result<LogQuery, String> {
        let selector = self.selector()?;
        let stages = self.stages()?;
        Ok(LogQuery { selector, stages })
    }

    fn selector(&mut self) -> Result<Vec<LabelMatcher>, String> {
        let at = self.at();
        self.expect(Tok::LBrace, "'{' to start a stream selector")?;
        let mut matchers = Vec::new();
        while self.peek() != Some(&Tok::RBrace) {
            matchers.push(self.label_matcher()?);
            match self.peek() {
                // As Loki's grammar: a comma is followed by a matcher.
                Some(Tok::Comma)
                    if self
                        .tokens
                        .get(self.next + 1)
                        .is_some_and(|t| t.kind != Tok::RBrace) =>
                {
                    self.next += 1
                }
                Some(Tok::RBrace) => {}
                _ => {
                    return Err(self.error(&format!("expected ',' or '}}', found {}", self.found())))
                }
            }
        }
        self.next += 1;
        if !matchers.iter().any(|label| !label.matcher.matches("")) {
            return Err(self.error_at(at, "queries require at least one regexp or equality matcher that does not have an empty-compatible value: add one such as app=\"name\""));
        }
        Ok(matchers)
    }

    /// `name op "value"`, the value a quoted string.
    fn label_matcher(&mut self) -> Result<LabelMatcher, String> {
        let name = match self.advance() {
            Some(Tok::Ident(name)) => name,
            _ => {
                self.next = self.next.saturating_sub(1);
                return Err(self.error(&format!("expected a label name, found {}", self.found())));
            }
        };
        let op = self.advance();
        let value = match self.advance() {
            Some(Tok::Str(value)) => value,
            _ => {
                self.next = self.next.saturating_sub(1);
                return Err(self.error(&format!(
                    "expected a quoted value for label '{name}', found {}",
                    self.found()
                )));
            }
        };
        let matcher = match op {
            Some(Tok::Eq) => Matcher::Eq(value),
            Some(Tok::Ne) => Matcher::Ne(value),
            Some(Tok::EqTilde) => Matcher::Re(self.whole(&value)?),
            Some(Tok::NotTilde) => Matcher::NotRe(self.whole(&value)?),
            _ => return Err(self.error(&format!("expected =, !=, =~ or !~ after label '{name}'"))),
        };
        Ok(LabelMatcher { name, matcher })
    }

    fn whole(&self, source: &str) -> Result<Pattern, String> {
        Pattern::whole_within(source, self.regex_size_limit)
            .map_err(|error| self.error(&format!("invalid regex {source:?}: {error}")))
    }
}
