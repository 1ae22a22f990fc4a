//! The denoise screen's `a` view: where the UNet looked at each word of the prompt.
//! The prompt's tokens on the left (Up/Down picks one), and on the right that token's
//! cross-attention map, averaged over the UNet's layers, laid over the predicted x0.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListState, Paragraph, Wrap};
use ratatui::Frame;

use super::{block, shown_taps, step_label};
use crate::model::tokenizer::TokenKind;
use crate::model::unet::AttentionMaps;
use crate::tui::app::App;
use crate::tui::images::Images;

pub fn draw(frame: &mut Frame, app: &App, images: &mut Images, area: Rect) {
    let mut why = |lines: Vec<Line<'static>>| {
        let title = "attention to the prompt's tokens  (a closes)";
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }).block(block(title, false)), area);
    };
    let (step, taps) = match shown_taps(app) {
        Ok(shown) => shown,
        Err(lines) => return why(lines),
    };
    let Some(maps) = &taps.attention else {
        return why(vec![Line::from("this UNet has no cross-attention: no layer looks at the prompt")]);
    };
    let (Some(encode), Some((listed, at))) = (&app.encode, app.attention_choice()) else {
        return why(vec![Line::from("the prompt's tokens arrive with encode_prompt (screen 1)")]);
    };
    let tokens = &encode.prompt.tokens;
    let position = listed[at];
    let token = &tokens[position];

    // what the map is, across the top; the tokens and the map below, side by side
    let peak = maps.token(position).map_or(0.0, |m| m.iter().copied().fold(0.0, f32::max));
    let mut lines = vec![Line::from(format!(
        "token {position} \"{}\": {:.1}% of the attention on average, {:.1}% where most",
        token.text,
        100.0 * share(maps, position),
        100.0 * peak
    ))];
    lines.extend(layers(maps));
    lines.push(Line::from(Span::styled(
        "yellow: where this token drew the most attention; clear: the least",
        Style::new().add_modifier(Modifier::DIM),
    )));
    let [about, below] = Layout::vertical([Constraint::Length(lines.len() as u16 + 2), Constraint::Min(0)]).areas(area);
    let title = format!("attention to \"{}\" · {}  (a closes)", token.text, step_label(app, step));
    frame.render_widget(Paragraph::new(lines).block(block(title, false)), about);

    let [list_area, picture] =
        Layout::horizontal([Constraint::Length(34.min(area.width / 2)), Constraint::Min(0)]).areas(below);
    // every listed token with its share of the attention, to compare them at a glance
    let items: Vec<String> = listed
        .iter()
        .map(|&i| {
            let mark = match tokens[i].kind {
                TokenKind::Bos => " BOS",
                TokenKind::Eos => " EOS",
                _ => "",
            };
            format!("{i:>2} {:>5.1}% {}{mark}", 100.0 * share(maps, i), tokens[i].text)
        })
        .collect();
    let padding = tokens.len() - listed.len();
    let mut list_block = Block::bordered().title("tokens ↑↓ · share");
    if padding > 0 {
        list_block = list_block.title_bottom(format!("{padding} padding not listed"));
    }
    let list = List::new(items)
        .block(list_block)
        .highlight_symbol("▶")
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD));
    frame.render_stateful_widget(list, list_area, &mut ListState::default().with_selected(Some(at)));

    let over = if step.decoded { "over the predicted x0 (decoded)" } else { "over the predicted x0 (preview)" };
    let b = Block::bordered().title(over);
    let inner = b.inner(picture);
    frame.render_widget(b, picture);
    images.attention.render(inner, frame.buffer_mut());
}

/// The token's mean attention over the latent's positions. Each position's attention
/// over the 77 tokens sums to 1, so this is the token's share of all of it.
fn share(maps: &AttentionMaps, token: usize) -> f32 {
    maps.token(token).filter(|m| !m.is_empty()).map_or(0.0, |m| m.iter().sum::<f32>() / m.len() as f32)
}

/// Which layers were averaged: how many, and at each resolution, in which blocks.
fn layers(maps: &AttentionMaps) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(format!(
        "the mean of {} cross-attention layers (DAAM), each brought to {} x {}:",
        maps.layers.len(),
        maps.height,
        maps.width
    ))];
    let mut sizes: Vec<(usize, usize)> = Vec::new();
    for (_, size) in &maps.layers {
        if !sizes.contains(size) {
            sizes.push(*size);
        }
    }
    for (h, w) in sizes {
        // counted per top-level block, in the order they run
        let mut blocks: Vec<(&str, usize)> = Vec::new();
        for (name, _) in maps.layers.iter().filter(|(_, size)| *size == (h, w)) {
            let part = top_level_block(name);
            match blocks.iter_mut().find(|(b, _)| *b == part) {
                Some((_, n)) => *n += 1,
                None => blocks.push((part, 1)),
            }
        }
        let blocks: Vec<String> = blocks.iter().map(|(b, n)| format!("{b} x{n}")).collect();
        lines.push(Line::from(format!("  {h} x {w}: {}", blocks.join(", "))));
    }
    lines
}

/// `down_blocks.1` of `down_blocks.1.attentions.0.transformer_blocks.0.attn2`,
/// `mid_block` of `mid_block.attentions.0...`.
fn top_level_block(layer: &str) -> &str {
    let mut dots = layer.match_indices('.').map(|(i, _)| i);
    let end = if layer.starts_with("mid_block") { dots.next() } else { dots.nth(1) };
    &layer[..end.unwrap_or(layer.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps() -> AttentionMaps {
        let layer = |name: &str, size| (format!("{name}.attentions.0.transformer_blocks.0.attn2"), size);
        AttentionMaps {
            tokens: 2,
            height: 2,
            width: 2,
            layers: vec![
                layer("down_blocks.1", (16, 16)),
                layer("down_blocks.1", (16, 16)),
                layer("down_blocks.2", (8, 8)),
                layer("mid_block", (8, 8)),
                layer("up_blocks.1", (16, 16)),
            ],
            data: vec![0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25, 0.0],
        }
    }

    #[test]
    fn layers_are_grouped_by_resolution_and_block() {
        let lines: Vec<String> = layers(&maps()).iter().map(|l| l.to_string()).collect();
        assert_eq!(
            lines,
            [
                "the mean of 5 cross-attention layers (DAAM), each brought to 2 x 2:",
                "  16 x 16: down_blocks.1 x2, up_blocks.1 x1",
                "  8 x 8: down_blocks.2 x1, mid_block x1",
            ]
        );
        assert_eq!(top_level_block("mid_block.attentions.0.transformer_blocks.0.attn2"), "mid_block");
        assert_eq!(top_level_block("up_blocks.10.attentions.2.x"), "up_blocks.10");
        assert_eq!(top_level_block("odd"), "odd");
    }

    #[test]
    fn a_tokens_share_is_its_mean_attention() {
        let maps = maps();
        assert_eq!(share(&maps, 0), 0.625);
        assert_eq!(share(&maps, 1), 0.375);
        assert_eq!(share(&maps, 2), 0.0);
    }
}
