//! Reading sdlab's own Rust source for the code panel: a small lexer (enough to tell
//! code from comments, strings and char literals), a function extractor built on it,
//! and syntax classes for highlighting. Hand-written because the panel shows four
//! short, rustfmt-formatted functions: a parser crate would be far more than they need.

/// What a piece of source text is, as far as the panel cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Whitespace,
    Comment,
    Str,
    Char,
    Lifetime,
    Number,
    Ident,
    Keyword,
    Punct,
}

/// One token: its kind and its text, a slice of the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    pub text: &'a str,
}

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn",
    "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "Self",
    "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where", "while",
];

/// Splits `src` into tokens that cover it exactly (their texts concatenate to `src`).
/// Never fails: an unterminated string or comment runs to the end.
pub fn lex(src: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = src;
    while let Some(first) = rest.chars().next() {
        let (kind, len) = if first.is_whitespace() {
            (TokenKind::Whitespace, span_while(rest, char::is_whitespace))
        } else if rest.starts_with("//") {
            (TokenKind::Comment, rest.find('\n').unwrap_or(rest.len()))
        } else if rest.starts_with("/*") {
            (TokenKind::Comment, block_comment_len(rest))
        } else if first == '"' {
            (TokenKind::Str, string_len(rest))
        } else if let Some(len) = raw_string_len(rest) {
            (TokenKind::Str, len)
        } else if first == '\'' {
            char_or_lifetime(rest)
        } else if first.is_ascii_digit() {
            (TokenKind::Number, number_len(rest))
        } else if first == '_' || first.is_alphabetic() {
            let len = span_while(rest, |c| c == '_' || c.is_alphanumeric());
            let kind = if KEYWORDS.contains(&&rest[..len]) { TokenKind::Keyword } else { TokenKind::Ident };
            (kind, len)
        } else {
            (TokenKind::Punct, first.len_utf8())
        };
        tokens.push(Token { kind, text: &rest[..len] });
        rest = &rest[len..];
    }
    tokens
}

/// Bytes at the start of `s` whose chars all satisfy `keep`.
fn span_while(s: &str, keep: impl Fn(char) -> bool) -> usize {
    s.char_indices().find(|&(_, c)| !keep(c)).map_or(s.len(), |(i, _)| i)
}

/// `/* ... */`, nested as Rust nests them.
fn block_comment_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        if bytes[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if bytes[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    s.len()
}

/// `"..."` with backslash escapes, from the opening quote.
fn string_len(s: &str) -> usize {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// `r"..."`, `r#"..."#` (and with `b` before): `None` when `s` does not start one, as
/// in a raw identifier (`r#type`) or a plain name starting with r.
fn raw_string_len(s: &str) -> Option<usize> {
    let after_prefix = s.strip_prefix("br").or_else(|| s.strip_prefix('r'))?;
    let hashes = span_while(after_prefix, |c| c == '#');
    let body = after_prefix[hashes..].strip_prefix('"')?;
    let closing = format!("\"{}", "#".repeat(hashes));
    let start = s.len() - body.len();
    Some(body.find(&closing).map_or(s.len(), |end| start + end + closing.len()))
}

/// `'x'`, `'\n'`, `'\u{..}'` are chars; `'a` is a lifetime (or a loop label).
fn char_or_lifetime(s: &str) -> (TokenKind, usize) {
    let mut chars = s.char_indices().skip(1);
    match (chars.next(), chars.next()) {
        (Some((_, '\\')), _) => {
            let end = s[2..].find('\'').map_or(s.len(), |i| 2 + i + 1);
            (TokenKind::Char, end)
        }
        (Some(_), Some((i, '\''))) => (TokenKind::Char, i + 1),
        _ => (TokenKind::Lifetime, 1 + span_while(&s[1..], |c| c == '_' || c.is_alphanumeric())),
    }
}

/// `42`, `0f32`, `1.0`, `1_000`: a dot belongs to the number only when a digit follows,
/// so `halves[0].clone()` and `0..n` keep their dots.
fn number_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let fraction = b == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
        if b.is_ascii_alphanumeric() || b == b'_' || fraction {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// A function cut out of its file, with where it starts (for the panel's line numbers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function<'a> {
    /// 1-based line number of its first line in the file.
    pub first_line: usize,
    /// From the start of the `pub fn` line to the closing brace, as written.
    pub text: &'a str,
}

impl Function<'_> {
    /// The index of the one line that contains `marker`, `None` when no line or more
    /// than one does (so a marker never silently lands on the wrong line).
    pub fn line_of(&self, marker: &str) -> Option<usize> {
        let mut found = self.text.lines().enumerate().filter(|(_, line)| line.contains(marker)).map(|(i, _)| i);
        match (found.next(), found.next()) {
            (Some(i), None) => Some(i),
            _ => None,
        }
    }
}

/// The source of `pub fn name` in `src`: the tokens `pub fn name` followed by `(` or `<`
/// (so `name_more` does not match, and neither do mentions in comments or strings), up
/// to the brace that closes its body.
pub fn extract<'a>(src: &'a str, name: &str) -> Option<Function<'a>> {
    let tokens = lex(src);
    let offsets: Vec<usize> = tokens.iter().scan(0, |at, t| Some(std::mem::replace(at, *at + t.text.len()))).collect();
    let code: Vec<usize> =
        (0..tokens.len()).filter(|&i| !matches!(tokens[i].kind, TokenKind::Whitespace | TokenKind::Comment)).collect();
    let start = code.windows(4).find_map(|w| {
        let [p, f, n, open] = [w[0], w[1], w[2], w[3]].map(|i| tokens[i]);
        let is = |t: Token, kind, text| t.kind == kind && t.text == text;
        let found = is(p, TokenKind::Keyword, "pub")
            && is(f, TokenKind::Keyword, "fn")
            && is(n, TokenKind::Ident, name)
            && (open.text == "(" || open.text == "<");
        found.then_some(w[0])
    })?;
    // Braces inside the parameter list (a destructuring pattern) do not open the body.
    let (mut depth, mut parens) = (0usize, 0usize);
    let mut end = None;
    for &i in code.iter().filter(|&&i| i > start && tokens[i].kind == TokenKind::Punct) {
        match tokens[i].text {
            "(" if depth == 0 => parens += 1,
            ")" if depth == 0 => parens = parens.saturating_sub(1),
            "{" | "}" if depth == 0 && parens > 0 => {}
            "{" => depth += 1,
            "}" if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    end = Some(offsets[i] + 1);
                    break;
                }
            }
            _ => {}
        }
    }
    let line_start = src[..offsets[start]].rfind('\n').map_or(0, |i| i + 1);
    Some(Function { first_line: src[..line_start].matches('\n').count() + 1, text: &src[line_start..end?] })
}

/// How a piece of code is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Plain,
    Keyword,
    /// A name that starts with a capital: a type, a trait or an enum variant.
    Type,
    /// `name!`
    Macro,
    /// Strings and chars.
    Literal,
    Number,
    Comment,
    Lifetime,
}

/// `text` split into lines, each a list of classified pieces whose texts concatenate to
/// the line (without its newline).
pub fn highlight(text: &str) -> Vec<Vec<(Class, &str)>> {
    let tokens = lex(text);
    let mut lines = vec![Vec::new()];
    for (i, token) in tokens.iter().enumerate() {
        let next_is_bang = tokens.get(i + 1).is_some_and(|t| t.text == "!");
        let class = match token.kind {
            TokenKind::Keyword => Class::Keyword,
            TokenKind::Ident if next_is_bang => Class::Macro,
            TokenKind::Ident if token.text.starts_with(|c: char| c.is_uppercase()) => Class::Type,
            TokenKind::Str | TokenKind::Char => Class::Literal,
            TokenKind::Number => Class::Number,
            TokenKind::Comment => Class::Comment,
            TokenKind::Lifetime => Class::Lifetime,
            TokenKind::Whitespace | TokenKind::Ident | TokenKind::Punct => Class::Plain,
        };
        for (n, piece) in token.text.split('\n').enumerate() {
            if n > 0 {
                lines.push(Vec::new());
            }
            if !piece.is_empty() {
                lines.last_mut().expect("one line at least").push((class, piece));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexing_covers_the_source_and_tells_code_from_comments_and_literals() {
        let src = "let s = \"{ \\\" }\"; // } not code\nlet c = '{'; let r = r#\"}\"#; fn f<'a>(x: &'a str) { 1.0 }";
        let tokens = lex(src);
        assert_eq!(tokens.iter().map(|t| t.text).collect::<String>(), src);
        let kinds = |kind| tokens.iter().filter(|t| t.kind == kind).map(|t| t.text).collect::<Vec<_>>();
        assert_eq!(kinds(TokenKind::Str), ["\"{ \\\" }\"", "r#\"}\"#"]);
        assert_eq!(kinds(TokenKind::Comment), ["// } not code"]);
        assert_eq!(kinds(TokenKind::Char), ["'{'"]);
        assert_eq!(kinds(TokenKind::Lifetime), ["'a", "'a"]);
        assert_eq!(kinds(TokenKind::Number), ["1.0"]);
        assert_eq!(kinds(TokenKind::Keyword), ["let", "let", "let", "fn"]);
        // only the braces that are code
        assert_eq!(kinds(TokenKind::Punct).iter().filter(|p| **p == "{" || **p == "}").count(), 2);
    }

    #[test]
    fn numbers_keep_method_and_range_dots_out() {
        let texts = |src| lex(src).into_iter().map(|t| (t.kind, t.text)).collect::<Vec<_>>();
        assert_eq!(texts("0..4")[0], (TokenKind::Number, "0"));
        assert_eq!(texts("h[0].clone()")[2], (TokenKind::Number, "0"));
        assert_eq!(texts("0.5f32")[0], (TokenKind::Number, "0.5f32"));
        assert_eq!(texts("'\\n'")[0], (TokenKind::Char, "'\\n'"));
        assert_eq!(texts("/* a /* b */ c */x")[0], (TokenKind::Comment, "/* a /* b */ c */"));
        assert_eq!(texts("r#type")[0], (TokenKind::Ident, "r"));
    }

    #[test]
    fn extract_finds_the_named_function_and_its_balanced_body() {
        let src = "//! pub fn target() { in a doc }\n\
                   pub fn target_not() {}\n\
                   /// doc\n\
                   pub fn target<T>(x: T) -> Result<()> {\n    let s = \"}\";\n    if x { '}' } // }\n}\n\
                   pub fn after() {}\n";
        let f = extract(src, "target").unwrap();
        assert_eq!(f.first_line, 4);
        assert_eq!(f.text, "pub fn target<T>(x: T) -> Result<()> {\n    let s = \"}\";\n    if x { '}' } // }\n}");
        assert_eq!(extract(src, "after").unwrap().text, "pub fn after() {}");
        assert_eq!(extract(src, "missing"), None);
        // a body that never closes is not a function
        assert_eq!(extract("pub fn open() { {", "open"), None);
        // a destructuring parameter's braces are not the body
        let pattern = "pub fn step(Guide { scale, eta }: Guide) -> f64 {\n    scale * eta\n}\nfn next() {}";
        assert_eq!(
            extract(pattern, "step").unwrap().text,
            "pub fn step(Guide { scale, eta }: Guide) -> f64 {\n    scale * eta\n}"
        );
        assert_eq!(f.line_of("let s"), Some(1));
        assert_eq!(f.line_of("}"), None, "more than one line has a brace");
        assert_eq!(f.line_of("nowhere"), None);
    }

    #[test]
    fn highlight_classifies_pieces_line_by_line() {
        let lines = highlight("pub fn f() {\n    vec![1] // x\n}");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0][0], (Class::Keyword, "pub"));
        assert!(lines[1].contains(&(Class::Macro, "vec")));
        assert!(lines[1].contains(&(Class::Number, "1")));
        assert!(lines[1].contains(&(Class::Comment, "// x")));
        let text: Vec<String> = lines.iter().map(|l| l.iter().map(|(_, t)| *t).collect()).collect();
        assert_eq!(text, ["pub fn f() {", "    vec![1] // x", "}"]);
    }
}
