//! Drawing: a header that says where the run is, the current stage's screen, and a
//! footer with the keys that work here. One file per screen.

mod attention;
mod compare;
mod decode;
mod denoise;
mod encode;
mod fit;
mod help;
mod latent;
mod lora_chart;
mod lora_panel;
mod talk;
mod unet;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::app::{App, DenoiseView, Focus, Level, Screen};
use super::images::Images;
use super::keys::{hints_for, FIELD_KEYS, PICK_TOKEN};
use super::views::StepView;
use crate::model::unet::StepTaps;

/// Draws the whole UI: the lab's screens, or in talk mode the slides.
///
/// Popups and fields drawn over the screens are known before anything is drawn, so that the
/// images under them are left out of the frame rather than painted over them.
pub fn draw(frame: &mut Frame, app: &App, images: &mut Images) {
    images.begin_frame(&overlays(app, frame.area()));
    if app.talk.on {
        talk::draw(frame, app, images);
        if let Some(panel) = &app.lora_panel {
            lora_panel::draw(frame, panel, lora_panel::area(frame.area()));
        }
        if app.show_help {
            help::draw(frame, help::area(frame.area(), app), app);
        }
        return;
    }
    let header_rows = if frame.area().width >= 150 { 1 } else { 2 };
    let [header, body, status, footer] = Layout::vertical([
        Constraint::Length(header_rows),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, app, header);
    match app.screen {
        Screen::EncodePrompt => encode::draw(frame, app, images, body),
        Screen::GetLatent => latent::draw(frame, app, images, body),
        Screen::Denoise => denoise::draw(frame, app, images, body),
        Screen::VaeDecode => decode::draw(frame, app, images, body),
    }
    draw_status(frame, app, status);
    draw_footer(frame, app, footer);
    if let Some(panel) = &app.lora_panel {
        lora_panel::draw(frame, panel, lora_panel::area(frame.area()));
    }
    if app.show_help {
        help::draw(frame, help::area(frame.area(), app), app);
    }
}

/// The areas drawn over the screens this frame: the key map, and talk mode's text field.
pub fn overlays(app: &App, screen: Rect) -> Vec<Rect> {
    let mut areas = Vec::new();
    if app.show_help {
        areas.push(help::area(screen, app));
    }
    if app.lora_panel.is_some() {
        areas.push(lora_panel::area(screen));
    }
    if app.talk.on && app.focus.is_some() {
        areas.push(talk::field_area(screen));
    }
    areas
}

/// Where the run is: the four stages (the current one highlighted, with step i/N),
/// then model, device, dtype and seed; on one line when the terminal is wide enough.
fn draw_header(frame: &mut Frame, app: &App, area: Rect) {
    let mut stages = vec![Span::styled("sdlab ", Style::new().add_modifier(Modifier::BOLD))];
    for (i, screen) in Screen::ALL.iter().enumerate() {
        let mut label = format!("{} {}", i + 1, screen.title());
        if *screen == Screen::Denoise {
            label.push_str(&format!(" {}/{}", app.history.len(), app.total_steps()));
        }
        stages.push(if *screen == app.screen {
            Span::styled(format!("[{label}]"), Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD))
        } else {
            Span::raw(format!(" {label} "))
        });
    }
    let facts = match &app.info {
        Some(info) => {
            format!(
                "{}{} · {} {} · seed {}",
                short_name(&info.name),
                lora_names(info),
                info.device,
                info.dtype,
                app.seed
            )
        }
        None => "loading the model".into(),
    };
    let facts = vec![Span::raw(facts), Span::styled("   ? keys", Style::new().add_modifier(Modifier::DIM))];
    let lines = if area.height >= 2 {
        vec![Line::from(stages), Line::from(facts)]
    } else {
        let mut one = stages;
        one.push(Span::raw("  "));
        one.extend(facts);
        vec![Line::from(one)]
    };
    frame.render_widget(Paragraph::new(lines), area);
}

/// ` + style 0.8` per LoRA fused into the model (file stem and scale).
fn lora_names(info: &crate::tui::views::ModelInfo) -> String {
    let stem = |spec: &str| {
        let (path, scale) = spec.rsplit_once(':').unwrap_or((spec, "1"));
        let name = std::path::Path::new(path).file_stem().map(|s| s.to_string_lossy().into_owned());
        format!(" + {} {scale}", name.unwrap_or_default())
    };
    info.loras.specs.iter().map(|s| stem(s)).collect()
}

/// A repo id as it is, a path by its last two parts (`sd2-tiny/model`): headers are narrow.
fn short_name(name: &str) -> String {
    let parts: Vec<&str> = name.trim_end_matches('/').rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let field = match app.focus {
        Some(Focus::SessionSave) => Some(("save session to: ", &app.session_field)),
        Some(Focus::SessionOpen) => Some(("open session: ", &app.session_field)),
        Some(Focus::InitImage) => Some(("start from picture (empty: none): ", &app.init_image_field)),
        Some(Focus::BranchPrompt) => Some(("branch: its prompt (Enter, Esc cancels): ", &app.branch_prompt)),
        Some(Focus::BranchGuidance) => Some(("branch: its guidance scale (Enter forks): ", &app.branch_guidance)),
        Some(Focus::Loras) => Some(("another LoRA, FILE[:SCALE] (Enter adds it to the list): ", &app.lora_field)),
        _ => None,
    };
    if let Some((label, text)) = field {
        let [label_area, field] =
            Layout::horizontal([Constraint::Length(label.len() as u16), Constraint::Min(0)]).areas(area);
        frame.render_widget(Paragraph::new(Span::styled(label, Style::new().fg(Color::Yellow))), label_area);
        super::text_field::render(text, true, frame, field);
        return;
    }
    let line = if let Some(busy) = &app.busy {
        Line::from(vec![Span::styled("working: ", Style::new().fg(Color::Yellow).bold()), Span::raw(busy.clone())])
    } else if let Some((level, text)) = &app.status {
        let style = match level {
            Level::Info => Style::new().fg(Color::Cyan),
            Level::Error => Style::new().fg(Color::Red).bold(),
        };
        let label = if *level == Level::Error { "error: " } else { "" };
        Line::from(Span::styled(format!("{label}{text}"), style))
    } else {
        Line::default()
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The keys that work here; those that do not fit are left for `?`, which says so.
fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let pairs: Vec<(&str, &str)> = if app.focus.is_some() {
        FIELD_KEYS.to_vec()
    } else {
        let mut hints: Vec<_> = hints_for(app.screen).map(|k| (k.keys, k.action)).collect();
        if app.screen == Screen::Denoise && app.denoise_view == DenoiseView::Attention {
            // the open view's own keys first: those at the end may not fit
            hints.sort_by_key(|(keys, _)| *keys != PICK_TOKEN);
        }
        hints
    };
    let key = |keys: &'static str| Span::styled(keys, Style::new().bold().fg(Color::Black).bg(Color::Gray));
    let action = |text: &str| Span::raw(format!(" {text}  "));
    let more = [key("?"), action("more keys")];
    let room = usize::from(area.width).saturating_sub(Line::from(more.to_vec()).width());
    let mut spans = Vec::new();
    let mut used = 0;
    for (keys, what) in pairs {
        let one = [key(keys), action(what)];
        let width = Line::from(one.to_vec()).width();
        if used + width > room {
            // the first that does not fit is shortened when enough of it shows, then `?`
            let left = room.saturating_sub(used + keys.len() + 3);
            if left >= 12 {
                spans.extend([key(keys), action(&fit::ellipsis(what, left))]);
            }
            spans.extend(more);
            break;
        }
        used += width;
        spans.extend(one);
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A titled block, highlighted when the field inside has the keyboard.
pub(super) fn block(title: impl Into<String>, focused: bool) -> ratatui::widgets::Block<'static> {
    let block = ratatui::widgets::Block::bordered().title(title.into());
    if focused {
        block.border_style(Style::new().fg(Color::Yellow))
    } else {
        block
    }
}

/// Whether `focus` is the app's current one.
pub(super) fn has_focus(app: &App, focus: Focus) -> bool {
    app.focus == Some(focus)
}

/// The step on the denoise screen and its UNet taps, for the views inside the UNet;
/// or, when there are none to show, the lines that say why and what to do.
pub(super) fn shown_taps(app: &App) -> Result<(&StepView, &StepTaps), Vec<Line<'static>>> {
    let Some(step) = app.shown_step() else {
        return Err(vec![Line::from("no step taken yet: n takes one, and the UNet's pass shows here")]);
    };
    let Some(taps) = &step.taps else {
        let how = if app.replay {
            "a replay has no model to step with: open the session without --replay, then g and n"
        } else {
            "g rewinds to an earlier step, and n takes the steps from there again"
        };
        return Err(vec![
            Line::from(Span::styled(
                "not recorded: steps replayed from a saved session carry no UNet taps; step again to see them",
                Style::new().fg(Color::Yellow),
            )),
            Line::from(how),
        ]);
    };
    Ok((step, taps))
}

/// Which step a view inside the UNet shows, for its title.
pub(super) fn step_label(app: &App, step: &StepView) -> String {
    format!("step {} / {} · t = {}", step.index + 1, app.total_steps(), step.timestep)
}

/// A compact number for the panels: 4 significant digits, scientific when tiny or huge.
pub(super) fn num(x: f64) -> String {
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}

/// A one-line bar chart of `values` across `width` columns (stretched or averaged), scaled
/// between their minimum and maximum: the 77 positions of a prompt, or a schedule.
pub(super) fn spark(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    (0..width)
        .map(|i| {
            let from = i * values.len() / width;
            let to = ((i + 1) * values.len() / width).max(from + 1);
            let v = values[from..to].iter().sum::<f64>() / (to - from) as f64;
            BARS[(((v - lo) / span) * 7.0).round().clamp(0.0, 7.0) as usize]
        })
        .collect()
}
