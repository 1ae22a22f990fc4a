//! The denoise screen's `c` view: the run on screen and the run it is compared
//! with (its parent; for the main run, its first branch), their x0 at the same
//! step side by side, and where the two differ (white where equal, red at the
//! largest difference). Left/Right browse the steps.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use super::block;
use crate::tui::app::App;
use crate::tui::images::Images;
use crate::tui::views::CompareSide;

pub fn draw(frame: &mut Frame, app: &App, images: &mut Images, area: Rect) {
    let Some(view) = &app.compare else {
        let text = "b forks the run at the step on screen; c then shows it beside its parent, step by step";
        let lines = vec![Line::from(text)];
        let title = "compare two runs  (c closes)";
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }).block(block(title, false)), area);
        return;
    };
    let title = format!(
        "compare after step {}: {} and {}  (Left/Right steps, [ ] switch, c closes)",
        view.step, view.left.name, view.right.name
    );
    let outer = block(title, false);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let [a, b, d] = Layout::horizontal([Constraint::Ratio(1, 3); 3]).areas(inner);
    let side_title = |s: &CompareSide| {
        let what = if s.decoded { "x0 (decoded)" } else { "x0 (preview)" };
        match &s.x0 {
            Some(_) => format!("{}: step {}/{} · {what}", s.name, view.step, s.calls),
            None => format!("{}: {} of {} steps taken, not step {}", s.name, s.steps_done, s.calls, view.step),
        }
    };
    for (area, title, pane) in
        [(a, side_title(&view.left), &mut images.compare_left), (b, side_title(&view.right), &mut images.compare_right)]
    {
        let b = Block::bordered().title(title);
        let inner = b.inner(area);
        frame.render_widget(b, area);
        pane.render(inner, frame.buffer_mut());
    }
    let title = match view.difference {
        Some(_) => format!("difference: max {:.1}%", 100.0 * view.max_difference),
        None => "difference: a run lacks this step".to_string(),
    };
    let b = Block::bordered().title(title);
    let inner = b.inner(d);
    frame.render_widget(b, d);
    images.compare_difference.render(inner, frame.buffer_mut());
}
