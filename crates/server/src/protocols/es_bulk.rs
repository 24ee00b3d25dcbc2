//! An Elasticsearch `_bulk` body, as rsyslog's `omelasticsearch`, Vector's
//! and Fluent Bit's `es` outputs and the official clients send it: NDJSON, an action line (`{"index": {"_index", "_id"}}`) and, for
//! `index`, `create` and `update`, a source line after it. Pure decoding;
//! the HTTP edge is `api::es`, the mapping of each document
//! [`super::documents`].
//!
//! `index` and `create` store their document; `update` and `delete` are
//! answered with an error each (logs are appended, never changed). A
//! document that is not a JSON object is its own item's error, as
//! Elasticsearch answers it; a line that is not an action refuses the
//! whole request, as it does too.

use serde_json::Value;
use tailwater_model::Fields;

/// The longest `_index` Elasticsearch takes.
pub const MAX_INDEX_BYTES: usize = 255;
/// The longest `_id` Elasticsearch takes.
pub const MAX_ID_BYTES: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Index,
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Index => "index",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    fn named(name: &str) -> Option<Action> {
        Some(match name {
            "index" => Action::Index,
            "create" => Action::Create,
            "update" => Action::Update,
            "delete" => Action::Delete,
            _ => return None,
        })
    }
}

/// One action of the request.
#[derive(Debug, PartialEq)]
pub struct Item {
    pub action: Action,
    pub index: String,
    /// The client's `_id`, if it gave one.
    pub id: Option<String>,
    /// The document to store, or why this item is refused.
    pub document: Result<Fields, ItemError>,
}

/// An item's error, as Elasticsearch writes it in the item.
#[derive(Debug, PartialEq)]
pub struct ItemError {
    pub status: u16,
    /// Elasticsearch's exception type (`mapper_parsing_exception`, …).
    pub kind: &'static str,
    pub reason: String,
}

impl ItemError {
    pub fn new(status: u16, kind: &'static str, reason: impl Into<String>) -> ItemError {
        ItemError {
            status,
            kind,
            reason: reason.into(),
        }
    }
}

/// Why the whole request was refused (a 400; nothing stored).
#[derive(Debug, PartialEq)]
pub struct Malformed {
    pub kind: &'static str,
    pub reason: String,
}

/// The request's items; `path_index` is the index of `/{index}/_bulk`.
pub fn decode(body: &[u8], path_index: Option<&str>) -> Result<Vec<Item>, Malformed> {
    let mut lines = body
        .split(|byte| *byte == b'\n')
        .enumerate()
        .map(|(number, line)| (number + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace));
    let mut items = Vec::new();
    while let Some((number, line)) = lines.next() {
        let (action, meta) = action_line(number, line)?;
        let index = text(&meta, "_index")
            .or_else(|| path_index.map(str::to_owned))
            .ok_or_else(|| Malformed {
                kind: "action_request_validation_exception",
                reason: format!(
                    "validation failed: 1: index is missing (action/metadata line [{number}]): name it in the action's _index or the path /{{index}}/_bulk;"
                ),
            })?;
        let id = text(&meta, "_id");
        let source = match action {
            Action::Delete => None,
            _ => Some(lines.next().ok_or_else(|| Malformed {
                kind: "illegal_argument_exception",
                reason: format!(
                    "the {} action on line [{number}] has no document after it: send each document on the line after its action",
                    action.name()
                ),
            })?),
        };
        let document = match (action, source) {
            _ if index.len() > MAX_INDEX_BYTES => Err(ItemError::new(
                400,
                "invalid_index_name_exception",
                format!("invalid index name: it is longer than {MAX_INDEX_BYTES} bytes"),
            )),
            _ if id.as_ref().is_some_and(|id| id.len() > MAX_ID_BYTES) => Err(ItemError::new(
                400,
                "illegal_argument_exception",
                format!("_id is longer than {MAX_ID_BYTES} bytes: send a shorter one, or none"),
            )),
            (Action::Index | Action::Create, Some((_, source))) => read_document(source),
            _ => Err(ItemError::new(
                400,
                "illegal_argument_exception",
                format!(
                    "{} is not supported: tailwater keeps logs as they were sent; send index or create actions",
                    action.name()
                ),
            )),
        };
        items.push(Item {
            action,
            index,
            id,
            document,
        });
    }
    Ok(items)
}

/// The action and its metadata (`{"index": {…}}`).
fn action_line(number: usize, line: &[u8]) -> Result<(Action, Fields), Malformed> {
    let malformed = |why: String| {
        Malformed {
        kind: "illegal_argument_exception",
        reason: format!(
            "malformed action/metadata line [{number}]: {why}; each action is one JSON object such as {{\"index\": {{\"_index\": \"logs\"}}}}"
        ),
    }
    };
    let value: Value = serde_json::from_slice(line)
        .map_err(|error| malformed(format!("it is not JSON ({error})")))?;
    let Value::Object(object) = value else {
        return Err(malformed("it is not an object".into()));
    };
    let mut entries = object.into_iter();
    let (Some((name, meta)), None) = (entries.next(), entries.next()) else {
        return Err(malformed("it must name exactly one action".into()));
    };
    let action = Action::named(&name).ok_or_else(|| {
        malformed(format!(
            "expected one of create, delete, index, update but found '{}'",
            name.chars().take(40).collect::<String>().escape_debug()
        ))
    })?;
    match meta {
        Value::Object(meta) => Ok((action, meta)),
        _ => Err(malformed(format!(
            "the {name} action's metadata is not an object"
        ))),
    }
}

fn text(meta: &Fields, key: &str) -> Option<String> {
    match meta.get(key)? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn read_document(line: &[u8]) -> Result<Fields, ItemError> {
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ItemError::new(
            400,
            "mapper_parsing_exception",
            "failed to parse: the document is not a JSON object; send each log record as an object such as {\"message\": \"…\"}",
        )),
        Err(error) => Err(ItemError::new(
            400,
            "mapper_parsing_exception",
            format!("failed to parse: the document is not JSON ({error})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn actions_with_their_documents() {
        let body = concat!(
            "{\"index\":{\"_index\":\"logs\",\"_id\":\"a1\"}}\n",
            "{\"message\":\"one\"}\n",
            "\n",
            "{\"create\":{}}\r\n",
            "{\"message\":\"two\"}\r\n",
            "{\"delete\":{\"_index\":\"logs\",\"_id\":\"a1\"}}\n",
            "{\"update\":{\"_id\":7}}\n",
            "{\"doc\":{\"message\":\"three\"}}\n",
            "{\"index\":{\"_type\":\"events\"}}\n",
            "not json\n",
            "{\"index\":{}}\n",
            "[1]",
        );
        let items = decode(body.as_bytes(), Some("path")).unwrap();
        let shape: Vec<_> = items
            .iter()
            .map(|item| {
                let outcome = match &item.document {
                    Ok(document) => Ok(Value::Object(document.clone())),
                    Err(error) => Err((error.status, error.kind)),
                };
                (
                    item.action,
                    item.index.as_str(),
                    item.id.as_deref(),
                    outcome,
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (
                    Action::Index,
                    "logs",
                    Some("a1"),
                    Ok(json!({"message": "one"}))
                ),
                (Action::Create, "path", None, Ok(json!({"message": "two"}))),
                (
                    Action::Delete,
                    "logs",
                    Some("a1"),
                    Err((400, "illegal_argument_exception"))
                ),
                (
                    Action::Update,
                    "path",
                    Some("7"),
                    Err((400, "illegal_argument_exception"))
                ),
                (
                    Action::Index,
                    "path",
                    None,
                    Err((400, "mapper_parsing_exception"))
                ),
                (
                    Action::Index,
                    "path",
                    None,
                    Err((400, "mapper_parsing_exception"))
                ),
            ]
        );
    }

    #[test]
    fn malformed_requests_are_refused_whole() {
        for (body, says) in [
            (&b"{\"index\":{}}\n"[..], "has no document after it"),
            (
                b"{\"upsert\":{}}\n{}\n",
                "expected one of create, delete, index, update",
            ),
            (b"{\"index\":{},\"create\":{}}\n{}\n", "exactly one action"),
            (b"{\"index\":5}\n{}\n", "metadata is not an object"),
            (b"[]\n", "not an object"),
            (b"{oops\n", "it is not JSON"),
        ] {
            let error = decode(body, Some("logs")).unwrap_err();
            assert!(
                error.reason.contains(says),
                "{}: {error:?}",
                String::from_utf8_lossy(body)
            );
            assert!(error.reason.contains("line [1]"), "{error:?}");
        }
        let error = decode(b"{\"index\":{}}\n{}\n", None).unwrap_err();
        assert_eq!(error.kind, "action_request_validation_exception");
        assert_eq!(decode(b"", None).unwrap(), []);
    }

    #[test]
    fn names_past_elasticsearchs_limits_are_item_errors() {
        let long_index = "i".repeat(MAX_INDEX_BYTES + 1);
        let long_id = "d".repeat(MAX_ID_BYTES + 1);
        let body = format!(
            "{{\"index\":{{\"_index\":\"{long_index}\"}}}}\n{{}}\n{{\"index\":{{\"_id\":\"{long_id}\"}}}}\n{{}}\n"
        );
        let items = decode(body.as_bytes(), Some("logs")).unwrap();
        assert_eq!(
            items[0].document.as_ref().unwrap_err().kind,
            "invalid_index_name_exception"
        );
        assert_eq!(
            items[1].document.as_ref().unwrap_err().kind,
            "illegal_argument_exception"
        );
    }
}
