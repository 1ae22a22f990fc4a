//! The editable text field behind the prompt, negative prompt, seed, "go to step" and save-path inputs.
//!
//! Editing follows readline/emacs keys because that is what terminal users' fingers already know.
//! The text is always one line: prompts are long but a newline means nothing to the tokenizer, so
//! pasted newlines become spaces and the field wraps the single line on screen instead.
//!
//! Positions are counted in `char`s, not bytes (so "é" or "日" is never split) and not grapheme
//! clusters (that would need `unicode-segmentation` as a direct dependency). A combining accent
//! typed separately is therefore its own cursor stop; for the prompts this field edits that is rare.

use std::ops::Range;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::buffer::CellWidth;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::Frame;

/// What a key did, so the app knows whether to re-run what depends on the text (prompt encoding,
/// the seed's noise) or just redraw, and which keys are left for its own bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldAction {
    /// The text changed; the cursor may have moved too.
    Edited,
    /// Only the cursor moved.
    Moved,
    /// Enter: the user is done and wants the value used.
    Submit,
    /// Esc: the user wants out of the field.
    Cancel,
    /// Nothing changed: the key is not one the field uses, is filtered out, or had nothing to act on
    /// (Backspace at the start, Left at the start). The app may use it for its own bindings.
    Ignored,
}

/// A single-line editable text, shown wrapped (prompts are long), with a cursor.
#[derive(Debug, Clone)]
pub struct TextField {
    text: String,
    /// In chars, `0..=text.chars().count()`.
    cursor: usize,
    /// A plain `fn` rather than a boxed closure keeps the field `Clone` and `Debug`; the filters
    /// needed here (digits, say) capture nothing.
    filter: fn(char) -> bool,
    max_len: usize,
}

impl TextField {
    /// Cursor at the end, since the usual next action on a pre-filled prompt is to add to it.
    pub fn new(text: impl Into<String>) -> Self {
        let mut field = Self { text: String::new(), cursor: 0, filter: |_| true, max_len: usize::MAX };
        field.set_text(text);
        field
    }

    /// An empty field that only takes ASCII digits, for the seed and the step number, so that what
    /// the user types always parses (or is empty).
    pub fn digits() -> Self {
        Self::new("").with_filter(|c| c.is_ascii_digit())
    }

    /// Only characters for which `filter` is true get in, whether typed, pasted or set. Characters
    /// already in the field that fail it are dropped, so the text always obeys the filter.
    pub fn with_filter(mut self, filter: fn(char) -> bool) -> Self {
        self.filter = filter;
        let text = std::mem::take(&mut self.text);
        self.set_text(text);
        self
    }

    /// At most `max_len` chars: further typing or pasting is cut off rather than refused outright,
    /// so a paste that is too long still fills the field. The current text is truncated to fit.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        let text = std::mem::take(&mut self.text);
        self.set_text(text);
        self
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Replaces the text, cursor at the end. It goes through the same cleaning as a paste
    /// (newlines become spaces, control characters and filtered characters are dropped) so the
    /// field's invariants hold whatever the app puts in.
    pub fn set_text(&mut self, text: impl Into<String>) {
        self.text.clear();
        self.cursor = 0;
        self.insert(&text.into());
    }

    /// The cursor position in chars (not bytes, not graphemes), `0..=text().chars().count()`.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Applies a key; returns what happened so the app can act (Enter submits, Esc leaves).
    ///
    /// Key releases are ignored: terminals that report them (Windows, kitty protocol) would
    /// otherwise apply every key twice.
    pub fn handle_key(&mut self, key: KeyEvent) -> FieldAction {
        if key.kind == KeyEventKind::Release
            || key.modifiers.intersects(KeyModifiers::SUPER | KeyModifiers::HYPER | KeyModifiers::META)
        {
            return FieldAction::Ignored;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        // With Shift or Caps Lock, Ctrl-a arrives as Ctrl-'A'; the binding is the same key.
        let code = match key.code {
            KeyCode::Char(c) if ctrl || alt => KeyCode::Char(c.to_ascii_lowercase()),
            code => code,
        };
        match (code, ctrl, alt) {
            (KeyCode::Enter, false, false) => FieldAction::Submit,
            (KeyCode::Esc, false, false) => FieldAction::Cancel,
            (KeyCode::Char(c), false, false) => self.insert(c.encode_utf8(&mut [0; 4])),
            // Windows reports AltGr as Ctrl+Alt, and AltGr is how many layouts type '@', '{' or 'ł';
            // no binding here uses Ctrl+Alt, so those characters are text.
            (KeyCode::Char(c), true, true) if !c.is_ascii_alphabetic() => self.insert(c.encode_utf8(&mut [0; 4])),
            (KeyCode::Home, ..) | (KeyCode::Char('a'), true, false) => self.move_to(0),
            (KeyCode::End, ..) | (KeyCode::Char('e'), true, false) => self.move_to(self.len()),
            (KeyCode::Left, false, false) => self.move_to(self.cursor.saturating_sub(1)),
            (KeyCode::Right, false, false) => self.move_to((self.cursor + 1).min(self.len())),
            (KeyCode::Left, ..) | (KeyCode::Char('b'), false, true) => self.move_to(self.word_start_before()),
            (KeyCode::Right, ..) | (KeyCode::Char('f'), false, true) => self.move_to(self.word_end_after()),
            (KeyCode::Backspace, false, false) => self.delete(self.cursor.saturating_sub(1)..self.cursor),
            (KeyCode::Backspace, ..) | (KeyCode::Char('w'), true, false) => {
                self.delete(self.word_start_before()..self.cursor)
            }
            (KeyCode::Delete, false, false) => self.delete(self.cursor..(self.cursor + 1).min(self.len())),
            (KeyCode::Char('u'), true, false) => self.delete(0..self.cursor),
            (KeyCode::Char('k'), true, false) => self.delete(self.cursor..self.len()),
            _ => FieldAction::Ignored,
        }
    }

    /// Bracketed paste (crossterm `Event::Paste`): inserted at the cursor, newlines become spaces.
    ///
    /// Returns [`FieldAction::Edited`] if anything got in, so the app handles it like a typed key.
    pub fn paste(&mut self, text: &str) -> FieldAction {
        self.insert(text)
    }

    fn len(&self) -> usize {
        self.text.chars().count()
    }

    fn byte_index(&self, char_index: usize) -> usize {
        self.text.char_indices().nth(char_index).map_or(self.text.len(), |(byte, _)| byte)
    }

    /// The one way text gets in, so typing, pasting and `set_text` clean it the same way.
    fn insert(&mut self, text: &str) -> FieldAction {
        let room = self.max_len.saturating_sub(self.len());
        let clean: String = text
            .replace("\r\n", "\n")
            .chars()
            .map(|c| if matches!(c, '\n' | '\r' | '\t') { ' ' } else { c })
            .filter(|&c| !c.is_control() && (self.filter)(c))
            .take(room)
            .collect();
        if clean.is_empty() {
            return FieldAction::Ignored;
        }
        let at = self.byte_index(self.cursor);
        self.text.insert_str(at, &clean);
        self.cursor += clean.chars().count();
        FieldAction::Edited
    }

    /// Deletes a range of chars and leaves the cursor where it was.
    fn delete(&mut self, chars: Range<usize>) -> FieldAction {
        if chars.is_empty() {
            return FieldAction::Ignored;
        }
        let bytes = self.byte_index(chars.start)..self.byte_index(chars.end);
        self.text.replace_range(bytes, "");
        self.cursor = chars.start;
        FieldAction::Edited
    }

    fn move_to(&mut self, cursor: usize) -> FieldAction {
        if cursor == self.cursor {
            return FieldAction::Ignored;
        }
        self.cursor = cursor;
        FieldAction::Moved
    }

    /// Like readline's backward-word: skip the separators left of the cursor, then the word, so
    /// "a cat, |" goes to "a |cat, " in one press instead of stopping on the comma.
    fn word_start_before(&self) -> usize {
        let before: Vec<char> = self.text.chars().take(self.cursor).collect();
        let separators = before.iter().rev().take_while(|&&c| !is_word_char(c)).count();
        let word = before.iter().rev().skip(separators).take_while(|&&c| is_word_char(c)).count();
        self.cursor - separators - word
    }

    /// Like readline's forward-word: to the end of the next word, the mirror of
    /// [`Self::word_start_before`], so the two retrace each other's stops.
    fn word_end_after(&self) -> usize {
        let after = || self.text.chars().skip(self.cursor);
        let separators = after().take_while(|&c| !is_word_char(c)).count();
        let word = after().skip(separators).take_while(|&c| is_word_char(c)).count();
        self.cursor + separators + word
    }
}

/// `_` counts as a word character because embedding and LoRA names in prompts use it
/// (`easynegative_v2`), and a word jump should skip such a name whole.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Measured the way ratatui's buffer measures what it draws, so the cursor lands where the text is.
fn char_width(c: char) -> u16 {
    c.encode_utf8(&mut [0; 4]).cell_width()
}

/// Splits the text into screen rows of at most `width` cells, as char ranges that cover it in order.
///
/// Word wrap: a row breaks before the word that does not fit; a word longer than the row is cut.
/// Whitespace that does not fit starts the next row rather than hanging past the edge, so every
/// char has a cell of its own and every cursor position a distinct place on screen.
fn wrap(chars: &[char], widths: &[u16], width: u16) -> Vec<Range<usize>> {
    let mut rows = Vec::new();
    let mut start = 0;
    let mut used = 0u16;
    // The start of the last word on the current row that follows whitespace: where to break.
    let mut word_start = None;
    for (i, (&c, &w)) in chars.iter().zip(widths).enumerate() {
        while i > start && used + w > width {
            let after_space = chars[i - 1].is_whitespace();
            let end = if c.is_whitespace() || after_space { i } else { word_start.unwrap_or(i) };
            rows.push(start..end);
            start = end;
            used = widths[start..i].iter().sum();
            word_start = None;
        }
        if i > start && !c.is_whitespace() && chars[i - 1].is_whitespace() {
            word_start = Some(i);
        }
        used += w;
    }
    rows.push(start..chars.len());
    rows
}

/// The cursor's (column, row) in the wrapped text. At the end of a full row the cursor goes to the
/// start of the row below (which may be past the text), as a terminal's own cursor would.
fn cursor_cell(rows: &[Range<usize>], widths: &[u16], cursor: usize, width: u16) -> (u16, usize) {
    let row = rows.iter().rposition(|r| r.start <= cursor).unwrap_or(0);
    let x: u16 = widths[rows[row].start..cursor].iter().sum();
    if x >= width {
        (0, row + 1)
    } else {
        (x, row)
    }
}

/// Renders the field inside `area`, wrapped at its width, and when `focused` puts the terminal
/// cursor at the field's cursor (`Frame::set_cursor_position`).
///
/// A plain function rather than a `StatefulWidget`: the scroll is derived from the cursor alone
/// (the cursor's row is the last one shown once it would fall below the area), so there is no
/// view state to keep and a resize can never leave the cursor off screen. Drawing uses the
/// area's existing style, so the caller styles the field with the block around it.
pub fn render(field: &TextField, focused: bool, frame: &mut Frame, area: Rect) {
    if area.is_empty() {
        return;
    }
    let (bytes, chars): (Vec<usize>, Vec<char>) = field.text.char_indices().unzip();
    let widths: Vec<u16> = chars.iter().map(|&c| char_width(c)).collect();
    let rows = wrap(&chars, &widths, area.width);
    let (x, row) = cursor_cell(&rows, &widths, field.cursor, area.width);
    let top = row.saturating_sub(usize::from(area.height) - 1);
    let byte = |i: usize| bytes.get(i).copied().unwrap_or(field.text.len());
    let buffer = frame.buffer_mut();
    for (y, r) in (area.y..area.bottom()).zip(&rows[top.min(rows.len())..]) {
        let line = &field.text[byte(r.start)..byte(r.end)];
        buffer.set_stringn(area.x, y, line, usize::from(area.width), Style::default());
    }
    if focused {
        // `row - top` < area.height by the choice of `top`.
        frame.set_cursor_position((area.x + x, area.y + (row - top) as u16));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::layout::Position;
    use ratatui::Terminal;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn alt(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::ALT)
    }

    fn type_str(field: &mut TextField, text: &str) {
        for c in text.chars() {
            field.handle_key(key(KeyCode::Char(c)));
        }
    }

    /// Cursor positions visited by pressing `k` until nothing moves.
    fn stops(field: &mut TextField, k: KeyEvent) -> Vec<usize> {
        let mut stops = Vec::new();
        while field.handle_key(k) == FieldAction::Moved {
            stops.push(field.cursor());
        }
        stops
    }

    /// Draws the field focused into a `width` x `height` terminal; returns the rows and the cursor.
    fn draw(field: &TextField, width: u16, height: u16) -> (Vec<String>, Position) {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| render(field, true, frame, frame.area())).unwrap();
        let cursor = terminal.get_cursor_position().unwrap();
        let buffer = terminal.backend().buffer();
        let rows = (0..height)
            .map(|y| {
                // Skip the blank cell that a wide char leaves behind it, so rows read as the text.
                let mut row = String::new();
                let mut x = 0;
                while x < width {
                    let symbol = buffer[(x, y)].symbol();
                    row.push_str(symbol);
                    x += symbol.cell_width().max(1);
                }
                row.trim_end().to_string()
            })
            .collect();
        (rows, cursor)
    }

    #[test]
    fn typing_inserts_at_the_cursor() {
        let mut field = TextField::new("");
        assert_eq!(field.handle_key(key(KeyCode::Char('c'))), FieldAction::Edited);
        type_str(&mut field, "at");
        assert_eq!((field.text(), field.cursor()), ("cat", 3));
        assert_eq!(field.handle_key(key(KeyCode::Left)), FieldAction::Moved);
        field.handle_key(key(KeyCode::Left));
        type_str(&mut field, "o");
        assert_eq!((field.text(), field.cursor()), ("coat", 2));
        field.handle_key(KeyEvent::new(KeyCode::Char('A'), KeyModifiers::SHIFT));
        assert_eq!(field.text(), "coAat");
    }

    #[test]
    fn new_and_set_text_put_the_cursor_at_the_end_in_chars() {
        let mut field = TextField::new("café");
        assert_eq!(field.cursor(), 4);
        field.set_text("日本語");
        assert_eq!((field.text(), field.cursor()), ("日本語", 3));
        field.set_text(String::from("a\nb"));
        assert_eq!(field.text(), "a b");
    }

    #[test]
    fn left_right_stop_at_the_ends() {
        let mut field = TextField::new("ab");
        assert_eq!(field.handle_key(key(KeyCode::Right)), FieldAction::Ignored);
        assert_eq!(field.cursor(), 2);
        assert_eq!(stops(&mut field, key(KeyCode::Left)), [1, 0]);
        assert_eq!(field.handle_key(key(KeyCode::Left)), FieldAction::Ignored);
        assert_eq!(stops(&mut field, key(KeyCode::Right)), [1, 2]);
    }

    #[test]
    fn home_end_and_ctrl_a_ctrl_e() {
        let mut field = TextField::new("a cat");
        assert_eq!(field.handle_key(key(KeyCode::Home)), FieldAction::Moved);
        assert_eq!(field.cursor(), 0);
        assert_eq!(field.handle_key(key(KeyCode::End)), FieldAction::Moved);
        assert_eq!(field.cursor(), 5);
        field.handle_key(ctrl('a'));
        assert_eq!(field.cursor(), 0);
        field.handle_key(ctrl('e'));
        assert_eq!(field.cursor(), 5);
        // Shift or Caps Lock turns Ctrl-a into Ctrl-'A'; it is still the same binding.
        field.handle_key(KeyEvent::new(KeyCode::Char('A'), KeyModifiers::CONTROL | KeyModifiers::SHIFT));
        assert_eq!((field.text(), field.cursor()), ("a cat", 0));
    }

    #[test]
    fn word_jumps_skip_punctuation_and_runs_of_spaces() {
        // 0         1         2
        // 0123456789012345678901234
        // "a photo,  of   (cat:1.2)"
        let mut field = TextField::new("a photo,  of   (cat:1.2)");
        let ctrl_left = KeyEvent::new(KeyCode::Left, KeyModifiers::CONTROL);
        assert_eq!(stops(&mut field, ctrl_left), [22, 20, 16, 10, 2, 0]);
        assert_eq!(stops(&mut field, alt(KeyCode::Char('f'))), [1, 7, 12, 19, 21, 23, 24]);
        let ctrl_right = KeyEvent::new(KeyCode::Right, KeyModifiers::CONTROL);
        field.handle_key(key(KeyCode::Home));
        assert_eq!(stops(&mut field, ctrl_right), [1, 7, 12, 19, 21, 23, 24]);
        assert_eq!(stops(&mut field, alt(KeyCode::Char('b'))), [22, 20, 16, 10, 2, 0]);
    }

    #[test]
    fn word_jumps_treat_underscores_and_non_ascii_letters_as_word() {
        let mut field = TextField::new("easynegative_v2 café,日本語");
        let ctrl_left = KeyEvent::new(KeyCode::Left, KeyModifiers::CONTROL);
        assert_eq!(stops(&mut field, ctrl_left), [21, 16, 0]);
    }

    #[test]
    fn ctrl_w_and_alt_backspace_delete_the_word_before_the_cursor() {
        let mut field = TextField::new("masterpiece, best quality,  ");
        assert_eq!(field.handle_key(ctrl('w')), FieldAction::Edited);
        assert_eq!((field.text(), field.cursor()), ("masterpiece, best ", 18));
        field.handle_key(alt(KeyCode::Backspace));
        assert_eq!((field.text(), field.cursor()), ("masterpiece, ", 13));
        // From the middle of a word only its first part goes, the rest stays after the cursor.
        field.set_text("a photo of");
        field.handle_key(key(KeyCode::Home));
        (0..5).for_each(|_| _ = field.handle_key(key(KeyCode::Right)));
        field.handle_key(ctrl('w'));
        assert_eq!((field.text(), field.cursor()), ("a to of", 2));
        field.handle_key(key(KeyCode::Home));
        assert_eq!(field.handle_key(ctrl('w')), FieldAction::Ignored);
        assert_eq!(field.text(), "a to of");
    }

    #[test]
    fn ctrl_u_and_ctrl_k_delete_to_the_start_and_the_end() {
        let mut field = TextField::new("a photo of a cat");
        (0..4).for_each(|_| _ = field.handle_key(KeyEvent::new(KeyCode::Left, KeyModifiers::CONTROL)));
        assert_eq!(field.cursor(), 2);
        field.handle_key(ctrl('k'));
        assert_eq!((field.text(), field.cursor()), ("a ", 2));
        field.set_text("a photo of a cat");
        (0..3).for_each(|_| _ = field.handle_key(key(KeyCode::Left)));
        field.handle_key(ctrl('u'));
        assert_eq!((field.text(), field.cursor()), ("cat", 0));
        assert_eq!(field.handle_key(ctrl('u')), FieldAction::Ignored);
    }

    #[test]
    fn backspace_and_delete_remove_one_char() {
        let mut field = TextField::new("cat");
        assert_eq!(field.handle_key(key(KeyCode::Delete)), FieldAction::Ignored);
        field.handle_key(key(KeyCode::Left));
        field.handle_key(key(KeyCode::Backspace));
        assert_eq!((field.text(), field.cursor()), ("ct", 1));
        field.handle_key(key(KeyCode::Delete));
        assert_eq!((field.text(), field.cursor()), ("c", 1));
        field.handle_key(key(KeyCode::Home));
        assert_eq!(field.handle_key(key(KeyCode::Backspace)), FieldAction::Ignored);
        assert_eq!(field.text(), "c");
    }

    #[test]
    fn multibyte_chars_are_never_split() {
        let prompt = "café 日本語 a,b";
        let chars: Vec<char> = prompt.chars().collect();
        for i in 0..=chars.len() {
            let mut field = TextField::new(prompt);
            field.handle_key(key(KeyCode::Home));
            (0..i).for_each(|_| _ = field.handle_key(key(KeyCode::Right)));
            assert_eq!(field.cursor(), i);
            field.handle_key(key(KeyCode::Char('é')));
            let expected: String = chars[..i].iter().chain(['é'].iter()).chain(&chars[i..]).collect();
            assert_eq!((field.text(), field.cursor()), (expected.as_str(), i + 1));
            field.handle_key(key(KeyCode::Backspace));
            assert_eq!(field.text(), prompt);
            let action = field.handle_key(key(KeyCode::Delete));
            let expected: String = chars[..i].iter().chain(chars.get(i + 1..).unwrap_or_default()).collect();
            assert_eq!(field.text(), expected, "delete at {i}");
            assert_eq!(action == FieldAction::Edited, i < chars.len());
        }
        let mut field = TextField::new(prompt);
        field.handle_key(ctrl('w'));
        field.handle_key(ctrl('w'));
        assert_eq!(field.text(), "café 日本語 ");
        field.handle_key(alt(KeyCode::Backspace));
        assert_eq!(field.text(), "café ");
    }

    #[test]
    fn paste_turns_newlines_into_spaces_at_the_cursor() {
        let mut field = TextField::new("a cat");
        field.handle_key(key(KeyCode::Home));
        field.handle_key(key(KeyCode::Right));
        assert_eq!(field.paste(" big\r\nfluffy\n\tred\u{7}"), FieldAction::Edited);
        assert_eq!((field.text(), field.cursor()), ("a big fluffy  red cat", 17));
        assert_eq!(field.paste(""), FieldAction::Ignored);
    }

    #[test]
    fn digits_filter_and_max_len() {
        let mut field = TextField::digits().with_max_len(6);
        type_str(&mut field, "12a-3");
        assert_eq!(field.handle_key(key(KeyCode::Char('x'))), FieldAction::Ignored);
        assert_eq!((field.text(), field.cursor()), ("123", 3));
        field.paste("4 5\n6789");
        assert_eq!((field.text(), field.cursor()), ("123456", 6));
        assert_eq!(field.handle_key(key(KeyCode::Char('7'))), FieldAction::Ignored);
        field.set_text("seed 42");
        assert_eq!(field.text(), "42");
        let field = TextField::new("step 12345").with_filter(|c| c.is_ascii_digit()).with_max_len(3);
        assert_eq!((field.text(), field.cursor()), ("123", 3));
    }

    #[test]
    fn enter_submits_esc_cancels_and_other_control_keys_are_ignored() {
        let mut field = TextField::new("cat");
        assert_eq!(field.handle_key(key(KeyCode::Enter)), FieldAction::Submit);
        assert_eq!(field.handle_key(key(KeyCode::Esc)), FieldAction::Cancel);
        for k in [ctrl('x'), ctrl('c'), ctrl('z'), ctrl('j'), alt(KeyCode::Char('x')), key(KeyCode::Tab)] {
            assert_eq!(field.handle_key(k), FieldAction::Ignored, "{k:?}");
        }
        assert_eq!(field.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::CONTROL)), FieldAction::Ignored);
        let mut release = key(KeyCode::Char('s'));
        release.kind = KeyEventKind::Release;
        assert_eq!(field.handle_key(release), FieldAction::Ignored);
        assert_eq!((field.text(), field.cursor()), ("cat", 3));
        // AltGr on Windows: Ctrl+Alt+'@' is the '@' the user typed, Ctrl+Alt+'x' is not text.
        let altgr = KeyModifiers::CONTROL | KeyModifiers::ALT;
        assert_eq!(field.handle_key(KeyEvent::new(KeyCode::Char('@'), altgr)), FieldAction::Edited);
        assert_eq!(field.handle_key(KeyEvent::new(KeyCode::Char('x'), altgr)), FieldAction::Ignored);
        assert_eq!(field.text(), "cat@");
    }

    #[test]
    fn wrap_breaks_before_words_and_cuts_words_longer_than_the_row() {
        let wrapped = |text: &str, width| {
            let chars: Vec<char> = text.chars().collect();
            let widths: Vec<u16> = chars.iter().map(|&c| char_width(c)).collect();
            let rows = wrap(&chars, &widths, width);
            rows.into_iter().map(|r| chars[r].iter().collect::<String>()).collect::<Vec<_>>()
        };
        assert_eq!(wrapped("a photo of a cat", 8), ["a photo ", "of a cat"]);
        // The space after a word that fills the row goes to the next row, not past the edge.
        assert_eq!(wrapped("abcd  ef", 4), ["abcd", "  ef"]);
        assert_eq!(wrapped("abcdefghij k", 4), ["abcd", "efgh", "ij k"]);
        // A wide char that would straddle the edge moves to the next row.
        assert_eq!(wrapped("ab日本語", 5), ["ab日", "本語"]);
        // Wider than the whole row: alone on a row, rather than looping forever.
        assert_eq!(wrapped("日本", 1), ["日", "本"]);
        assert_eq!(wrapped("", 4), [""]);
    }

    #[test]
    fn render_wraps_a_long_prompt_at_the_width() {
        let field = TextField::new("a photograph of an astronaut riding a horse, highly detailed, 8k");
        let (rows, cursor) = draw(&field, 20, 5);
        assert_eq!(rows, ["a photograph of an", "astronaut riding a", "horse, highly", "detailed, 8k", ""]);
        assert_eq!(cursor, Position::new(12, 3));
    }

    #[test]
    fn render_puts_the_cursor_after_wide_chars() {
        let mut field = TextField::new("日本語");
        assert_eq!(draw(&field, 20, 2).1, Position::new(6, 0));
        field.handle_key(key(KeyCode::Home));
        field.handle_key(key(KeyCode::Right));
        assert_eq!(draw(&field, 20, 2).1, Position::new(2, 0));
        // "café 日本語 " is 12 cells, so "a,b" (one word, 3 cells) no longer fits in 14 and wraps.
        let mut field = TextField::new("café 日本語 a,b 日本");
        let (rows, cursor) = draw(&field, 14, 2);
        assert_eq!(rows, ["café 日本語", "a,b 日本"]);
        assert_eq!(cursor, Position::new(8, 1));
        field.handle_key(key(KeyCode::Left));
        assert_eq!(draw(&field, 14, 2).1, Position::new(6, 1));
        (0..5).for_each(|_| _ = field.handle_key(key(KeyCode::Left)));
        assert_eq!((field.cursor(), draw(&field, 14, 2).1), (9, Position::new(0, 1)));
        field.handle_key(key(KeyCode::Left));
        assert_eq!(draw(&field, 14, 2).1, Position::new(11, 0));
    }

    #[test]
    fn render_moves_the_cursor_past_a_full_row_to_the_next() {
        let field = TextField::new("abcd");
        let (rows, cursor) = draw(&field, 4, 2);
        assert_eq!(rows, ["abcd", ""]);
        assert_eq!(cursor, Position::new(0, 1));
    }

    #[test]
    fn render_scrolls_to_keep_the_cursor_row_visible() {
        let mut field = TextField::new("one two three four five six");
        let (rows, cursor) = draw(&field, 6, 2);
        // All rows: "one ", "two ", "three ", "four ", "five ", "six".
        assert_eq!(rows, ["five", "six"]);
        assert_eq!(cursor, Position::new(3, 1));
        field.handle_key(key(KeyCode::Home));
        let (rows, cursor) = draw(&field, 6, 2);
        assert_eq!(rows, ["one", "two"]);
        assert_eq!(cursor, Position::new(0, 0));
        (0..3).for_each(|_| _ = field.handle_key(KeyEvent::new(KeyCode::Right, KeyModifiers::CONTROL)));
        let (rows, cursor) = draw(&field, 6, 2);
        assert_eq!(field.cursor(), 13);
        assert_eq!(rows, ["two", "three"]);
        assert_eq!(cursor, Position::new(5, 1));
        // The cursor past a full last row is on a row of its own; that row is the one kept in view.
        let field = TextField::new("abcdefgh");
        let (rows, cursor) = draw(&field, 4, 2);
        assert_eq!(rows, ["efgh", ""]);
        assert_eq!(cursor, Position::new(0, 1));
    }

    #[test]
    fn render_draws_inside_the_area_and_leaves_the_cursor_alone_when_unfocused() {
        let field = TextField::new("a cat");
        let mut terminal = Terminal::new(TestBackend::new(10, 3)).unwrap();
        terminal
            .draw(|frame| {
                frame.set_cursor_position((9, 2));
                render(&field, false, frame, Rect::new(2, 1, 4, 2));
            })
            .unwrap();
        terminal.backend().assert_buffer_lines(["          ", "  a   ", "  cat     "].map(|l| format!("{l:10}")));
        assert_eq!(terminal.get_cursor_position().unwrap(), Position::new(9, 2));
        terminal.draw(|frame| render(&field, true, frame, Rect::new(2, 1, 4, 2))).unwrap();
        assert_eq!(terminal.get_cursor_position().unwrap(), Position::new(5, 2));
    }
}
