//! Targets of the model crate's decoders: the line parser, query
//! parameters, filters and regexes, cursors.

use std::collections::HashSet;

use jiff::Timestamp;
use tailwater_model::matcher::Matcher;
use tailwater_model::wire::{LogsParams, RequestsParams, MAX_REQUESTS_LIMIT};
use tailwater_model::words::words;
use tailwater_model::{Cursor, Filter, IdRange, Pattern, Phrase, SealKey, Substring, TenantSeal};

/// Small enough that the fuzzer meets the limit, large enough for real
/// patterns.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// How the targets seal `tenant`'s positions: under a fixed key.
pub fn seal(tenant: &str) -> TenantSeal {
    SealKey::new([0x5a; SealKey::LEN]).tenant(tenant)
}

/// A worker's output line: parsed, with its fields a JSON object that
/// can be written again and read back the same (floats too: serde_json's
/// `float_roundtrip` reads them exactly).
pub fn parse_line(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let parsed = tailwater_model::parse_line(&line);
    let fields = parsed.fields.to_map();
    let again = tailwater_model::FieldsJson::from_map(&fields).to_map();
    assert_eq!(again, fields, "fields read back as they were written");
}

/// A query string, as `GET /v1/logs` reads it: pairs, parameters, a query
/// under a regex size limit.
pub fn logs_params(data: &[u8]) {
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(data) else {
        return;
    };
    let Ok(params) = LogsParams::from_pairs(pairs) else {
        return;
    };
    let again = LogsParams::from_pairs(params.to_pairs()).expect("written parameters read back");
    assert_eq!(again, params, "parameters survive to_pairs");
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let seal = seal("acme");
    let _ = params.after_position(&seal);
    let _ = params.around_position(&seal);
    if let Ok(query) = params.to_query_within(now, REGEX_SIZE_LIMIT, &seal) {
        let _ = query.filter.required_words();
    }
}

/// A query string, as `GET /v1/requests` reads it: pairs, parameters (what
/// they ask for read back the same from what they write), a query within
/// its page limits, and a cursor that opens for its own tenant only.
pub fn requests_params(data: &[u8]) {
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(data) else {
        return;
    };
    let Ok(params) = RequestsParams::from_pairs(pairs) else {
        return;
    };
    let again =
        RequestsParams::from_pairs(params.to_pairs()).expect("written parameters read back");
    assert_eq!(
        again.to_pairs(),
        params.to_pairs(),
        "parameters survive to_pairs"
    );
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let (mine, theirs) = (seal("acme"), seal("globex"));
    let query = params.to_query(now, &mine);
    assert_eq!(again.to_query(now, &mine), query, "the same query");
    if let Ok(query) = query {
        assert!((1..=MAX_REQUESTS_LIMIT).contains(&query.limit));
        if query.cursor.is_some() {
            assert!(
                params.to_query(now, &theirs).is_err(),
                "a cursor opens for its tenant only"
            );
        }
        let _ = query.is_empty_range();
    }
}

/// A filter's regex, substring and phrase, and messages to match: a
/// matching message holds every word the filter requires (the store skips
/// blocks by them, so a wrong one loses results silently).
///
/// Parts: mode (bit 0: case-sensitive substring), regex, substring,
/// phrase, then messages.
pub fn filter_match(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parts: Vec<String> = crate::split(rest)
        .into_iter()
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    let part = |index: usize| parts.get(index).filter(|p| !p.is_empty());
    let filter = Filter {
        regex: part(0).and_then(|source| Pattern::search_within(source, REGEX_SIZE_LIMIT).ok()),
        contains: part(1)
            .and_then(|text| Substring::within(text, mode & 1 == 1, REGEX_SIZE_LIMIT).ok()),
        text: part(2).map(|text| Phrase::new(text)),
        ..Filter::default()
    };
    let label = part(0).and_then(|source| Pattern::whole_within(source, REGEX_SIZE_LIMIT).ok());
    // The conditions' own texts, and around them, are the messages most
    // likely to match.
    let mut messages: Vec<String> = parts.clone();
    for text in parts.iter().take(3) {
        messages.push(format!("x {text} y"));
    }
    let required = filter.required_words();
    for message in &messages {
        if let Some(pattern) = &label {
            let _ = Matcher::Re(pattern.clone()).matches(message);
        }
        if !filter.matches_message(message) {
            continue;
        }
        let present: HashSet<String> = words(message).map(str::to_ascii_lowercase).collect();
        for word in &required {
            assert!(
                present.contains(word),
                "{filter:?} matches {message:?}, which lacks its required word {word:?}"
            );
        }
        let alternatives = filter.word_alternatives();
        assert!(
            alternatives.is_empty()
                || alternatives
                    .iter()
                    .any(|words| words.iter().all(|word| present.contains(word))),
            "{filter:?} matches {message:?}, which holds none of its alternatives {alternatives:?}"
        );
    }
}

/// Cursors, id ranges and record ids: garbage refused (a forgery passes
/// once in 2^64), decode(encode(x)) == x, and what one tenant was given
/// opens for no other.
pub fn cursor(data: &[u8]) {
    let (mine, theirs) = (seal("acme"), seal("globex"));
    let text = String::from_utf8_lossy(data);
    if let Ok(cursor) = Cursor::decode(&text, &mine) {
        assert_eq!(cursor.encode(&mine), text, "a cursor has one spelling");
    }
    if let Some(range) = IdRange::decode(&text, &mine) {
        assert_eq!(range.encode(&mine), text, "an id range has one spelling");
        assert!(range.after < range.through);
    }
    if let Some(position) = mine.position(&text) {
        assert_eq!(mine.id(position), text, "an id has one spelling");
    }
    let _ = tailwater_model::wire::parse_after(&text, &mine);
    if let Some(bytes) = data.get(..16) {
        let (a, b) = bytes.split_at(8);
        let a = u64::from_le_bytes(a.try_into().unwrap());
        let b = u64::from_le_bytes(b.try_into().unwrap());
        let cursor = Cursor {
            ts_ns: a as i64,
            position: b,
        };
        let encoded = cursor.encode(&mine);
        assert_eq!(Cursor::decode(&encoded, &mine), Ok(cursor));
        assert!(Cursor::decode(&encoded, &theirs).is_err(), "not theirs");
        assert_eq!(
            IdRange::decode(&encoded, &mine),
            None,
            "a cursor is no range"
        );
        let range = IdRange {
            after: a.min(b),
            through: a.max(b),
        };
        let encoded = range.encode(&mine);
        assert_eq!(IdRange::decode(&encoded, &mine), (a != b).then_some(range));
        assert_eq!(IdRange::decode(&encoded, &theirs), None, "not theirs");
        assert!(
            Cursor::decode(&encoded, &mine).is_err(),
            "a range is no cursor"
        );
        assert_eq!(mine.position(&mine.id(b)), Some(b));
        assert_eq!(theirs.position(&mine.id(b)), None, "not theirs");
    }
}
