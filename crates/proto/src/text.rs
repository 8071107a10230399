//! Text that came from outside (a caller's argument, a host's report) is data wherever it is
//! shown: [`escape`] is the one helper every table, message and log line uses for it, so a
//! control sequence can neither rewrite an operator's terminal nor forge a row or a line.

use std::borrow::Cow;
use std::fmt;

/// Whether `c` must not reach a terminal or a log as itself: C0 and C1 controls, DEL, line and
/// paragraph separators, and the invisible characters that reorder or hide text (bidi
/// overrides and isolates, zero-width marks, the BOM).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `text` with every unsafe character written as an escape (`\n`, `\r`, `\t`, `\u{1b}`), so
/// it always prints as one line of visible characters. Borrowed when nothing needs escaping.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Displays a string escaped, for `format!` and log fields.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_and_invisible_character_is_escaped() {
        let cases = [
            ("plain text, ünïcode", "plain text, ünïcode"),
            ("a\nb", "a\\nb"),
            ("fake\r\x1b[2Kline", "fake\\r\\u{1b}[2Kline"),
            ("\x1b]0;title\x07", "\\u{1b}]0;title\\u{7}"),
            ("tab\there", "tab\\there"),
            ("c1 \u{9b}31m", "c1 \\u{9b}31m"),
            ("del \x7f", "del \\u{7f}"),
            ("bidi \u{202e}txt.exe", "bidi \\u{202e}txt.exe"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
        ];
        for (input, expected) in cases {
            assert_eq!(escape(input), expected, "{input:?}");
            assert!(!escape(input).chars().any(is_unsafe));
        }
        assert!(matches!(escape("ok"), Cow::Borrowed(_)));
        assert_eq!(Escaped("x\ny").to_string(), "x\\ny");
    }
}
