//! Text from files (prompts, names, model paths) made safe to print: a prompt
//! holding `ESC ]0;…BEL` must not retitle the user's terminal, nor `ESC [2J` clear it.

/// `text` with every control character but newline and tab shown in caret notation
/// (`ESC` as `^[`, `BEL` as `^G`, `DEL` as `^?`) and C1 controls as `\u{9b}`, the way
/// `cat -v` shows what a terminal would otherwise obey.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\0'..='\x1f' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\x7f' => out.push_str("^?"),
            '\u{80}'..='\u{9f}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            _ => out.push(c),
        }
    }
    out
}

/// [`printable`] on one line: newlines and tabs become spaces too.
pub fn printable_line(text: &str) -> String {
    printable(&text.replace(['\n', '\t', '\r'], " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        let hostile = "a fox\x1b]0;pwned\x07\x1b[2J\u{9b}31m\x7f";
        assert_eq!(printable(hostile), "a fox^[]0;pwned^G^[[2J\\u{9b}31m^?");
        assert_eq!(printable("line one\nline two\tend, 日本語"), "line one\nline two\tend, 日本語");
        assert_eq!(printable_line("a\nb\rc\td"), "a b c d");
        assert!(!printable(hostile).chars().any(|c| c.is_control()));
    }
}
