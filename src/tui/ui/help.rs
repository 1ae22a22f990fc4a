//! `?`: every key, as the key map lists them.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use crate::tui::app::Screen;
use crate::tui::keys::{FIELD_KEYS, KEYMAP, TALK_KEYMAP};

pub fn draw(frame: &mut Frame, area: Rect) {
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
    let height = (lines.len() as u16 + 2).min(area.height);
    let [popup] = Layout::horizontal([Constraint::Length(70.min(area.width))]).flex(Flex::Center).areas(area);
    let [popup] = Layout::vertical([Constraint::Length(height)]).flex(Flex::Center).areas(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title("keys (any key closes)")), popup);
}
