//! Screen 4, vae_decode: latents / scaling_factor through the VAE decoder, the image
//! as large as the terminal allows, and saving it.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::{block, has_focus};
use crate::tui::app::{App, Focus};
use crate::tui::images::Images;
use crate::tui::text_field;

pub fn draw(frame: &mut Frame, app: &App, images: &mut Images, area: Rect) {
    let [left, right] = Layout::horizontal([Constraint::Length(34), Constraint::Min(0)]).areas(area);
    let saving = has_focus(app, Focus::SavePath);
    let [facts, save] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(if saving { 4 } else { 0 })]).areas(left);
    let total = app.total_steps();
    let mut lines = vec![Line::from("image = vae.decode(latents / scaling_factor)"), Line::from("")];
    match &app.decoded {
        Some(view) => {
            lines.push(Line::from(format!("decoded after step {}/{total}", view.steps_done)));
            if view.steps_done < total {
                lines.push(Line::from("(not fully denoised yet)"));
            }
            lines.push(Line::from(format!("{} x {} pixels", view.image.width(), view.image.height())));
            lines.push(Line::from(format!("took {:.2} s", view.elapsed.as_secs_f64())));
            lines.push(Line::from(""));
            lines.push(Line::from("s saves it as PNG"));
        }
        None => {
            lines.push(Line::from(format!("{} of {total} steps taken", app.history.len())));
            lines.push(Line::from("d decodes the current latent"));
        }
    }
    frame.render_widget(Paragraph::new(lines).block(block("vae_decode", false)), facts);
    if saving {
        let b = block("save as  (Enter save, Esc cancel)", true);
        let inner = b.inner(save);
        frame.render_widget(b, save);
        text_field::render(&app.save_field, true, frame, inner);
    }
    let b = Block::bordered().title("image");
    let inner = b.inner(right);
    frame.render_widget(b, right);
    if app.decoded.is_some() {
        images.image.render(inner, frame.buffer_mut());
    }
}
