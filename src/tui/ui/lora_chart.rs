//! Beside the U view: where the LoRAs act, one bar per text-encoder layer and
//! UNet block, `|delta W| / |W|` of the weights they change (the longest bar is
//! the block they move most).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::block;
use crate::tui::views::LoraView;

/// Columns the chart takes beside the U.
const WIDTH: u16 = 30;

/// Splits `area` into the U's part and the chart's, where there are LoRAs.
pub fn split(loras: &LoraView, area: Rect) -> (Rect, Option<Rect>) {
    if loras.blocks.is_empty() || area.width < 3 * WIDTH {
        return (area, None);
    }
    let [u, chart] = Layout::horizontal([Constraint::Min(0), Constraint::Length(WIDTH)]).areas(area);
    (u, Some(chart))
}

pub fn draw(frame: &mut Frame, loras: &LoraView, area: Rect) {
    let b = block("LoRA: |dW| / |W|  (L edits)", false);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    frame.render_widget(Paragraph::new(lines(loras, usize::from(inner.width))), inner);
}

fn lines(loras: &LoraView, width: usize) -> Vec<Line<'static>> {
    let label = loras.blocks.iter().map(|(b, _)| b.len()).max().unwrap_or(0);
    let bar_room = width.saturating_sub(label + 1 + 7);
    let most = loras.blocks.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    loras
        .blocks
        .iter()
        .map(|(name, relative)| {
            let cells = if most > 0.0 { (relative / most * bar_room as f64).round() as usize } else { 0 };
            let colour = if name.starts_with("text") { Color::Yellow } else { Color::Cyan };
            Line::from(vec![
                Span::raw(format!("{name:<label$} ")),
                Span::styled("█".repeat(cells.max(1)), Style::new().fg(colour)),
                Span::raw(format!("{:>w$}", format!(" {:.1}%", relative * 100.0), w = 7 + bar_room - cells.max(1))),
            ])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_scaled_to_the_block_moved_most() {
        let view = LoraView { specs: vec![], blocks: vec![("text 0".into(), 0.02), ("down 1".into(), 0.08)] };
        let text: Vec<String> =
            lines(&view, 24).iter().map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect()).collect();
        // 24 columns: 6 for the name, a space, 10 for bars, 7 for the percentage
        assert_eq!(text, ["text 0 ███          2.0%", "down 1 ██████████   8.0%"]);
    }
}
