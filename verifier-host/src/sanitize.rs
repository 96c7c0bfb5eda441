//! Text that came from a node (error details, anything it chose) is printed
//! with control characters escaped, so a node cannot move the cursor,
//! clear the screen or paint a fake verdict on the operator's terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character (C0, DEL, C1, and the Unicode
/// bidirectional overrides) written as `\u{..}`; a backslash is doubled so
/// the escaping cannot be forged. Borrowed when nothing needed escaping.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if needs_escape(c) {
            // Writing into a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        // Bidirectional embeddings, overrides and isolates reorder text.
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_what_a_terminal_would_obey() {
        assert_eq!(escape_control("plain text: ok"), "plain text: ok");
        assert_eq!(
            escape_control("\x1b[2J\x1b[Henrolled\r\n"),
            "\\u{1b}[2J\\u{1b}[Henrolled\\u{d}\\u{a}"
        );
        assert_eq!(escape_control("a\\u{1b}"), "a\\\\u{1b}");
        assert_eq!(escape_control("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape_control("x\u{202e}y"), "x\\u{202e}y");
    }

    proptest! {
        #[test]
        fn output_has_no_control_characters(text in ".{0,64}", raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let lossy = String::from_utf8_lossy(&raw);
            for input in [text.as_str(), &*lossy] {
                let out = escape_control(input);
                prop_assert!(!out.chars().any(|c| c.is_control()));
            }
        }
    }
}
