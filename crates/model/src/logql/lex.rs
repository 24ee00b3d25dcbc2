//! LogQL text as tokens: names, strings (Go's quoted and raw), numbers,
//! durations (`5m`, `1h30m`, `250ms`), byte sizes (`10MB`, `1KiB`) and
//! operators. `#` starts a comment to the end of the line.

/// One token and the byte offset it starts at.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub kind: Tok,
    pub at: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(String),
    Number(f64),
    /// Nanoseconds.
    Duration(i64),
    Bytes(f64),
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Pipe,
    PipeEq,
    PipeTilde,
    Ne,
    NotTilde,
    Eq,
    EqTilde,
    EqEq,
    Gt,
    Ge,
    Lt,
    Le,
    Plus,
    Minus,
    Star,
    Slash,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("'{name}'"),
            Tok::Str(text) => format!("the string {text:?}"),
            Tok::Number(number) => format!("the number {number}"),
            Tok::Duration(_) => "a duration".to_owned(),
            Tok::Bytes(_) => "a byte size".to_owned(),
            other => format!("'{}'", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Pipe => "|",
            Tok::PipeEq => "|=",
            Tok::PipeTilde => "|~",
            Tok::Ne => "!=",
            Tok::NotTilde => "!~",
            Tok::Eq => "=",
            Tok::EqTilde => "=~",
            Tok::EqEq => "==",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            _ => "?",
        }
    }
}

/// The tokens of `text`, or an error naming where it cannot be read.
pub fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let at = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let two = |second: u8| bytes.get(i + 1) == Some(&second);
        let (kind, len) = match c {
            b'{' => (Tok::LBrace, 1),
            b'}' => (Tok::RBrace, 1),
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'+' => (Tok::Plus, 1),
            b'-' => (Tok::Minus, 1),
            b'*' => (Tok::Star, 1),
            b'/' => (Tok::Slash, 1),
            b'|' if two(b'=') => (Tok::PipeEq, 2),
            b'|' if two(b'~') => (Tok::PipeTilde, 2),
            b'|' => (Tok::Pipe, 1),
            b'!' if two(b'=') => (Tok::Ne, 2),
            b'!' if two(b'~') => (Tok::NotTilde, 2),
            b'=' if two(b'~') => (Tok::EqTilde, 2),
            b'=' if two(b'=') => (Tok::EqEq, 2),
            b'=' => (Tok::Eq, 1),
            b'>' if two(b'=') => (Tok::Ge, 2),
            b'>' => (Tok::Gt, 1),
            b'<' if two(b'=') => (Tok::Le, 2),
            b'<' => (Tok::Lt, 1),
            b'"' => {
                let (value, end) = quoted(text, i)?;
                out.push(Token {
                    kind: Tok::Str(value),
                    at,
                });
                i = end;
                continue;
            }
            b'`' => {
                let end = text[i + 1..]
                    .find('`')
                    .ok_or_else(|| format!("at {at}: a raw string is not closed: end it with `"))?;
                out.push(Token {
                    kind: Tok::Str(text[i + 1..i + 1 + end].to_owned()),
                    at,
                });
                i += end + 2;
                continue;
            }
            c if c.is_ascii_digit()
                || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                let end = number_end(bytes, i);
                out.push(Token {
                    kind: number(&text[i..end]).map_err(|error| format!("at {at}: {error}"))?,
                    at,
                });
                i = end;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut end = i;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                out.push(Token {
                    kind: Tok::Ident(text[i..end].to_owned()),
                    at,
                });
                i = end;
                continue;
            }
            _ => {
                let shown = text[i..].chars().next().unwrap_or('?');
                return Err(format!("at {at}: unexpected character {shown:?}"));
            }
        };
        out.push(Token { kind, at });
        i += len;
    }
    Ok(out)
}

/// Where a number (with its unit, if any) that starts at `start` ends.
fn number_end(bytes: &[u8], start: usize) -> usize {
    let mut end = start;
    while end < bytes.len()
        && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'.' || bytes[end] == b'_')
    {
        // An exponent's sign belongs to the number: 1e-3.
        end += 1;
        if end < bytes.len()
            && (bytes[end] == b'-' || bytes[end] == b'+')
            && bytes[end - 1].eq_ignore_ascii_case(&b'e')
            && bytes[start..end - 1]
                .iter()
                .all(|b| b.is_ascii_digit() || *b == b'.')
        {
            end += 1;
        }
    }
    end
}

/// A number, a duration or a byte size.
fn number(text: &str) -> Result<Tok, String> {
    if let Ok(number) = text.parse::<f64>() {
        if number.is_finite() {
            return Ok(Tok::Number(number));
        }
    }
    if let Some(ns) = duration_ns(text) {
        return Ok(Tok::Duration(ns));
    }
    if let Some(bytes) = byte_size(text) {
        return Ok(Tok::Bytes(bytes));
    }
    Err(format!(
        "cannot read '{text}' as a number, a duration (5m, 1h30m) or a byte size (10MB)"
    ))
}

/// A Go-style duration of whole units (`1h30m`, `250ms`, `1.5s`), in
/// nanoseconds; `None` past what an i64 holds.
pub fn duration_ns(text: &str) -> Option<i64> {
    const UNITS: [(&str, f64); 10] = [
        ("ns", 1.0),
        ("us", 1e3),
        ("µs", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("m", 60e9),
        ("h", 3600e9),
        ("d", 86400e9),
        ("w", 604800e9),
        ("y", 31536000e9),
    ];
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (_, scale) = UNITS.iter().find(|(unit, _)| *unit == &rest[..unit_len])?;
        total += value * scale;
        rest = &rest[unit_len..];
    }
    (total.is_finite() && total < i64::MAX as f64).then_some(total as i64)
}

/// A byte size (`10MB`, `1.5KiB`, `300b`), in bytes.
fn byte_size(text: &str) -> Option<f64> {
    let digits = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let value: f64 = text[..digits].parse().ok()?;
    let scale = match text[digits..].to_ascii_lowercase().as_str() {
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "pb" => 1e15,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        "pib" => 1024.0f64.powi(5),
        _ => return None,
    };
    Some(value * scale)
}

/// A string in double quotes starting at `start`, with Go's escapes; the
/// value and the offset after its closing quote.
fn quoted(text: &str, start: usize) -> Result<(String, usize), String> {
    let mut value = String::new();
    let mut chars = text[start + 1..].char_indices();
    let unclosed = || format!("at {start}: a string is not closed: end it with \"");
    while let Some((offset, c)) = chars.next() {
        match c {
            '"' => return Ok((value, start + 1 + offset + 1)),
            '\\' => {
                let (_, escape) = chars.next().ok_or_else(unclosed)?;
                let simple = match escape {
                    'a' => Some('\x07'),
                    'b' => Some('\x08'),
                    'f' => Some('\x0c'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    'v' => Some('\x0b'),
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    '\'' => Some('\''),
                    _ => None,
                };
                if let Some(simple) = simple {
                    value.push(simple);
                    continue;
                }
                let digits = match escape {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => {
                        return Err(format!(
                        "at {}: unknown escape \\{escape} in a string: write \\\\ for a backslash",
                        start + 1 + offset
                    ))
                    }
                };
                let mut code = 0u32;
                for _ in 0..digits {
                    let (_, digit) = chars.next().ok_or_else(unclosed)?;
                    let digit = digit.to_digit(16).ok_or_else(|| {
                        format!(
                            "at {}: a \\{escape} escape needs {digits} hex digits",
                            start + 1 + offset
                        )
                    })?;
                    code = code * 16 + digit;
                }
                let c = char::from_u32(code).ok_or_else(|| {
                    format!(
                        "at {}: \\{escape} escape is not a character",
                        start + 1 + offset
                    )
                })?;
                value.push(c);
            }
            c => value.push(c),
        }
    }
    Err(unclosed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Tok> {
        tokens(text).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn numbers_durations_and_sizes() {
        assert_eq!(
            kinds("1 1.5 5m 1h30m 250ms 10MB 1KiB 1e3"),
            vec![
                Tok::Number(1.0),
                Tok::Number(1.5),
                Tok::Duration(300_000_000_000),
                Tok::Duration(5_400_000_000_000),
                Tok::Duration(250_000_000),
                Tok::Bytes(1e7),
                Tok::Bytes(1024.0),
                Tok::Number(1000.0),
            ]
        );
        assert!(tokens("5parsecs").is_err());
    }

    #[test]
    fn strings_with_escapes_and_raw() {
        assert_eq!(
            kinds(r#""a\"b\\n\u00e9" `\d+`"#),
            vec![Tok::Str("a\"b\\né".into()), Tok::Str(r"\d+".into())]
        );
        assert!(tokens(r#""open"#).is_err());
        assert!(tokens(r#""\q""#).is_err());
    }

    #[test]
    fn operators_and_comments() {
        assert_eq!(
            kinds("|= |~ != !~ =~ == >= <= | # the rest\n="),
            vec![
                Tok::PipeEq,
                Tok::PipeTilde,
                Tok::Ne,
                Tok::NotTilde,
                Tok::EqTilde,
                Tok::EqEq,
                Tok::Ge,
                Tok::Le,
                Tok::Pipe,
                Tok::Eq,
            ]
        );
    }
}
