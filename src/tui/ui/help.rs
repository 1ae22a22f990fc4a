//! `?`: every key, as the key map lists them.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use crate::tui::app::{App, Screen};
use crate::tui::keys::{FIELD_KEYS, KEYMAP, TALK_KEYMAP};

/// Where the key map opens: centred, 70 columns wide (or as wide as the line on how
/// images are drawn), as tall as its lines allow.
pub fn area(screen: Rect, app: &App) -> Rect {
    let height = (lines().len() as u16 + 2).min(screen.height);
    let width = 70.max(app.terminal_summary.chars().count() as u16 + 4);
    let [popup] = Layout::horizontal([Constraint::Length(width.min(screen.width))]).flex(Flex::Center).areas(screen);
    let [popup] = Layout::vertical([Constraint::Length(height)]).flex(Flex::Center).areas(popup);
    popup
}

/// The keys, with how this terminal draws images on the bottom border (what to read when
/// images look wrong), where it stays visible however tall the list.
pub fn draw(frame: &mut Frame, popup: Rect, app: &App) {
    frame.render_widget(Clear, popup);
    let mut block = Block::bordered().title("keys (any key closes)");
    if !app.terminal_summary.is_empty() {
        block = block.title_bottom(format!(" {} ", app.terminal_summary));
    }
    frame.render_widget(Paragraph::new(lines()).block(block), popup);
}

fn lines() -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let groups = Screen::ALL.iter().map(|s| (Some(*s), s.title())).chain([(None, "everywhere")]);
    for (screen, title) in groups {
        lines.push(Line::from(Span::styled(title, Style::new().bold().underlined())));
        for k in KEYMAP.iter().filter(|k| k.screen == screen) {
            lines.push(Line::from(vec![
                Span::styled(format!("  {:<12}", k.keys), Style::new().bold()),
                Span::raw(k.action),
            ]));
        }
    }
    for (title, keys) in [("in talk mode", TALK_KEYMAP), ("in a text field", FIELD_KEYS)] {
        lines.push(Line::from(Span::styled(title, Style::new().bold().underlined())));
        for (keys, action) in keys {
            lines
                .push(Line::from(vec![Span::styled(format!("  {keys:<16}"), Style::new().bold()), Span::raw(*action)]));
        }
    }
    lines
}
