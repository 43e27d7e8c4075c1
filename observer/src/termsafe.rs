//! Text another process controls (comm, command lines, cgroup and container names, interface
//! names, paths), made safe to print on a terminal.
//!
//! Any process on the host can name itself `\x1b[31mEVIL\x07` or put newlines in its argv;
//! printed raw, that recolours the operator's terminal, rings its bell, moves the cursor or
//! forges table rows. Everything the table and `why` print goes through [`escape`] line by
//! line: no C0 or C1 control character, DEL or bidirectional override reaches the terminal,
//! and a backslash is doubled so that an escape shown can always be told from the same text
//! written by the process. (Strings here are already UTF-8: bytes that were not are U+FFFD.)
//! JSON output needs none of this: serde escapes control characters itself.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is.
fn unsafe_char(c: char) -> bool {
    matches!(c,
        '\0'..='\x1f' | '\x7f'..='\u{9f}' | '\\'
        // Bidirectional embeddings, overrides and isolates, and the marks: they reorder
        // what follows them on the line.
        | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        // Line and paragraph separators: some terminals break the line there.
        | '\u{2028}' | '\u{2029}')
}

/// `text` with every unsafe character written as an escape (`\n`, `\t`, `\r`, `\\`, `\xNN`
/// below U+0100, `\u{NNNN}` above); borrowed when there is none.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if unsafe_char(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn hostile_names_are_escaped() {
        assert_eq!(escape("\x1b[31mEVIL\x07"), "\\x1b[31mEVIL\\x07");
        assert_eq!(
            escape("python3 -c\nimport os\n"),
            "python3 -c\\nimport os\\n"
        );
        assert_eq!(escape("a\tb\rc\x7fd"), "a\\tb\\rc\\x7fd");
        // C1 CSI (a one-character escape sequence on some terminals) and a bidi override.
        assert_eq!(escape("x\u{9b}31m"), "x\\x9b31m");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape("\u{2028}"), "\\u{2028}");
        // A backslash is doubled, so a process cannot forge an escape.
        assert_eq!(escape("\\x1b"), "\\\\x1b");
    }

    #[test]
    fn ordinary_text_is_kept_as_it_is() {
        for s in [
            "nginx",
            "node /srv/app.js --port=80",
            "ünïcødé 名前",
            "\u{fffd}",
            "",
        ] {
            assert!(matches!(escape(s), std::borrow::Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn nothing_unsafe_survives_any_byte() {
        for b in 0u32..0x3000 {
            let Some(c) = char::from_u32(b) else { continue };
            let s = escape(&c.to_string()).into_owned();
            assert!(
                !s.chars()
                    .any(|c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}')),
                "{b:#x} → {s:?}"
            );
        }
    }
}
