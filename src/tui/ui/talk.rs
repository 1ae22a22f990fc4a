//! Talk mode's slides: a title band, a line saying what the stage does, the keys and
//! what the lab is doing, then the stage function's code beside its pictures. The
//! bottom row stays empty, since projectors often cut it.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::model::tokenizer::TokenKind;
use crate::tui::app::{App, DenoiseView, Focus, Level, Screen};
use crate::tui::i18n::Labels;
use crate::tui::images::{Images, Pane};
use crate::tui::keys::talk_hints;
use crate::tui::talk::code_panel::{layout, scroll_offset};
use crate::tui::talk::slides::{self, live};
use crate::tui::talk::theme::Palette;
use crate::tui::talk::{DenoiseAt, DenoiseOp};
use crate::tui::text_field;
use crate::tui::views::CompareView;

use super::fit::{fit, keep_fitting};

/// A slide's rows: the title band, what the stage does, the keys, the body, and a last
/// row left empty since projectors often cut it.
fn rows(area: Rect) -> [Rect; 5] {
    let title_rows = if area.height >= 50 { 3 } else { 1 };
    Layout::vertical([
        Constraint::Length(title_rows),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area)
}

/// Where a text field opened on a slide goes: over the top of the body.
pub fn field_area(screen: Rect) -> Rect {
    let body = rows(screen)[3];
    Rect { height: 3.min(body.height), ..body }
}

pub fn draw(frame: &mut Frame, app: &App, images: &mut Images) {
    let area = frame.area();
    let palette = app.talk.theme.palette();
    let labels = app.talk.lang.labels();
    frame.render_widget(Block::new().style(palette.base), area);
    let [title, about, hints, body, _cut_by_projectors] = rows(area);
    draw_title(frame, app, &palette, title);
    let about_text = match app.screen {
        Screen::EncodePrompt => labels.encode_prompt_about,
        Screen::GetLatent => labels.get_latent_about,
        Screen::Denoise => labels.denoise_about,
        Screen::VaeDecode => labels.vae_decode_about,
    };
    frame.render_widget(Paragraph::new(Span::styled(about_text, palette.subtitle)), about);
    draw_hints(frame, app, &palette, hints);

    let code_width = code_panel_width(app.screen, body.width);
    let [code, pictures] = Layout::horizontal([Constraint::Length(code_width), Constraint::Min(0)]).areas(body);
    draw_code(frame, app, &palette, code);
    let b = |title: String, width: u16| {
        let title = fit(&title, usize::from(width.saturating_sub(4)));
        Block::bordered().title(format!(" {title} ")).border_style(palette.border)
    };
    match app.screen {
        Screen::EncodePrompt => draw_encode(frame, app, images, labels, &b, pictures),
        Screen::GetLatent => draw_latent(frame, app, images, labels, &b, pictures),
        Screen::Denoise => draw_denoise(frame, app, images, labels, &b, pictures),
        Screen::VaeDecode => {
            let title = match &app.decoded {
                Some(d) => {
                    format!("{} · {}", labels.image, app.talk.lang.decoded_after(d.steps_done, app.total_steps()))
                }
                None => labels.image.to_string(),
            };
            let shown = app.decoded.is_some();
            draw_pane(frame, &mut images.image, shown, b(title, pictures.width), labels, pictures);
        }
    }
    if let Some(focus) = app.focus {
        draw_field(frame, app, focus, field_area(area));
    }
}

/// `Step 3: denoise` in a band across the screen; on the denoise slide, where the walk is.
fn draw_title(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    frame.render_widget(Block::new().style(palette.title), area);
    let row = Rect { y: area.y + area.height / 2, height: 1.min(area.height), ..area };
    let lang = app.talk.lang;
    let title = lang.slide_title(app.screen.index() + 1, app.screen.title());
    let mut right = String::new();
    if app.screen == Screen::Denoise {
        let labels = lang.labels();
        let total = app.total_steps();
        right = match app.talk.denoise {
            DenoiseAt::Intro => lang.step_of(0, total),
            DenoiseAt::Step { index, op } => {
                let t = app.talk_timestep(index);
                let op = match op {
                    DenoiseOp::Unet => labels.op_unet,
                    DenoiseOp::Guidance => labels.op_guidance,
                    DenoiseOp::Scheduler => labels.op_scheduler,
                };
                let t = t.map(|t| format!(" · t = {t}")).unwrap_or_default();
                format!("{}{t} · {op}", lang.step_of(index + 1, total))
            }
        };
    }
    let [left, rest] =
        Layout::horizontal([Constraint::Length(Span::raw(&title).width() as u16 + 2), Constraint::Min(0)]).areas(row);
    frame.render_widget(Paragraph::new(format!(" {title}")).style(palette.title), left);
    let right = fit(&right, usize::from(rest.width.saturating_sub(2)));
    let right = Paragraph::new(format!("{right} ")).style(palette.title).alignment(ratatui::layout::Alignment::Right);
    frame.render_widget(right, rest);
}

/// The talk keys on the left; on the right what the lab is doing, or what PageDown does next.
/// When the row is narrow the least needed keys give way to the state first (PageDown,
/// PageUp and `?` stay), and a state that still does not fit ends in an ellipsis.
fn draw_hints(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let labels = app.talk.lang.labels();
    let (state_text, state_style) = match (&app.status, &app.busy) {
        (Some((Level::Error, text)), _) => (format!("{}: {text}", labels.error), palette.error),
        (_, Some(busy)) => (format!("{}: {busy}", labels.computing), palette.busy),
        _ => match next_action(app) {
            Some(next) => (next, palette.subtitle),
            None => match &app.status {
                Some((Level::Info, text)) => (text.clone(), palette.base),
                _ => (String::new(), palette.base),
            },
        },
    };
    let pairs: Vec<Vec<Span>> = talk_hints(labels)
        .iter()
        .map(|(key, action)| {
            vec![Span::styled(format!(" {key} "), palette.key), Span::styled(format!(" {action}  "), palette.base)]
        })
        .collect();
    let widths: Vec<usize> = pairs.iter().map(|p| Line::from(p.clone()).width()).collect();
    // one blank column stays at the edge: a line that ends there reads as cut
    let wanted = (Span::raw(&state_text).width() + 1).min(usize::from(area.width) / 2);
    // PageDown, PageUp, ?, then t, c, q (see `talk_hints`)
    let kept = keep_fitting(&widths, &[0, 1, 4, 2, 3, 5], usize::from(area.width).saturating_sub(wanted));
    let spans: Vec<Span> = kept.iter().flat_map(|&i| pairs[i].clone()).collect();
    let keys_width = Line::from(spans.clone()).width() as u16;
    let [keys, state] = Layout::horizontal([Constraint::Length(keys_width), Constraint::Min(0)]).areas(area);
    frame.render_widget(Paragraph::new(Line::from(spans)), keys);
    let room = usize::from(state.width).saturating_sub(1);
    frame.render_widget(Paragraph::new(Span::styled(fit(&state_text, room), state_style)), state);
}

/// What PageDown will compute on this slide, when it computes something.
fn next_action(app: &App) -> Option<String> {
    let lang = app.talk.lang;
    let what = match app.screen {
        Screen::EncodePrompt if app.encode.is_none() => "encode_prompt".to_string(),
        Screen::GetLatent if app.latent.is_none() => "get_latent".to_string(),
        Screen::VaeDecode if app.decoded.is_none() => "vae_decode".to_string(),
        Screen::Denoise => {
            let next = match app.talk.denoise {
                DenoiseAt::Intro => 0,
                DenoiseAt::Step { index, op: DenoiseOp::Scheduler } => index + 1,
                DenoiseAt::Step { .. } => return None,
            };
            if next >= app.talk_steps() || next < app.history.len() {
                return None;
            }
            format!("denoise_step {}", next + 1)
        }
        _ => return None,
    };
    Some(lang.next_runs(&what))
}

/// Wide enough for the function's longest line where the screen allows, leaving the
/// pictures a third of it.
fn code_panel_width(screen: Screen, width: u16) -> u16 {
    let longest = slides::function(screen).map_or(60, |f| f.text.lines().map(str::len).max().unwrap_or(0));
    let wanted = longest as u16 + 8;
    wanted.min(width * 2 / 3).max(width.min(40))
}

fn draw_code(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let live = live(app);
    let labels = app.talk.lang.labels();
    // at the scheduler operation, the active sampler's own step
    let (source, function) = match live.sampler.and_then(slides::sampler_step) {
        Some((source, function, _)) => (source, Some(function)),
        None => (slides::source(app.screen), slides::function(app.screen)),
    };
    let Some(function) = function else {
        let missing = format!("pub fn {} not found in {}", source.function, source.path);
        frame.render_widget(Paragraph::new(missing).block(Block::bordered()), area);
        return;
    };
    let last = function.first_line + function.text.lines().count() - 1;
    let title = format!(" {} · {}:{}-{last} ", labels.code, source.path, function.first_line);
    let block = Block::bordered().title(title).border_style(palette.border);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let highlighted: Vec<usize> = live.highlight.iter().filter_map(|m| function.line_of(m)).collect();
    let values: Vec<(usize, String)> =
        live.values.into_iter().filter_map(|(m, v)| function.line_of(m).map(|line| (line, v))).collect();
    let rows = layout(function, &highlighted, &values, inner.width as usize, palette);
    let offset = scroll_offset(rows.lines.len(), rows.focus, inner.height as usize);
    let shown: Vec<Line> = rows.lines.into_iter().skip(offset).collect();
    frame.render_widget(Paragraph::new(shown), inner);
}

/// A picture in its titled block, or what is missing when there is none yet.
fn draw_pane(frame: &mut Frame, pane: &mut Pane, shown: bool, block: Block, labels: &Labels, area: Rect) {
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if shown {
        pane.render(inner, frame.buffer_mut());
    } else {
        frame.render_widget(Paragraph::new(labels.not_yet), inner);
    }
}

/// `n` equal cells side by side or stacked, whichever lets a square picture grow more
/// (a cell is about twice as high as wide).
fn split(area: Rect, n: u16) -> std::rc::Rc<[Rect]> {
    let side_by_side = (area.width / n).min(area.height * 2);
    let stacked = area.width.min(area.height / n * 2);
    let layout = if side_by_side >= stacked { Layout::horizontal } else { Layout::vertical };
    layout(vec![Constraint::Ratio(1, n.into()); n.into()]).split(area)
}

/// A bordered block titled to fit the given width.
type TitledBlock<'a> = dyn Fn(String, u16) -> Block<'static> + 'a;

fn draw_encode(frame: &mut Frame, app: &App, images: &mut Images, labels: &Labels, b: &TitledBlock, area: Rect) {
    let Some(view) = &app.encode else {
        draw_pane(frame, &mut images.heatmap, false, b(labels.tokens.into(), area.width), labels, area);
        return;
    };
    let words: Vec<&str> =
        view.prompt.tokens.iter().filter(|t| t.kind != TokenKind::Pad).map(|t| t.text.as_str()).collect();
    let text = words.join(" ");
    let used = app.talk.lang.tokens_used(words.len(), view.prompt.ids.len());
    let inner_width = area.width.saturating_sub(2);
    let rows = wrapped_rows(&text, inner_width) + wrapped_rows(&used, inner_width);
    let [tokens, heatmap] =
        Layout::vertical([Constraint::Length((rows + 2).min(area.height / 2)), Constraint::Min(0)]).areas(area);
    let lines = vec![Line::from(text), Line::from(Span::styled(used, Style::new().italic()))];
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(b(labels.tokens.into(), tokens.width)),
        tokens,
    );
    let title = format!("{} · {:?}", labels.embeddings, view.shape);
    draw_pane(frame, &mut images.heatmap, true, b(title, heatmap.width), labels, heatmap);
}

/// Rows `text` takes when word-wrapped to `width` cells (a word wider than a row takes
/// as many rows as it needs).
fn wrapped_rows(text: &str, width: u16) -> u16 {
    let width = width.max(1) as usize;
    let (mut rows, mut used) = (1, 0);
    for word in text.split(' ') {
        let w = Span::raw(word).width();
        if used > 0 && used + 1 + w > width {
            rows += 1;
            used = 0;
        }
        used += if used > 0 { 1 + w } else { w };
        while used > width {
            rows += 1;
            used -= width;
        }
    }
    rows
}

fn draw_latent(frame: &mut Frame, app: &App, images: &mut Images, labels: &Labels, b: &TitledBlock, area: Rect) {
    let shown = app.latent.is_some();
    let cells = split(area, 2);
    let title = match &app.latent {
        Some(view) => format!("{} · seed {} · {:?}", labels.latent_colour, view.seed, view.shape),
        None => labels.latent_colour.into(),
    };
    draw_pane(frame, &mut images.latent_rgb, shown, b(title, cells[0].width), labels, cells[0]);
    let rows = Layout::vertical([Constraint::Ratio(1, 2); 2]).split(cells[1]);
    let grid = rows.iter().flat_map(|row| Layout::horizontal([Constraint::Ratio(1, 2); 2]).split(*row).to_vec());
    for (c, (cell, pane)) in grid.zip(images.channels.iter_mut()).enumerate() {
        draw_pane(frame, pane, shown, b(format!("{} {c}", labels.channel), cell.width), labels, cell);
    }
}

fn draw_denoise(frame: &mut Frame, app: &App, images: &mut Images, labels: &Labels, b: &TitledBlock, area: Rect) {
    if app.denoise_view == DenoiseView::Compare {
        if let Some(view) = &app.compare {
            return draw_branches(frame, app, view, images, labels, b, area);
        }
    }
    let pictures = app.talk_denoise_pictures();
    let cells = split(area, 2);
    let index = app.talk.denoise.step().unwrap_or(0);
    let step = app.history.get(index);
    let t = if pictures.latents_out {
        step.map(|s| s.landing.to_string())
    } else {
        app.talk_timestep(index).map(|t| format!("t = {t}"))
    };
    let label = if pictures.latents_out { labels.latents_out } else { labels.latents_in };
    let title = match t {
        Some(t) => format!("{label} · {t}"),
        None => label.to_string(),
    };
    draw_pane(frame, &mut images.x_t, pictures.latents.is_some(), b(title, cells[0].width), labels, cells[0]);
    let title = match pictures.x0_step {
        Some(i) => format!("{} · {}", labels.predicted_x0, app.talk.lang.step_of(i + 1, app.total_steps())),
        None => labels.predicted_x0.to_string(),
    };
    draw_pane(frame, &mut images.x0, pictures.x0.is_some(), b(title, cells[1].width), labels, cells[1]);
}

/// The branch slide (`c` in the lab, then `t`): two runs' x0 at the same step side by
/// side, the fork named over them.
fn draw_branches(
    frame: &mut Frame,
    app: &App,
    view: &CompareView,
    images: &mut Images,
    labels: &Labels,
    b: &TitledBlock,
    area: Rect,
) {
    let fork = app.branches.as_ref().and_then(|bar| {
        bar.runs.iter().find(|r| r.fork.is_some() && (r.name == view.left.name || r.name == view.right.name))
    });
    let [about, panes] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    if let Some((run, (parent, at))) = fork.and_then(|r| r.fork.as_ref().map(|f| (r, f))) {
        frame.render_widget(Paragraph::new(app.talk.lang.forked(&run.name, parent, *at)), about);
    }
    let cells = split(panes, 2);
    for (i, (side, pane)) in
        [(&view.left, &mut images.compare_left), (&view.right, &mut images.compare_right)].into_iter().enumerate()
    {
        let title =
            format!("{} · {} · {}", side.name, labels.predicted_x0, app.talk.lang.step_of(view.step, side.calls));
        draw_pane(frame, pane, side.x0.is_some(), b(title, cells[i].width), labels, cells[i]);
    }
}

/// A text field opened by a lab key (`e`, `g`, `s`, `w`, ...) works in talk mode too: it
/// opens over the top of the slide.
fn draw_field(frame: &mut Frame, app: &App, focus: Focus, area: Rect) {
    let (title, field) = match focus {
        Focus::Prompt => ("prompt (Enter encode, Esc cancel)", &app.prompt),
        Focus::Negative => ("negative prompt (Enter encode, Esc cancel)", &app.negative),
        Focus::Seed => ("seed (Enter draw, Esc cancel)", &app.seed_field),
        Focus::GoToStep => ("go to step (Enter, Esc cancel)", &app.goto_field),
        Focus::SavePath => ("save as (Enter save, Esc cancel)", &app.save_field),
        Focus::SessionSave => ("save session to (Enter, Esc cancel)", &app.session_field),
        Focus::SessionOpen => ("open session (Enter, Esc cancel)", &app.session_field),
        Focus::InitImage => ("start from picture (Enter, empty: none, Esc cancel)", &app.init_image_field),
        Focus::BranchPrompt => ("branch: its prompt (Enter, Esc cancel)", &app.branch_prompt),
        Focus::BranchGuidance => ("branch: its guidance scale (Enter forks, Esc cancel)", &app.branch_guidance),
        Focus::Loras => ("another LoRA, FILE[:SCALE] (Enter adds it, Esc cancel)", &app.lora_field),
    };
    let block = super::block(title, true);
    let inner = block.inner(area);
    frame.render_widget(Clear, area);
    frame.render_widget(block, area);
    text_field::render(field, true, frame, inner);
}
