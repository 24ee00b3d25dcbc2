//! The stages of a log pipeline, after its selector: line filters, `|`
//! stages (parsers, label filters, `drop`, `keep`, `line_format`).

use super::Parser;
use crate::logql::lex::Tok;
use crate::logql::*;
use crate::matcher::{Matcher, Pattern};

impl Parser {
    pub(super) fn stages(&mut self) -> Result<Vec<Stage>, String> {
        let mut stages = Vec::new();
        loop {
            let negated = match self.peek() {
                Some(Tok::PipeEq | Tok::PipeTilde) => false,
                Some(Tok::Ne | Tok::NotTilde) => true,
                Some(Tok::Pipe) => {
                    self.next += 1;
                    stages.push(self.pipe_stage()?);
                    continue;
                }
                _ => return Ok(stages),
            };
            let regex = matches!(self.advance(), Some(Tok::PipeTilde | Tok::NotTilde));
            let mut texts = vec![self.line_value()?];
            while self.peek_ident() == Some("or") {
                self.next += 1;
                texts.push(self.line_value()?);
            }
            let kind = if regex {
                let patterns = texts
                    .iter()
                    .map(|text| {
                        Pattern::search_within(text, self.regex_size_limit).map_err(|error| {
                            self.error(&format!("invalid regex {text:?}: {error}"))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                LineMatch::Regex(patterns)
            } else {
                LineMatch::Contains(texts)
            };
            stages.push(Stage::Line(LineFilter { negated, kind }));
        }
    }

    fn line_value(&mut self) -> Result<String, String> {
        match self.advance() {
            Some(Tok::Str(value)) => Ok(value),
            Some(Tok::Ident(name)) if name == "ip" => {
                Err(self.error("ip() line filters are not supported"))
            }
            _ => {
                self.next = self.next.saturating_sub(1);
                Err(self.error(&format!(
                    "a line filter takes a quoted string, found {}",
                    self.found()
                )))
            }
        }
    }

    fn pipe_stage(&mut self) -> Result<Stage, String> {
        if self.peek() == Some(&Tok::LParen) {
            return Ok(Stage::Labels(self.label_filter_or()?));
        }
        let Some(name) = self.peek_ident().map(str::to_owned) else {
            return Err(self.error(&format!("expected a stage after '|' (json, logfmt, drop, keep, line_format or a label filter), found {}", self.found())));
        };
        let next_is_operator = matches!(
            self.tokens.get(self.next + 1).map(|token| &token.kind),
            Some(
                Tok::Eq
                    | Tok::Ne
                    | Tok::EqTilde
                    | Tok::NotTilde
                    | Tok::EqEq
                    | Tok::Gt
                    | Tok::Ge
                    | Tok::Lt
                    | Tok::Le
            )
        );
        if next_is_operator {
            return Ok(Stage::Labels(self.label_filter_or()?));
        }
        self.next += 1;
        let stage = match name.as_str() {
            "json" => Stage::Json,
            "logfmt" => Stage::Logfmt,
            "drop" => Stage::Drop(self.label_list()?),
            "keep" => Stage::Keep(self.label_list()?),
            "line_format" => match self.advance() {
                Some(Tok::Str(template)) => Stage::LineFormat(template_parts(&template).map_err(|error| self.error(&error))?),
                _ => return Err(self.error("line_format takes a quoted template such as \"{{.message}}\"")),
            },
            "label_format" | "decolorize" | "distinct" | "regexp" | "pattern" | "unpack" | "unwrap" => {
                return Err(self.error(&format!("the {name} stage is not supported by tailwater")))
            }
            _ => return Err(self.error(&format!("unknown stage '{name}': use json, logfmt, drop, keep, line_format or a label filter"))),
        };
        if matches!(stage, Stage::Json | Stage::Logfmt)
            && (self.peek_ident().is_some() || matches!(self.peek(), Some(Tok::Minus)))
        {
            return Err(self.error(&format!(
                "{name} with parameters is not supported: use | {name} alone"
            )));
        }
        Ok(stage)
    }

    fn label_list(&mut self) -> Result<Vec<LabelMatcherOrName>, String> {
        let mut labels = Vec::new();
        loop {
            let is_matcher = matches!(
                self.tokens.get(self.next + 1).map(|token| &token.kind),
                Some(Tok::Eq | Tok::Ne | Tok::EqTilde | Tok::NotTilde)
            );
            if is_matcher {
                labels.push(LabelMatcherOrName::Matcher(self.label_matcher()?));
            } else {
                match self.advance() {
                    Some(Tok::Ident(name)) => labels.push(LabelMatcherOrName::Name(name)),
                    _ => {
                        self.next = self.next.saturating_sub(1);
                        return Err(
                            self.error(&format!("expected a label name, found {}", self.found()))
                        );
                    }
                }
            }
            if self.peek() != Some(&Tok::Comma) {
                return Ok(labels);
            }
            self.next += 1;
        }
    }

    fn label_filter_or(&mut self) -> Result<LabelFilter, String> {
        self.deeper()?;
        let mut left = self.label_filter_and()?;
        while self.peek_ident() == Some("or") {
            self.next += 1;
            let right = self.label_filter_and()?;
            left = LabelFilter::Or(Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn label_filter_and(&mut self) -> Result<LabelFilter, String> {
        let mut left = self.label_filter_atom()?;
        loop {
            let joined = match self.peek() {
                Some(Tok::Comma) => true,
                Some(Tok::Ident(word)) if word == "and" => true,
                _ => false,
            };
            if !joined {
                return Ok(left);
            }
            self.next += 1;
            let right = self.label_filter_atom()?;
            left = LabelFilter::And(Box::new(left), Box::new(right));
        }
    }

    fn label_filter_atom(&mut self) -> Result<LabelFilter, String> {
        if self.peek() == Some(&Tok::LParen) {
            self.next += 1;
            let inner = self.label_filter_or()?;
            self.expect(Tok::RParen, "')'")?;
            return Ok(inner);
        }
        let name = match self.advance() {
            Some(Tok::Ident(name)) => name,
            _ => {
                self.next = self.next.saturating_sub(1);
                return Err(self.error(&format!(
                    "expected a label filter such as level=\"error\", found {}",
                    self.found()
                )));
            }
        };
        let op = self.advance();
        let value = self.advance();
        let number = |value: &Option<Tok>| match value {
            Some(Tok::Number(n)) => Some((*n, NumberKind::Plain)),
            Some(Tok::Duration(ns)) => Some((*ns as f64 / 1e9, NumberKind::Duration)),
            Some(Tok::Bytes(b)) => Some((*b, NumberKind::Bytes)),
            _ => None,
        };
        let compare = match op {
            Some(Tok::EqEq) => Compare::Eq,
            Some(Tok::Gt) => Compare::Gt,
            Some(Tok::Ge) => Compare::Ge,
            Some(Tok::Lt) => Compare::Lt,
            Some(Tok::Le) => Compare::Le,
            Some(Tok::Eq | Tok::Ne) if number(&value).is_some() => {
                if op == Some(Tok::Eq) {
                    Compare::Eq
                } else {
                    Compare::Ne
                }
            }
            Some(Tok::Eq | Tok::Ne | Tok::EqTilde | Tok::NotTilde) => {
                let Some(Tok::Str(text)) = value else {
                    self.next = self.next.saturating_sub(1);
                    return Err(self.error(&format!(
                        "expected a quoted value or a number for label '{name}', found {}",
                        self.found()
                    )));
                };
                let matcher = match op {
                    Some(Tok::Eq) => Matcher::Eq(text),
                    Some(Tok::Ne) => Matcher::Ne(text),
                    Some(Tok::EqTilde) => Matcher::Re(self.whole(&text)?),
                    _ => Matcher::NotRe(self.whole(&text)?),
                };
                return Ok(LabelFilter::Text(LabelMatcher { name, matcher }));
            }
            _ => return Err(self.error(&format!("expected a comparison after label '{name}'"))),
        };
        let Some((value, kind)) = number(&value) else {
            self.next = self.next.saturating_sub(1);
            return Err(self.error(&format!(
                "expected a number, duration or byte size to compare '{name}' with, found {}",
                self.found()
            )));
        };
        Ok(LabelFilter::Number {
            name,
            op: compare,
            value,
            kind,
        })
    }
}

/// A `line_format` template: text and `{{.label}}` (spaces allowed inside
/// the braces); any other template action is refused.
fn template_parts(template: &str) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(TemplatePart::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find("}}")
            .ok_or("a {{ in line_format is not closed: end it with }}")?;
        let action = rest[open + 2..open + close].trim();
        let label = action
            .strip_prefix('.')
            .filter(|name| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .ok_or_else(|| {
                format!("line_format supports only {{{{.label}}}}, not {{{{{action}}}}}")
            })?;
        parts.push(TemplatePart::Label(label.to_owned()));
        rest = &rest[open + close + 2..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_owned()));
    }
    Ok(parts)
}
