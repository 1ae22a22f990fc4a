//! Lays a stage function out in the code panel: file line numbers in a gutter, syntax
//! colours, the current operation's lines marked `>` and highlighted, long lines wrapped
//! (indented under themselves, never cut, so the panel always holds the whole source),
//! and each value after the line it belongs to, behind `<-`: on the same row when it
//! fits, else on the rows below.

use ratatui::buffer::CellWidth;
use ratatui::style::Style;
use ratatui::text::{Line, Span};

use super::source::{highlight, Function};
use super::theme::Palette;

/// What marks a live value; code never contains it, so a reader (and a test) tells
/// values from code without looking at colours.
pub const VALUE_MARK: &str = "<-";

/// The panel's rows, and which of them the view should keep in sight.
pub struct CodeRows {
    pub lines: Vec<Line<'static>>,
    /// The first row of the first highlighted line.
    pub focus: Option<usize>,
}

type Cell = (char, Style);

/// The rows of `function` for a panel `width` cells wide. `highlighted` are line indexes
/// within the function, `values` pairs of a line index and what to show beside it.
pub fn layout(
    function: &Function,
    highlighted: &[usize],
    values: &[(usize, String)],
    width: usize,
    palette: &Palette,
) -> CodeRows {
    let last_number = function.first_line + function.text.lines().count();
    let digits = last_number.to_string().len().max(3);
    let gutter = digits + 2;
    let code_width = width.saturating_sub(gutter).max(1);
    let mut rows = CodeRows { lines: Vec::new(), focus: None };
    for (i, pieces) in highlight(function.text).into_iter().enumerate() {
        let marked = highlighted.contains(&i);
        let over = |style: Style| if marked { style.patch(palette.highlight) } else { style };
        let cells: Vec<Cell> = pieces
            .iter()
            .flat_map(|&(class, text)| text.chars().map(move |c| (c, over(palette.code(class)))))
            .collect();
        let indent = cells.iter().take_while(|(c, _)| *c == ' ').count();
        let continued = (indent + 4).min(code_width / 2);
        let mut line_rows = wrap(&cells, code_width, continued);
        let notes: Vec<&str> = values.iter().filter(|(line, _)| *line == i).map(|(_, v)| v.as_str()).collect();
        if !notes.is_empty() {
            let style = if marked { palette.value_highlighted() } else { palette.value };
            let note: Vec<Cell> = format!("{VALUE_MARK} {}", notes.join("; ")).chars().map(|c| (c, style)).collect();
            let last = line_rows.last_mut().expect("wrap gives a row at least");
            if cells_width(last) + 2 + cells_width(&note) <= code_width {
                last.extend([(' ', Style::new()); 2]);
                last.extend(note);
            } else {
                let mut indented = vec![(' ', Style::new()); continued];
                indented.extend(note);
                line_rows.extend(wrap(&indented, code_width, continued));
            }
        }
        if marked && rows.focus.is_none() {
            rows.focus = Some(rows.lines.len());
        }
        for (n, mut row) in line_rows.into_iter().enumerate() {
            let number = if n == 0 { (function.first_line + i).to_string() } else { String::new() };
            let (mark, style) = match (marked, n) {
                (true, 0) => ('>', palette.highlight_gutter),
                (true, _) => (' ', palette.highlight_gutter),
                _ => (' ', palette.gutter),
            };
            if marked {
                // one unbroken band: indents, gaps and the rest of the row take the highlight too
                for cell in row.iter_mut().filter(|(_, style)| *style == Style::new()) {
                    cell.1 = palette.highlight;
                }
                let pad = code_width.saturating_sub(cells_width(&row));
                row.extend(std::iter::repeat_n((' ', palette.highlight), pad));
            }
            let mut spans = vec![Span::styled(format!("{mark}{number:>digits$} "), style)];
            spans.extend(spans_of(&row));
            rows.lines.push(Line::from(spans));
        }
    }
    rows
}

/// The first row to show so that `focus` sits in the upper third of a view `height` rows
/// high (or the top, when everything fits or nothing is highlighted).
pub fn scroll_offset(total: usize, focus: Option<usize>, height: usize) -> usize {
    if total <= height {
        return 0;
    }
    focus.map_or(0, |f| f.saturating_sub(height / 3).min(total - height))
}

/// Measured as ratatui's buffer measures what it draws.
fn char_width(c: char) -> usize {
    usize::from(c.encode_utf8(&mut [0; 4]).cell_width())
}

fn cells_width(cells: &[Cell]) -> usize {
    cells.iter().map(|(c, _)| char_width(*c)).sum()
}

/// Breaks `cells` into rows at most `width` wide, after a space where there is one, and
/// starts each further row with `indent` spaces. A row with no text yet is never broken,
/// so a character wider than the row cannot loop.
fn wrap(cells: &[Cell], width: usize, indent: usize) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    let mut row: Vec<Cell> = Vec::new();
    let mut row_width = 0;
    let mut break_at = None;
    for &(c, style) in cells {
        let w = char_width(c);
        let has_text = row.iter().any(|(c, _)| *c != ' ');
        if row_width + w > width && has_text {
            let carry = match break_at {
                Some(at) if at < row.len() => row.split_off(at),
                _ => Vec::new(),
            };
            rows.push(std::mem::take(&mut row));
            row = vec![(' ', Style::new()); indent];
            row.extend(carry);
            row_width = cells_width(&row);
            break_at = None;
        }
        row.push((c, style));
        row_width += w;
        if c == ' ' && row.iter().any(|(c, _)| *c != ' ') {
            break_at = Some(row.len());
        }
    }
    rows.push(row);
    rows
}

/// Runs of equally styled cells as spans.
fn spans_of(cells: &[Cell]) -> Vec<Span<'static>> {
    let mut spans: Vec<Span<'static>> = Vec::new();
    for &(c, style) in cells {
        match spans.last_mut() {
            Some(span) if span.style == style => span.content.to_mut().push(c),
            _ => spans.push(Span::styled(c.to_string(), style)),
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::talk::Theme;

    const SOURCE: &str =
        "pub fn f(x: usize) -> usize {\n    let long_name = some_function(first_argument, second_argument);\n    x\n}";

    fn text(line: &Line) -> String {
        line.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    fn lay(width: usize, highlighted: &[usize], values: &[(usize, String)]) -> (Vec<String>, Option<usize>) {
        let function = Function { first_line: 10, text: SOURCE };
        let rows = layout(&function, highlighted, values, width, &Theme::Dark.palette());
        (rows.lines.iter().map(text).collect(), rows.focus)
    }

    #[test]
    fn lines_get_their_file_numbers_and_the_highlight_its_mark() {
        let (rows, focus) = lay(100, &[2], &[]);
        assert_eq!(rows.len(), 4);
        assert!(rows[0].starts_with("  10 pub fn f(x: usize)"), "{rows:?}");
        assert!(rows[2].starts_with("> 12     x"), "{rows:?}");
        assert_eq!(focus, Some(2));
    }

    #[test]
    fn a_highlighted_line_is_one_band_across_its_rows_and_gaps() {
        for theme in [Theme::Light, Theme::Dark, Theme::HighContrast] {
            let palette = theme.palette();
            let function = Function { first_line: 10, text: SOURCE };
            let rows = layout(&function, &[1], &[(1, "a value that goes on the row below".into())], 50, &palette);
            // line 11 wraps and its value takes a row of its own: three rows, all one band
            let band: Vec<&Line> = rows.lines[1..].iter().take_while(|l| !text(l).starts_with("  12")).collect();
            assert!(band.len() >= 3, "{:?}", rows.lines.iter().map(text).collect::<Vec<_>>());
            for line in band {
                let width: usize = line.spans.iter().map(|s| s.width()).sum();
                assert_eq!(width, 50, "{:?}", text(line));
                for span in &line.spans[1..] {
                    assert_eq!(
                        span.style.bg,
                        palette.highlight.bg,
                        "{theme:?}: {:?} in {:?}",
                        span.content,
                        text(line)
                    );
                    if span.content.starts_with(VALUE_MARK) {
                        assert_eq!(span.style.fg, palette.value.fg, "the value keeps its colour");
                    }
                }
            }
        }
    }

    #[test]
    fn long_lines_wrap_after_a_space_under_their_indent_and_lose_nothing() {
        let (rows, _) = lay(50, &[], &[]);
        assert!(rows.len() > 4, "{rows:?}");
        assert!(rows.iter().all(|r| r.chars().count() <= 50), "{rows:?}");
        assert!(rows[1].starts_with("  11     let long_name = "), "{rows:?}");
        // the continuation is indented under the line (gutter 5, indent 4 + 4)
        assert!(rows[2].starts_with(&" ".repeat(5 + 8)), "{rows:?}");
        let joined: String = rows.iter().map(|r| &r[5..]).collect::<String>().split_whitespace().collect();
        let source: String = SOURCE.split_whitespace().collect();
        assert_eq!(joined, source);
    }

    #[test]
    fn values_follow_their_line_or_take_the_rows_below() {
        let (rows, _) = lay(90, &[], &[(2, "x = 3".into()), (1, "a long value to show".into())]);
        assert!(rows[3].contains("    x  <- x = 3"), "{rows:?}");
        assert!(!rows[1].contains(VALUE_MARK));
        assert_eq!(rows[2].trim(), "<- a long value to show", "{rows:?}");
        // two values of one line share its row
        let (rows, _) = lay(100, &[], &[(2, "a".into()), (2, "b".into())]);
        assert!(rows[2].contains("<- a; b"), "{rows:?}");
    }

    #[test]
    fn narrow_panels_and_wide_characters_do_not_break_the_layout() {
        for width in [0, 1, 3, 7, 12] {
            let (rows, _) = lay(width, &[1], &[(1, "値は日本語".into())]);
            assert!(rows.len() >= 4);
        }
        let cells: Vec<Cell> = "日本語のテキスト".chars().map(|c| (c, Style::new())).collect();
        let wrapped = wrap(&cells, 5, 0);
        assert!(wrapped.iter().all(|r| cells_width(r) <= 5), "{wrapped:?}");
        assert_eq!(wrapped.concat().iter().map(|(c, _)| c).collect::<String>(), "日本語のテキスト");
    }

    #[test]
    fn the_view_scrolls_to_keep_the_highlight_in_its_upper_third() {
        assert_eq!(scroll_offset(20, Some(15), 30), 0);
        assert_eq!(scroll_offset(40, Some(30), 30), 10);
        assert_eq!(scroll_offset(40, Some(20), 30), 10);
        assert_eq!(scroll_offset(40, Some(12), 30), 2);
        assert_eq!(scroll_offset(40, None, 30), 0);
    }
}
