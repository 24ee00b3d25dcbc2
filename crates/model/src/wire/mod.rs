//! Bodies of the HTTP API, shared by the server, the client and the agent.

use serde::{Deserialize, Serialize};

mod binary;
mod cluster;
mod drains;
mod ingest;
mod logs;
mod reads;
mod requests;
mod runners;
mod status;

pub use binary::*;
pub use cluster::*;
pub use drains::*;
pub use ingest::*;
pub use logs::*;
pub use reads::*;
pub use requests::*;
pub use runners::*;
pub use status::*;

/// Every API error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `bad_request`, …
    pub code: String,
    /// Lowercase, and says what to do.
    pub message: String,
}

impl ErrorBody {
    /// The body of every error answer, from the server's API and from the
    /// agent's proxy alike.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// `text` with every byte but the unreserved ones (ASCII letters, digits,
/// `-`, `.`, `_`, `~`) written `%XX`: safe as one path segment or one query
/// name or value, whatever it holds.
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests;
