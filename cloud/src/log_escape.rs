//! Text from the network, made safe to log: control characters (a `\n` that would start a forged
//! log line, a `\r`, an escape sequence for the operator's terminal) are written as escapes.
//!
//! Everything a peer sends that reaches a log line (a request path, a header, a parser's or
//! peer's error text) goes through [`Escaped`]. Printable text, including non-ASCII letters, is
//! kept as it is so the log stays readable.

use std::fmt;

/// Displays its text with control characters escaped: `\n`, `\r`, `\t` and `\\` as those two
/// characters, any other control character (C0, DEL, C1) and the Unicode line and paragraph
/// separators as `\u{..}`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    // The backslash too, so that an escaped line cannot be confused with one whose text held
    // the escape's two characters.
    c.is_control() || c == '\\' || c == '\u{2028}' || c == '\u{2029}'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_start_a_new_log_line() {
        let forged = "/x\n2026-01-01T00:00:00Z INFO forged\r\u{1b}[2J\u{85}\u{2028}";
        let shown = Escaped(forged).to_string();
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert_eq!(
            shown,
            "/x\\n2026-01-01T00:00:00Z INFO forged\\r\\u{1b}[2J\\u{85}\\u{2028}"
        );
    }

    #[test]
    fn printable_text_is_kept_and_backslashes_are_doubled() {
        assert_eq!(
            Escaped("GET /watermelon/sync?x=é").to_string(),
            "GET /watermelon/sync?x=é"
        );
        assert_eq!(Escaped("a\\nb").to_string(), "a\\\\nb");
    }
}
