//! Redaction: secrets replaced before anything is stored.
//!
//! What is redacted, and what is not: the message, field values, field
//! keys (a key that holds a secret is replaced the same way; numbered
//! `#2`, … if it then reads as another key) and request ids (one that holds
//! a secret is removed from the record and kept, redacted, in its field
//! `request_id_redacted`: replaced in place, different requests would read
//! as one, and a caller could see another's). Labels (`app`, `runner`,
//! `version`, `boot`) are identity: redacted, two runners would become one,
//! so a batch whose label holds a secret is refused instead (400
//! `secret_in_label`), and the agent's operator fixes its name.
//!
//! A [`Redactor`] holds named patterns: the defaults ([`DEFAULT_PATTERNS`],
//! common API key and token shapes and `Authorization:` headers) unless
//! `--no-default-redaction`, then each `--redact REGEX` (named `custom_1`,
//! `custom_2`, … in the order given). Every match in a record's message and
//! in its string fields (nested ones too) becomes `[REDACTED:name]`; a
//! pattern with a group named `keep` keeps that part (`Authorization:
//! Bearer [REDACTED:authorization]`).
//!
//! Most lines hold no secret, so the cost that matters is the miss: one
//! pass of all patterns joined into one regex, which the `regex` crate
//! pre-filters by the patterns' literal prefixes (`AKIA`, `sk-`, `ghp_`,
//! `eyJ`, …) before running any automaton. Only a line that matches is
//! looked at pattern by pattern. Each thread searches with its own copy of
//! the joined regex (so with its own search cache, taken without a lock:
//! the shared one's pool locks twice a search for all threads but its
//! first). Measured (release, this 2-core machine
//! under load): about 70–150 ns for a clean 100-byte line, a few µs for a
//! line with secrets. A separate case-insensitive Aho-Corasick pass over
//! the literals was tried as a pre-filter and was slower than the joined
//! regex alone (its short literals, `sk-`, `hf_`, in every case, defeat its
//! SIMD search).
//!
//! A record's fields come as JSON text ([`FieldsJson`]), and are parsed only
//! when a secret may be in them: when the joined regex matches somewhere in
//! that text. The text stands for its string values only when it holds no
//! escape (no `\`: each value is then its text between quotes, and quotes
//! are not word characters, as the edge of a text is not) and no pattern
//! is anchored (`^`, `$`: a value's start is not the text's); otherwise
//! the fields are always parsed. Fields with nothing replaced keep their
//! text as it came.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::{Captures, Regex, RegexSet};
use serde_json::Value;
use tailwater_model::{Fields, FieldsJson, DEFAULT_REGEX_SIZE_LIMIT};

/// The patterns on by default: `(name, regex)`.
pub const DEFAULT_PATTERNS: &[(&str, &str)] = &[
    // Headers first, so they keep their name and scheme whatever the
    // credential's shape; a value already redacted (`[REDACTED:…]`) is
    // left alone.
    (
        "authorization",
        r"(?i)(?P<keep>\bauthorization[\x22']?\s*[:=]\s*[\x22']?(?:(?:bearer|basic|token|bot)\s+)?)[^\s\x22',;\[][^\s\x22',;]{3,}",
    ),
    (
        "bearer",
        r"(?i)(?P<keep>\bbearer\s+)[A-Za-z0-9._~+/=\-]{8,}",
    ),
    ("aws_access_key", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    (
        "aws_secret_key",
        r"(?i)(?P<keep>aws_secret_access_key[\x22']?\s*[=:]\s*[\x22']?)[A-Za-z0-9/+=]{40}",
    ),
    // OpenAI (`sk-…`, `sk-proj-…`) and Anthropic (`sk-ant-…`) keys.
    ("sk_api_key", r"\bsk-[A-Za-z0-9_\-]{20,}"),
    (
        "github_token",
        r"\b(?:(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    ),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("huggingface_token", r"\bhf_[A-Za-z0-9]{30,}"),
    ("tailwater_token", r"\btw_[A-Za-z0-9_\-]{40,}"),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    ),
];

/// Numbers redactors ([`Redactor::id`]).
static REDACTORS: AtomicU64 = AtomicU64::new(0);

/// Redactors whose joined regex a thread keeps its own copy of, at most
/// (a server has one; tests make many): the oldest copy goes first.
const THREAD_COPIES: usize = 4;

thread_local! {
    /// This thread's own copies of redactors' joined regexes, by
    /// [`Redactor::id`]. A copy of a `Regex` has its own pool of search
    /// caches, which the first thread to search owns and takes without a
    /// lock; every other thread searching the one shared regex locks the
    /// pool to borrow a cache and again to give it back, for each line
    /// (the ingest threads are many: `spawn_blocking`'s). Measured: 2.6 %
    /// of the server's CPU at binary ingest.
    static OWN_ANY: RefCell<Vec<(u64, Regex)>> = const { RefCell::new(Vec::new()) };
}

/// What one pass replaced: `(pattern index, count)` for each pattern that
/// matched.
pub type Replaced = Vec<(usize, u64)>;

pub struct Redactor {
    /// Which redactor this is, for the threads' own copies of `any`.
    id: u64,
    names: Vec<String>,
    /// All patterns as one alternation: the one pass a line without secrets
    /// costs.
    any: Option<Regex>,
    /// Which patterns match, once `any` did.
    set: RegexSet,
    each: Vec<Regex>,
    /// Some pattern matches at the start or end of a text or line, so a
    /// search of fields' JSON text does not stand for one of their values.
    anchored: bool,
}

impl Redactor {
    /// The defaults (unless `defaults` is false), then `custom` patterns.
    /// A pattern that does not compile is refused with a message that says
    /// which and why.
    pub fn new(defaults: bool, custom: &[String]) -> Result<Redactor, String> {
        let mut named: Vec<(String, String)> = Vec::new();
        if defaults {
            named.extend(
                DEFAULT_PATTERNS
                    .iter()
                    .map(|(name, pattern)| ((*name).to_owned(), (*pattern).to_owned())),
            );
        }
        for (index, pattern) in custom.iter().enumerate() {
            named.push((format!("custom_{}", index + 1), pattern.clone()));
        }
        let compile = |pattern: &str| {
            regex::RegexBuilder::new(pattern)
                .size_limit(DEFAULT_REGEX_SIZE_LIMIT)
                .build()
        };
        let mut each = Vec::with_capacity(named.len());
        for (name, pattern) in &named {
            let regex = compile(pattern).map_err(|error| {
                format!("invalid --redact pattern {name} '{pattern}': {error}; use Rust regex syntax (https://docs.rs/regex)")
            })?;
            each.push(regex);
        }
        let any = if named.is_empty() {
            None
        } else {
            let joined = named
                .iter()
                .map(|(_, pattern)| format!("(?:{pattern})"))
                .collect::<Vec<_>>()
                .join("|");
            // Group names repeat across patterns (`keep`); the joined regex
            // only answers "is anything here", so strip them.
            let joined = joined.replace("(?P<keep>", "(");
            Some(compile(&joined).map_err(|error| {
                format!("the --redact patterns together are too large: {error}; use fewer or simpler patterns")
            })?)
        };
        let set = RegexSet::new(named.iter().map(|(_, pattern)| pattern))
            .map_err(|error| format!("invalid --redact patterns: {error}"))?;
        let anchored = named.iter().any(|(_, pattern)| {
            regex_syntax::parse(pattern)
                .map_or(true, |hir| hir.properties().look_set().contains_anchor())
        });
        Ok(Redactor {
            id: REDACTORS.fetch_add(1, Ordering::Relaxed),
            names: named.into_iter().map(|(name, _)| name).collect(),
            any,
            set,
            each,
            anchored,
        })
    }

    /// Whether the joined regex matches somewhere in `text`: the one pass
    /// a text without secrets costs. Searched with this thread's own copy
    /// of it ([`THREAD_COPIES`]).
    fn may_hold_secret(&self, text: &str) -> bool {
        let Some(any) = &self.any else { return false };
        let own = OWN_ANY.try_with(|own| {
            let mut own = own.borrow_mut();
            if let Some((_, copy)) = own.iter().find(|(id, _)| *id == self.id) {
                return copy.is_match(text);
            }
            if own.len() >= THREAD_COPIES {
                own.remove(0);
            }
            let copy = any.clone();
            let found = copy.is_match(text);
            own.push((self.id, copy));
            found
        });
        // A thread ending (its copies gone) searches with the shared one.
        own.unwrap_or_else(|_| any.is_match(text))
    }

    /// A redactor that replaces nothing.
    pub fn none() -> Redactor {
        Redactor::new(false, &[]).expect("no patterns compile")
    }

    /// The name of pattern `index` (for metrics).
    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// Replaces every secret in `message` and in the string values of
    /// `fields`, adding what was replaced to `replaced`.
    pub fn redact(&self, message: &mut String, fields: &mut FieldsJson, replaced: &mut Replaced) {
        if self.any.is_none() {
            return;
        }
        self.redact_text(message, replaced);
        let json = fields.as_str();
        let text_stands_for_values = !self.anchored && !json.contains('\\');
        if json.is_empty() || (text_stands_for_values && !self.may_hold_secret(json)) {
            return;
        }
        let mut map = fields.to_map();
        if self.redact_fields(&mut map, replaced) {
            *fields = FieldsJson::from_map(&map);
        }
    }

    /// Replaces every secret in the string values and the keys of
    /// `fields`; whether any was.
    fn redact_fields(&self, fields: &mut Fields, replaced: &mut Replaced) -> bool {
        let mut redacted = fields.values_mut().fold(false, |redacted, value| {
            self.redact_value(value, replaced) | redacted
        });
        let secret_keys: Vec<String> = fields
            .keys()
            .filter(|key| self.may_hold_secret(key))
            .cloned()
            .collect();
        for key in secret_keys {
            let mut new_key = key.clone();
            if !self.redact_text(&mut new_key, replaced) {
                continue;
            }
            let value = fields.remove(&key).expect("a key just listed");
            // Two keys may read the same once redacted: neither is lost.
            let mut unique = new_key.clone();
            let mut number = 2;
            while fields.contains_key(&unique) {
                unique = format!("{new_key}#{number}");
                number += 1;
            }
            fields.insert(unique, value);
            redacted = true;
        }
        redacted
    }

    fn redact_value(&self, value: &mut Value, replaced: &mut Replaced) -> bool {
        match value {
            Value::String(text) => self.redact_text(text, replaced),
            Value::Array(values) => values.iter_mut().fold(false, |redacted, value| {
                self.redact_value(value, replaced) | redacted
            }),
            Value::Object(map) => self.redact_fields(map, replaced),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }

    /// Replaces every secret in `text`; whether any was.
    fn redact_text(&self, text: &mut String, replaced: &mut Replaced) -> bool {
        if !self.may_hold_secret(text) {
            return false;
        }
        let mut redacted = false;
        for index in self.set.matches(text).iter() {
            let name = &self.names[index];
            let mut count = 0u64;
            let result = self.each[index].replace_all(text, |captures: &Captures| {
                count += 1;
                let keep = captures.name("keep").map_or("", |keep| keep.as_str());
                format!("{keep}[REDACTED:{name}]")
            });
            if count > 0 {
                redacted = true;
                *text = result.into_owned();
                match replaced.iter_mut().find(|(seen, _)| *seen == index) {
                    Some((_, total)) => *total += count,
                    None => replaced.push((index, count)),
                }
            }
        }
        redacted
    }
}

/// The field that keeps a request id that held a secret, redacted.
pub const REQUEST_ID_REDACTED_FIELD: &str = "request_id_redacted";

impl Redactor {
    /// Removes `record`'s request id if it holds a secret, keeping it
    /// redacted in the field [`REQUEST_ID_REDACTED_FIELD`]; whether it did.
    pub fn redact_request_id(
        &self,
        record: &mut tailwater_model::wire::IngestRecord,
        replaced: &mut Replaced,
    ) -> bool {
        let Some(request_id) = &record.request_id else {
            return false;
        };
        // Most ids hold no secret: looked at before anything is copied.
        if !self.may_hold_secret(request_id) {
            return false;
        }
        let mut text = request_id.clone();
        if !self.redact_text(&mut text, replaced) {
            return false;
        }
        record.request_id = None;
        let mut fields = record.fields.to_map();
        fields.insert(REQUEST_ID_REDACTED_FIELD.into(), Value::String(text));
        record.fields = FieldsJson::from_map(&fields);
        true
    }

    /// The name of the first pattern that matches `text`, if one does: for
    /// labels, which are refused rather than redacted.
    pub fn secret_in(&self, text: &str) -> Option<&str> {
        if !self.may_hold_secret(text) {
            return None;
        }
        self.set
            .matches(text)
            .iter()
            .next()
            .map(|index| self.names[index].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(text: &str) -> (String, Replaced) {
        let redactor = Redactor::new(true, &[]).unwrap();
        let mut message = text.to_owned();
        let mut replaced = Vec::new();
        redactor.redact(&mut message, &mut FieldsJson::new(), &mut replaced);
        (message, replaced)
    }

    #[test]
    fn default_patterns_replace_common_secret_shapes() {
        let secrets = [
            ("key AKIAIOSFODNN7EXAMPLE used", "aws_access_key"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_key",
            ),
            ("OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz012345", "sk_api_key"),
            ("sk-ant-api03-abcdefghijklmnopqrstuvwxyz-0123456789", "sk_api_key"),
            ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "github_token"),
            ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "github_token"),
            ("slack xoxb-1234567890-abcdefghij", "slack_token"),
            ("HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyzABCDEFGH", "huggingface_token"),
            (
                "tw_Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE",
                "tailwater_token",
            ),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "jwt",
            ),
            ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "authorization"),
            ("curl -H 'bearer abcdef0123456789'", "bearer"),
        ];
        let redactor = Redactor::new(true, &[]).unwrap();
        for (text, name) in secrets {
            let (message, replaced) = redacted(text);
            assert!(
                message.contains(&format!("[REDACTED:{name}]")),
                "{text} → {message}"
            );
            assert_eq!(replaced.len(), 1, "{text} → {message}");
            assert_eq!(redactor.name(replaced[0].0), name);
        }
    }

    #[test]
    fn headers_keep_their_name_and_scheme() {
        let (message, replaced) = redacted(
            "GET / Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl x",
        );
        assert_eq!(
            message,
            "GET / Authorization: Bearer [REDACTED:authorization] x"
        );
        assert_eq!(replaced.iter().map(|(_, n)| n).sum::<u64>(), 1);
    }

    #[test]
    fn ordinary_lines_are_left_alone() {
        for text in [
            "step 1200 loss 0.231 lr 3e-4",
            "the task-runner finished; skipped 3",
            "Authorization failed for user alice",
            "ask-me-anything",
        ] {
            let (message, replaced) = redacted(text);
            assert_eq!(message, text);
            assert!(replaced.is_empty(), "{text}");
        }
    }

    #[test]
    fn custom_patterns_and_fields_are_redacted() {
        let redactor = Redactor::new(
            false,
            &[r"card=\d{16}".to_owned(), r"(?P<keep>pin=)\d+".to_owned()],
        )
        .unwrap();
        let mut message = "card=4111111111111111 pin=1234 AKIAIOSFODNN7EXAMPLE".to_owned();
        let mut fields =
            fields_json(r#"{"nested":{"list":["pin=99",3],"card":"card=4000000000000002"}}"#);
        let mut replaced = Vec::new();
        redactor.redact(&mut message, &mut fields, &mut replaced);
        assert_eq!(
            message,
            "[REDACTED:custom_1] pin=[REDACTED:custom_2] AKIAIOSFODNN7EXAMPLE"
        );
        let fields = fields.to_map();
        assert_eq!(fields["nested"]["list"][0], "pin=[REDACTED:custom_2]");
        assert_eq!(fields["nested"]["card"], "[REDACTED:custom_1]");
        replaced.sort();
        assert_eq!(replaced, vec![(0, 2), (1, 2)]);
    }

    fn fields_json(json: &str) -> FieldsJson {
        serde_json::from_str(json).unwrap()
    }

    /// Redacts `json` fields (and an empty message) with `redactor`.
    fn redacted_fields(redactor: &Redactor, json: &str) -> (String, Replaced) {
        let mut fields = fields_json(json);
        let mut replaced = Vec::new();
        redactor.redact(&mut String::new(), &mut fields, &mut replaced);
        (fields.as_str().to_owned(), replaced)
    }

    #[test]
    fn fields_without_secrets_keep_their_text_as_it_came() {
        let redactor = Redactor::new(true, &[]).unwrap();
        for json in [
            r#"{"z":"plain","a":{"list":[1,"two"]}}"#,
            // An escape: parsed, nothing found, the text kept.
            r#"{"z":"line\nbreak \u00e9","a":1}"#,
        ] {
            assert_eq!(redacted_fields(&redactor, json), (json.to_owned(), vec![]));
        }
    }

    /// A secret is found in a value whatever its JSON text looks like.
    #[test]
    fn secrets_in_fields_are_found_behind_escapes_and_anchors() {
        let defaults = Redactor::new(true, &[]).unwrap();
        let key = redacted_fields(&defaults, r#"{"key":"\u0041KIAIOSFODNN7EXAMPLE"}"#);
        assert_eq!(key.0, r#"{"key":"[REDACTED:aws_access_key]"}"#);
        let anchored = Redactor::new(false, &["^hunter2$".to_owned()]).unwrap();
        let whole = redacted_fields(&anchored, r#"{"password":"hunter2","note":"hunter2 x"}"#);
        assert_eq!(
            whole,
            (
                r#"{"note":"hunter2 x","password":"[REDACTED:custom_1]"}"#.to_owned(),
                vec![(0, 1)]
            )
        );
        // Word boundaries at a value's edges hold at its quotes too.
        let bounded = Redactor::new(false, &[r"\btok_[a-z]+\b".to_owned()]).unwrap();
        let (json, replaced) = redacted_fields(&bounded, r#"{"a":"tok_abc"}"#);
        assert_eq!(json, r#"{"a":"[REDACTED:custom_1]"}"#);
        assert_eq!(replaced, vec![(0, 1)]);
    }

    /// Each thread searches with its own copy of a redactor's regex, and a
    /// thread keeps copies of a few redactors only: whichever thread and
    /// however many redactors, every secret is found, by its own
    /// redactor's patterns, and nothing else is touched.
    #[test]
    fn every_thread_and_every_redactor_finds_its_own_secrets() {
        let redactors: Vec<(String, Redactor)> = (0..THREAD_COPIES + 3)
            .map(|index| {
                let pattern = format!(r"secret{index}=\d+");
                let redactor = Redactor::new(false, &[pattern]).unwrap();
                (format!("secret{index}=42"), redactor)
            })
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    // Twice round: the second finds copies evicted.
                    for _ in 0..2 {
                        for (index, (secret, redactor)) in redactors.iter().enumerate() {
                            let mut line = format!("a {secret} b");
                            let mut replaced = Vec::new();
                            redactor.redact(&mut line, &mut FieldsJson::new(), &mut replaced);
                            assert_eq!(line, "a [REDACTED:custom_1] b", "redactor {index}");
                            assert_eq!(replaced, vec![(0, 1)]);
                            let other = &redactors[(index + 1) % redactors.len()].1;
                            assert_eq!(other.secret_in(secret), None, "redactor {index}");
                            assert_eq!(redactor.secret_in(secret), Some("custom_1"));
                            let mut clean = "secret=42 step 3".to_owned();
                            redactor.redact(&mut clean, &mut FieldsJson::new(), &mut replaced);
                            assert_eq!(clean, "secret=42 step 3");
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn a_bad_pattern_is_refused_with_its_name() {
        let error = Redactor::new(true, &["(unclosed".to_owned()])
            .err()
            .unwrap();
        assert!(error.contains("custom_1 '(unclosed'"), "{error}");
    }

    #[test]
    fn secrets_in_field_keys_and_request_ids_are_redacted_and_labels_told() {
        let redactor = Redactor::new(true, &[]).unwrap();
        let key = "sk-abcdefghijklmnopqrstuvwxyz012345";
        let json = format!(r#"{{"{key}":1,"other":2}}"#);
        let (text, replaced) = redacted_fields(&redactor, &json);
        assert!(!text.contains(key), "{text}");
        assert!(text.contains("[REDACTED:sk_api_key]"), "{text}");
        assert!(text.contains("other"), "{text}");
        assert_eq!(replaced.len(), 1);

        let mut record = tailwater_model::wire::IngestRecord {
            seq: 1,
            ts: jiff::Timestamp::now(),
            stream: tailwater_model::Stream::Stdout,
            level: Default::default(),
            request_id: Some(format!("req-{key}")),
            message: "line".into(),
            fields: FieldsJson::new(),
            invalid_utf8: false,
        };
        let mut replaced = Vec::new();
        assert!(redactor.redact_request_id(&mut record, &mut replaced));
        assert_eq!(record.request_id, None);
        assert_eq!(
            record.fields.to_map()[REQUEST_ID_REDACTED_FIELD],
            "req-[REDACTED:sk_api_key]"
        );
        record.request_id = Some("req-42".into());
        assert!(!redactor.redact_request_id(&mut record, &mut replaced));
        assert_eq!(record.request_id.as_deref(), Some("req-42"));

        assert_eq!(redactor.secret_in(key), Some("sk_api_key"));
        assert_eq!(redactor.secret_in("gpu-node-7"), None);
    }
}
