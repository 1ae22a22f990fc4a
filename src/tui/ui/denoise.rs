//! Screen 3, denoise: the current step's scheduler values (signal vs noise), x_t and
//! the predicted x0 side by side, alpha_prod_t over the whole schedule, and the
//! steps taken so far; or, in their place, a view inside the step's UNet pass
//! (`u`: [`unet`], `a`: [`attention`]).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::{attention, block, compare, has_focus, num, spark, unet};
use crate::tui::app::{App, DenoiseView, Focus};
use crate::tui::images::Images;
use crate::tui::text_field;
use crate::tui::views::{BranchBar, Landing};

pub fn draw(frame: &mut Frame, app: &App, images: &mut Images, area: Rect) {
    let runs = app.branches.as_ref().filter(|b| b.runs.len() > 1);
    let [bar, area] = Layout::vertical([Constraint::Length(u16::from(runs.is_some())), Constraint::Min(0)]).areas(area);
    if let Some(runs) = runs {
        draw_branch_bar(frame, runs, bar);
    }
    let [main, strip] = Layout::vertical([Constraint::Min(0), Constraint::Length(3)]).areas(area);
    match app.denoise_view {
        DenoiseView::Pictures => {
            let [top, chart] = Layout::vertical([Constraint::Min(0), Constraint::Length(4)]).areas(main);
            let [values, pictures] = Layout::horizontal([Constraint::Length(36), Constraint::Min(0)]).areas(top);
            draw_values(frame, app, values);
            draw_pictures(frame, app, images, pictures);
            draw_schedule(frame, app, chart);
        }
        // the views inside the UNet take the pictures' and the chart's room; the step
        // they show is in their titles and in the history strip
        DenoiseView::UNet => {
            let view = draw_goto(frame, app, main);
            unet::draw(frame, app, view);
        }
        DenoiseView::Attention => {
            let view = draw_goto(frame, app, main);
            attention::draw(frame, app, images, view);
        }
        DenoiseView::Compare => compare::draw(frame, app, images, main),
    }
    draw_history(frame, app, strip);
}

/// The session's runs on one line, the one on screen marked: `[` / `]` switch.
fn draw_branch_bar(frame: &mut Frame, bar: &BranchBar, area: Rect) {
    let mut spans = vec![Span::raw("runs ([ ] switch): ")];
    for (i, run) in bar.runs.iter().enumerate() {
        let fork = run.fork.as_ref().map(|(parent, at)| format!(" <{parent}@{at}")).unwrap_or_default();
        let text = format!("{}{fork} cfg {} {} steps", run.name, run.guidance_scale, run.steps_done);
        let style =
            if i == bar.active { Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD) } else { Style::new() };
        spans.push(Span::styled(if i == bar.active { format!("[{text}]") } else { text }, style));
        spans.push(Span::raw("  "));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// `g`'s field at the bottom of `area` while it has the keyboard; the rest of `area`.
fn draw_goto(frame: &mut Frame, app: &App, area: Rect) -> Rect {
    let going_to = has_focus(app, Focus::GoToStep);
    let [rest, goto] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(if going_to { 3 } else { 0 })]).areas(area);
    if going_to {
        let b = block(format!("go to step (0-{}), Enter", app.total_steps()), true);
        let inner = b.inner(goto);
        frame.render_widget(b, goto);
        text_field::render(&app.goto_field, true, frame, inner);
    }
    rest
}

fn draw_values(frame: &mut Frame, app: &App, area: Rect) {
    let total = app.total_steps();
    let facts = draw_goto(frame, app, area);
    let Some(step) = app.shown_step() else {
        let text = vec![
            Line::from(format!("0 / {total} steps taken")),
            Line::from(format!("guidance scale {}  (+/-)", app.guidance_scale)),
            Line::from(""),
            Line::from("n takes one step, Space runs."),
            Line::from("Earlier stages run first if needed."),
        ];
        frame.render_widget(Paragraph::new(text).block(block("denoise", false)), facts);
        return;
    };
    let title = format!("step {} / {total} · t = {}", step.index + 1, step.timestep);
    let state = if app.running || app.target.is_some() {
        Span::styled("running ▸", Style::new().fg(Color::Green).bold())
    } else {
        Span::styled("paused ‖", Style::new().fg(Color::Yellow))
    };
    let info = app.info.as_ref();
    let mut lines = vec![
        Line::from(format!("alpha_prod_t        {}", num(step.alpha_prod_t))),
        Line::from(format!("alpha_prod_t_prev   {}", num(step.alpha_prod_t_prev))),
        Line::from(format!("√alpha      (signal) {}", num(step.alpha_prod_t.sqrt()))),
        Line::from(format!("√(1-alpha)  (noise)  {}", num((1.0 - step.alpha_prod_t).sqrt()))),
        match step.landing {
            Landing::Timestep(prev) => Line::from(format!("t -> prev t         {} -> {prev}", step.timestep)),
            Landing::Sigma { sigma, next } => {
                Line::from(format!("sigma -> next       {} -> {}", num(sigma), num(next)))
            }
        },
        Line::from(format!("guidance scale      {}  (+/-)", step.guidance_scale)),
    ];
    if app.guidance_scale != step.guidance_scale {
        lines.push(Line::from(format!("  next steps use    {}", app.guidance_scale)));
    }
    if let Some(info) = info {
        lines.push(Line::from(format!("{} · {} · {}", info.sampler, info.prediction_type, info.timestep_spacing)));
    }
    lines.push(Line::from(vec![state, Span::raw(format!("  {:.2} s/step", step.elapsed.as_secs_f64()))]));
    if app.selected.is_some() {
        lines.push(Line::from(Span::styled("browsing history (Right to return)", Style::new().fg(Color::Cyan))));
    }
    frame.render_widget(Paragraph::new(lines).block(block(title, false)), facts);
}

fn draw_pictures(frame: &mut Frame, app: &App, images: &mut Images, area: Rect) {
    let step = app.shown_step();
    let vae = app.decoded_x0.as_ref().filter(|d| d.from_x0_of_step == step.map(|s| s.index));
    let n = if vae.is_some() { 3 } else { 2 };
    let cells = Layout::horizontal(vec![Constraint::Ratio(1, n); n as usize]).split(area);
    let titles = if step.is_some_and(|s| s.decoded) {
        ["x_t (VAE decode)", "predicted x0 (VAE decode)", "x0 decoded by the VAE"]
    } else {
        ["x_t (latent preview)", "predicted x0 (preview)", "x0 decoded by the VAE"]
    };
    for (i, cell) in cells.iter().enumerate() {
        let b = Block::bordered().title(titles[i]);
        let inner = b.inner(*cell);
        frame.render_widget(b, *cell);
        if step.is_none() {
            continue;
        }
        match i {
            0 => images.x_t.render(inner, frame.buffer_mut()),
            1 => images.x0.render(inner, frame.buffer_mut()),
            _ => images.x0_vae.render(inner, frame.buffer_mut()),
        }
    }
}

/// alpha_prod_t at every scheduled step, the shown one marked: signal grows as t falls.
fn draw_schedule(frame: &mut Frame, app: &App, area: Rect) {
    // a branch on screen: where it left its parent, marked on the bars
    let fork = app.branches.as_ref().and_then(|b| b.runs.get(b.active)).and_then(|r| r.fork.clone());
    let title = match &fork {
        Some((parent, at)) => format!("alpha_prod_t over the schedule · ┃ forked from {parent} after step {at}"),
        None => "alpha_prod_t over the schedule".to_string(),
    };
    let b = Block::bordered().title(title);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let Some(info) = &app.info else { return };
    let width = inner.width.saturating_sub(4) as usize;
    let bars = spark(&info.alpha_prod_t, width);
    let mut marker = String::new();
    if let Some(step) = app.shown_step() {
        // the middle of the columns that show this step
        let n = info.alpha_prod_t.len().max(1);
        let col = ((2 * step.index + 1) * width / (2 * n)).min(width.saturating_sub(1));
        marker = format!("{}▲ step {}", " ".repeat(col), step.index + 1);
    }
    let n = info.alpha_prod_t.len().max(1);
    let mut chart = vec![Span::raw("1 ┤ ")];
    match fork.map(|(_, at)| (at * width / n).min(width.saturating_sub(1))) {
        Some(col) if width > 0 => {
            let (before, after): (String, String) =
                (bars.chars().take(col).collect(), bars.chars().skip(col + 1).collect());
            chart.push(Span::styled(before, Style::new().fg(Color::Cyan)));
            chart.push(Span::styled("┃", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)));
            chart.push(Span::styled(after, Style::new().fg(Color::Cyan)));
        }
        _ => chart.push(Span::styled(bars, Style::new().fg(Color::Cyan))),
    }
    let lines = vec![Line::from(chart), Line::from(format!("0 ┤ {marker}"))];
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The steps taken, the shown one highlighted; Left / Right move through them.
fn draw_history(frame: &mut Frame, app: &App, area: Rect) {
    let b = Block::bordered().title("history  ◀ ▶");
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let shown = app.shown_step().map(|s| s.index);
    let mut spans = Vec::new();
    for step in &app.history {
        let label = format!("{}:t{}", step.index + 1, step.timestep);
        let style = if Some(step.index) == shown {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new().dim()
        };
        spans.push(Span::styled(label, style));
        spans.push(Span::raw(" "));
    }
    if spans.is_empty() {
        spans.push(Span::raw("no steps yet"));
    }
    // keep the shown step visible on narrow terminals: drop leading entries
    let budget = inner.width as usize;
    let mut total: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let shown_pos = spans.iter().position(|s| s.style.add_modifier.contains(Modifier::REVERSED)).unwrap_or(0);
    let mut first = 0;
    while total > budget && first + 2 <= shown_pos {
        total -= spans[first].content.chars().count() + spans[first + 1].content.chars().count();
        first += 2;
    }
    frame.render_widget(Paragraph::new(Line::from(spans.split_off(first))), inner);
}
