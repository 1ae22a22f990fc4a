//! Screen 2, get_latent: the seed, the noise's shape and statistics, its four
//! channels as grey images and the latent as colour; image to image, the picture,
//! its encoded latent and that latent noised.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::{block, has_focus, num};
use crate::tui::app::{App, Focus};
use crate::tui::images::Images;
use crate::tui::text_field;

pub fn draw(frame: &mut Frame, app: &App, images: &mut Images, area: Rect) {
    let [left, right] = Layout::horizontal([Constraint::Length(40), Constraint::Min(0)]).areas(area);
    let [seed, facts] = Layout::vertical([Constraint::Length(3), Constraint::Min(0)]).areas(left);
    let focused = has_focus(app, Focus::Seed);
    let b = block("seed  (e edit, r random, Enter draw)", focused);
    let inner = b.inner(seed);
    frame.render_widget(b, seed);
    text_field::render(&app.seed_field, focused, frame, inner);

    let Some(view) = &app.latent else {
        let hint = "Enter draws the initial noise from the seed:\ntorch.randn(shape, generator=manual_seed(seed))";
        frame.render_widget(Paragraph::new(hint).block(block("latent", false)), facts);
        return;
    };
    let mut lines = vec![
        Line::from(format!("seed {}", view.seed)),
        Line::from(format!("shape {:?}", view.shape)),
        Line::from(format!("= image / {} (VAE factor)", app.info.as_ref().map_or(0, |i| i.vae_scale_factor))),
        Line::from(""),
        Line::from("ch    mean     std     min     max"),
    ];
    for (c, s) in view.channel_stats.iter().enumerate() {
        lines.push(Line::from(format!(
            "{c:>2} {:>7} {:>7} {:>7} {:>7}",
            num(s.mean),
            num(s.std),
            num(s.min),
            num(s.max)
        )));
    }
    let title = match &view.img2img {
        Some(i) => {
            let facts = [
                format!("picture {}", i.path),
                format!("{}x{}, strength {} (+/-)", i.picture.width(), i.picture.height(), i.strength),
                format!("noised to t={}: {} of {} steps", i.first_timestep, i.calls, i.steps),
                String::new(),
            ];
            lines.splice(0..1, facts.into_iter().map(Line::from));
            "init_latents (picture, noised)"
        }
        None => "init_latents",
    };
    frame.render_widget(Paragraph::new(lines).block(block(title, false)), facts);

    if view.img2img.is_some() {
        // the picture, what the VAE encoder made of it, and that noised to the first timestep
        let cells = Layout::horizontal([Constraint::Ratio(1, 3); 3]).split(right);
        let panes = [
            ("picture (i)", &mut images.picture),
            ("image_latents (encoder)", &mut images.encoded),
            ("init_latents (noised)", &mut images.latent_rgb),
        ];
        for ((title, pane), cell) in panes.into_iter().zip(cells.iter()) {
            let b = Block::bordered().title(title);
            let inner = b.inner(*cell);
            frame.render_widget(b, *cell);
            pane.render(inner, frame.buffer_mut());
        }
        return;
    }
    let [channels, colour] = Layout::vertical([Constraint::Percentage(45), Constraint::Min(0)]).areas(right);
    let cells = Layout::horizontal([Constraint::Ratio(1, 4); 4]).split(channels);
    for (c, cell) in cells.iter().enumerate() {
        let b = Block::bordered().title(format!("channel {c}"));
        let inner = b.inner(*cell);
        frame.render_widget(b, *cell);
        if let Some(slot) = images.channels.get_mut(c) {
            slot.render(inner, frame.buffer_mut());
        }
    }
    let b = Block::bordered().title("latent as colour (linear latent-to-RGB)");
    let inner = b.inner(colour);
    frame.render_widget(b, colour);
    images.latent_rgb.render(inner, frame.buffer_mut());
}
