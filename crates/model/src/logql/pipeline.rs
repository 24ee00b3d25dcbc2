//! A log query run over one record: its labels (stream labels, then
//! structured metadata), the selector, then each stage in order. What a
//! store can skip by itself is in [`LogQuery::store_filter`]; everything
//! is checked here again, so the store's filter only ever narrows work.

use std::collections::BTreeMap;

use super::*;
use crate::filter::Filter;
use crate::matcher::Substring;
use crate::record::{Fields, Level, LogRecord};

/// Labels by name, sorted (as Loki answers them).
pub type LabelSet = BTreeMap<String, String>;

/// The label Loki marks a line a stage could not read with.
pub const ERROR_LABEL: &str = "__error__";
const ERROR_DETAILS: &str = "__error_details__";

/// A record's stream labels: `app`, `version`, `runner`, `source`,
/// `stream`, `level` and `detected_level` (empty values left out, as in
/// Loki, where a missing label and an empty one are the same).
pub fn stream_labels(record: &LogRecord) -> LabelSet {
    let mut labels = LabelSet::new();
    let level = record.level.as_str();
    for (name, value) in [
        ("app", record.app.as_str()),
        ("version", record.version.as_str()),
        ("runner", record.runner.as_str()),
        ("source", record.source.as_str()),
        ("stream", record.stream.as_str()),
        ("level", level),
        ("detected_level", level),
    ] {
        if !value.is_empty() {
            labels.insert(name.to_owned(), value.to_owned());
        }
    }
    labels
}

/// A record's structured metadata: its request id and its fields, nested
/// objects flattened with `_` (as `| json` does), names made label names.
pub fn metadata(record: &LogRecord) -> LabelSet {
    let mut labels = LabelSet::new();
    if let Some(request) = &record.request_id {
        labels.insert("request_id".to_owned(), request.clone());
    }
    flatten_into(&mut labels, "", &record.fields, &LabelSet::new());
    labels
}

/// A line through the pipeline: its labels (stream labels, metadata and
/// what stages added) and its text.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub labels: LabelSet,
    pub line: String,
}

impl LogQuery {
    /// What the store may filter by itself: the selector's labels it keeps
    /// (app, version, runner as matchers; source, stream and the least
    /// level for `=`), and the first plain line filter. A superset of what
    /// the query matches; [`LogQuery::run`] decides.
    pub fn store_filter(&self, regex_size_limit: usize) -> Filter {
        let mut filter = Filter::default();
        for label in &self.selector {
            let exact = match &label.matcher {
                Matcher::Eq(value) => Some(value.as_str()),
                _ => None,
            };
            match label.name.as_str() {
                "app" => filter.app = Some(label.matcher.clone()),
                "version" => filter.version = Some(label.matcher.clone()),
                "runner" => filter.runner = Some(label.matcher.clone()),
                "source" => filter.source = exact.and_then(|value| value.parse().ok()),
                "stream" => filter.stream = exact.and_then(|value| value.parse().ok()),
                "level" | "detected_level" => {
                    filter.min_level = exact.and_then(Level::from_name);
                }
                _ => {}
            }
        }
        for stage in &self.stages {
            match stage {
                Stage::Line(LineFilter {
                    negated: false,
                    kind: LineMatch::Contains(texts),
                }) if texts.len() == 1 && !texts[0].is_empty() => {
                    if let Ok(substring) = Substring::within(&texts[0], true, regex_size_limit) {
                        filter.contains = Some(substring);
                        break;
                    }
                }
                Stage::Line(_) => {}
                // Later stages may rewrite the line.
                _ => break,
            }
        }
        filter
    }

    /// Whether a record's stream labels meet the selector.
    pub fn selects(&self, labels: &LabelSet) -> bool {
        self.selector.iter().all(|label| {
            let value = labels.get(&label.name).map_or("", String::as_str);
            label.matcher.matches(value)
        })
    }

    /// The record through the selector and every stage: `None` when it
    /// does not match.
    pub fn run(&self, record: &LogRecord) -> Option<Output> {
        let mut labels = stream_labels(record);
        if !self.selects(&labels) {
            return None;
        }
        labels.extend(metadata(record));
        let mut line = record.message.clone();
        for stage in &self.stages {
            match stage {
                Stage::Line(filter) => {
                    if !filter.passes(&line) {
                        return None;
                    }
                }
                Stage::Json => json(&mut labels, &line),
                Stage::Logfmt => logfmt(&mut labels, &line),
                Stage::Labels(filter) => {
                    if !filter.passes(&mut labels) {
                        return None;
                    }
                }
                Stage::Drop(names) => labels.retain(|name, value| {
                    !names.iter().any(|drop| matches_name(drop, name, value))
                }),
                Stage::Keep(names) => labels
                    .retain(|name, value| names.iter().any(|keep| matches_name(keep, name, value))),
                Stage::LineFormat(parts) => {
                    line = parts
                        .iter()
                        .map(|part| match part {
                            TemplatePart::Text(text) => text.as_str(),
                            TemplatePart::Label(name) => {
                                labels.get(name).map_or("", String::as_str)
                            }
                        })
                        .collect();
                }
            }
        }
        Some(Output { labels, line })
    }
}

fn matches_name(item: &LabelMatcherOrName, name: &str, value: &str) -> bool {
    match item {
        LabelMatcherOrName::Name(wanted) => wanted == name,
        LabelMatcherOrName::Matcher(label) => label.name == name && label.matcher.matches(value),
    }
}

impl LineFilter {
    fn passes(&self, line: &str) -> bool {
        let found = match &self.kind {
            LineMatch::Contains(texts) => texts.iter().any(|text| line.contains(text.as_str())),
            LineMatch::Regex(patterns) => patterns.iter().any(|pattern| pattern.is_match(line)),
        };
        found != self.negated
    }
}

impl LabelFilter {
    /// Whether the labels pass; a value a numeric comparison cannot read
    /// passes with `__error__` set, as in Loki (`| __error__=""` drops
    /// such lines); a missing label fails it.
    fn passes(&self, labels: &mut LabelSet) -> bool {
        match self {
            LabelFilter::And(left, right) => left.passes(labels) && right.passes(labels),
            LabelFilter::Or(left, right) => left.passes(labels) || right.passes(labels),
            LabelFilter::Text(label) => {
                let value = labels.get(&label.name).map_or("", String::as_str);
                label.matcher.matches(value)
            }
            LabelFilter::Number {
                name,
                op,
                value,
                kind,
            } => {
                // As Loki: a line already marked passes (only `__error__`
                // filters drop it), one without the label does not.
                if labels.contains_key(ERROR_LABEL) {
                    return true;
                }
                let Some(text) = labels.get(name).cloned() else {
                    return false;
                };
                let Some(read) = read_number(&text, *kind) else {
                    labels.insert(ERROR_LABEL.to_owned(), "LabelFilterErr".to_owned());
                    labels.insert(
                        ERROR_DETAILS.to_owned(),
                        format!("cannot read label {name}={text:?} as a number"),
                    );
                    return true;
                };
                match op {
                    Compare::Eq => read == *value,
                    Compare::Ne => read != *value,
                    Compare::Gt => read > *value,
                    Compare::Ge => read >= *value,
                    Compare::Lt => read < *value,
                    Compare::Le => read <= *value,
                }
            }
        }
    }
}

fn read_number(text: &str, kind: NumberKind) -> Option<f64> {
    let text = text.trim();
    if let Ok(number) = text.parse::<f64>() {
        return Some(number);
    }
    match kind {
        NumberKind::Plain => None,
        NumberKind::Duration => super::lex::duration_ns(text).map(|ns| ns as f64 / 1e9),
        NumberKind::Bytes => match super::lex::tokens(text).ok()?.as_slice() {
            [token] => match token.kind {
                super::lex::Tok::Bytes(bytes) => Some(bytes),
                _ => None,
            },
            _ => None,
        },
    }
}

/// A label name made of what Loki allows: letters, digits and `_`.
fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// Adds `object`'s values as labels, nested objects flattened with `_`
/// (arrays left out, as `| json` does); a name already among `taken` gets
/// `_extracted`.
fn flatten_into(labels: &mut LabelSet, prefix: &str, object: &Fields, taken: &LabelSet) {
    for (key, value) in object {
        let name = if prefix.is_empty() {
            label_name(key)
        } else {
            format!("{prefix}_{}", label_name(key))
        };
        let text = match value {
            serde_json::Value::Object(inner) => {
                flatten_into(labels, &name, inner, taken);
                continue;
            }
            serde_json::Value::Array(_) => continue,
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        insert_extracted(labels, name, text, taken);
    }
}

fn insert_extracted(labels: &mut LabelSet, name: String, value: String, taken: &LabelSet) {
    let name = if taken.contains_key(&name) {
        format!("{name}_extracted")
    } else {
        name
    };
    labels.insert(name, value);
}

fn json(labels: &mut LabelSet, line: &str) {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(object)) => {
            let taken = labels.clone();
            flatten_into(labels, "", &object, &taken);
        }
        _ => {
            labels.insert(ERROR_LABEL.to_owned(), "JSONParserErr".to_owned());
            labels.insert(
                ERROR_DETAILS.to_owned(),
                "the line is not a JSON object".to_owned(),
            );
        }
    }
}

/// `key=value key="quoted value"` pairs; a bare key is an empty value.
fn logfmt(labels: &mut LabelSet, line: &str) {
    let taken = labels.clone();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = &rest[key_end..];
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            if let Some(quoted) = after.strip_prefix('"') {
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, 't')) => value.push('\t'),
                            Some((_, escaped)) => value.push(escaped),
                            None => {}
                        },
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                let Some(end) = end else {
                    labels.insert(ERROR_LABEL.to_owned(), "LogfmtParserErr".to_owned());
                    labels.insert(
                        ERROR_DETAILS.to_owned(),
                        "a quoted value is not closed".to_owned(),
                    );
                    return;
                };
                rest = &quoted[end..];
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                value = after[..end].to_owned();
                rest = &after[end..];
            }
        }
        if !key.is_empty() {
            insert_extracted(labels, label_name(key), value, &taken);
        }
        rest = rest.trim_start();
    }
}
