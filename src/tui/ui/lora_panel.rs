//! `L`'s panel over the screen: the LoRAs to fuse, one row each, the picked one
//! marked, and its keys on the bottom border.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use crate::tui::loras::LoraPanel;

pub fn area(screen: Rect) -> Rect {
    let [popup] = Layout::horizontal([Constraint::Length(90.min(screen.width))]).flex(Flex::Center).areas(screen);
    let [popup] = Layout::vertical([Constraint::Length(12.min(screen.height))]).flex(Flex::Center).areas(popup);
    popup
}

pub fn draw(frame: &mut Frame, panel: &LoraPanel, area: Rect) {
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title("LoRAs fused into the model")
        .title_bottom(" ↑↓ pick  + - scale  d remove  a add  Enter fuse and restart  Esc leave ");
    frame.render_widget(Paragraph::new(lines(panel)).block(block), area);
}

fn lines(panel: &LoraPanel) -> Vec<Line<'static>> {
    if panel.rows.is_empty() {
        return vec![Line::from("none: a adds one (FILE[:SCALE], kohya or diffusers/PEFT safetensors)")];
    }
    panel
        .rows
        .iter()
        .enumerate()
        .map(|(i, (file, scale))| {
            let name =
                std::path::Path::new(file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let text = format!("{} {name:<24} {scale:>5.2}  {file}", if i == panel.picked { "▶" } else { " " });
            let style = if i == panel.picked { Style::new().add_modifier(Modifier::BOLD) } else { Style::new() };
            Line::styled(text, style)
        })
        .collect()
}
