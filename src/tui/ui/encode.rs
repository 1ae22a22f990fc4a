//! Screen 1, encode_prompt: the prompts, their 77 tokens, and the embeddings.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{block, has_focus, num, spark};
use crate::model::tokenizer::{TokenKind, TokenizedPrompt};
use crate::preview::TokenStats;
use crate::tui::app::{App, Focus};
use crate::tui::images::Images;
use crate::tui::text_field;

pub fn draw(frame: &mut Frame, app: &App, images: &mut Images, area: Rect) {
    let prompt_rows = if area.height >= 20 { 4 } else { 3 };
    let [prompt, negative, rest] =
        Layout::vertical([Constraint::Length(prompt_rows), Constraint::Length(3), Constraint::Min(0)]).areas(area);
    draw_field(frame, app, Focus::Prompt, "prompt  (e edit, Enter encode)", prompt);
    draw_field(frame, app, Focus::Negative, "negative prompt  (E edit)", negative);

    let [tokens, embeds] = Layout::horizontal([Constraint::Length(44), Constraint::Min(0)]).areas(rest);
    let Some(view) = &app.encode else {
        let hint = Paragraph::new("Enter encodes the prompt (e edits it first).").block(block("tokens", false));
        frame.render_widget(hint, rest);
        return;
    };
    draw_tokens(frame, &view.prompt, &view.negative, tokens);

    let b = block(format!("prompt_embeds {:?} {}", view.shape, view.dtype), false);
    let inner = b.inner(embeds);
    frame.render_widget(b, embeds);
    let width = inner.width.saturating_sub(17) as usize;
    let norms = |stats: &[TokenStats]| per_token(stats, |t| t.l2_norm);
    let s = &view.prompt_stats;
    let n = &view.negative_stats;
    let lines = vec![
        Line::from(format!("prompt   mean {} std {} min {} max {}", num(s.mean), num(s.std), num(s.min), num(s.max))),
        Line::from(format!("negative mean {} std {} min {} max {}", num(n.mean), num(n.std), num(n.min), num(n.max))),
        spark_line("L2/token prompt  ", &norms(&view.prompt_tokens), width, Color::Green),
        spark_line("L2/token negative", &norms(&view.negative_tokens), width, Color::Magenta),
        spark_line("mean/token prompt", &per_token(&view.prompt_tokens, |t| t.mean), width, Color::Yellow),
        spark_line("std/token prompt ", &per_token(&view.prompt_tokens, |t| t.std), width, Color::Blue),
        spark_line("cos(prompt, neg) ", &view.cosine, width, Color::Cyan),
        Line::from(Span::styled("heatmap: negative (top) and prompt (bottom), 77 x D", Style::new().dim())),
    ];
    let text_rows = (lines.len() as u16).min(inner.height);
    let [text, heatmap] = Layout::vertical([Constraint::Length(text_rows), Constraint::Min(0)]).areas(inner);
    frame.render_widget(Paragraph::new(lines), text);
    images.heatmap.render(heatmap, frame.buffer_mut());
}

fn per_token(stats: &[TokenStats], value: fn(&TokenStats) -> f64) -> Vec<f64> {
    stats.iter().map(value).collect()
}

/// `label`, then a sparkline with one value per token position.
fn spark_line(label: &'static str, values: &[f64], width: usize, color: Color) -> Line<'static> {
    Line::from(vec![Span::raw(label), Span::styled(spark(values, width), Style::new().fg(color))])
}

fn draw_field(frame: &mut Frame, app: &App, focus: Focus, title: &str, area: Rect) {
    let focused = has_focus(app, focus);
    let b = block(title, focused);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let field = if focus == Focus::Prompt { &app.prompt } else { &app.negative };
    text_field::render(field, focused, frame, inner);
}

/// Position, id and token text, with BOS / EOS / the padding run / cut-off tokens marked.
fn draw_tokens(frame: &mut Frame, prompt: &TokenizedPrompt, negative: &TokenizedPrompt, area: Rect) {
    let words = prompt.tokens.iter().filter(|t| t.kind != TokenKind::Pad).count();
    let negative_words = negative.tokens.iter().filter(|t| t.kind != TokenKind::Pad).count();
    let title = format!("tokens {words} / {} (negative {negative_words})", prompt.ids.len());
    let mut lines = vec![Line::from(Span::styled("  #     id  token", Style::new().dim()))];
    let mut pads = prompt.tokens.iter().enumerate().filter(|(_, t)| t.kind == TokenKind::Pad);
    for (pos, token) in prompt.tokens.iter().enumerate().filter(|(_, t)| t.kind != TokenKind::Pad) {
        let mark = match token.kind {
            TokenKind::Bos => "BOS",
            TokenKind::Eos => "EOS",
            _ => "",
        };
        lines.push(Line::from(format!("{pos:>3} {:>6}  {:<20} {mark}", token.id, token.text)));
    }
    if let Some((first, pad)) = pads.next() {
        let count = 1 + pads.count();
        lines.push(Line::from(format!("{first:>3}… {:>5}  {:<20} PAD x {count}", pad.id, pad.text)));
    }
    for text in &prompt.truncated {
        lines.push(Line::from(Span::styled(format!("  -      -  {text:<20} CUT"), Style::new().fg(Color::Red))));
    }
    if !prompt.truncated.is_empty() {
        lines.push(Line::from(Span::styled(
            format!("{} tokens past the 77 limit were cut", prompt.truncated.len()),
            Style::new().fg(Color::Red).bold(),
        )));
    }
    frame.render_widget(Paragraph::new(lines).block(block(title, false)), area);
}
