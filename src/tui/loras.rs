//! `L`: the LoRA panel. One row per LoRA fused into the model: Up/Down pick,
//! `+`/`-` change its scale, `d` removes it, `a` asks for another (`FILE[:SCALE]`).
//! Enter fuses the list into a freshly loaded model, re-encodes the prompt and
//! restarts the run from its latent; Esc leaves the model as it was. The U view
//! charts where they act.

use anyhow::Result;
use crossterm::event::KeyCode;

use super::app::{App, Focus, Level};
use super::branches::Tree;
use super::worker::{model_info, Command, Event, Worker};
use crate::model::lora::LoraSpec;
use crate::model::LoadOptions;
use crate::session::Session;

/// The list the panel hands the worker: `FILE[:SCALE]` entries separated by `;` (empty: none).
pub fn parse_list(list: &str) -> Result<Vec<LoraSpec>> {
    list.split(';').map(str::trim).filter(|s| !s.is_empty()).map(LoraSpec::parse).collect()
}

/// The panel's rows while it is open: `(file, scale)`, the picked row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoraPanel {
    pub rows: Vec<(String, f64)>,
    pub picked: usize,
}

impl LoraPanel {
    fn list(&self) -> String {
        self.rows.iter().map(|(file, scale)| format!("{file}:{scale}")).collect::<Vec<_>>().join("; ")
    }
}

/// How much `+` / `-` move a scale.
const SCALE_STEP: f64 = 0.1;

impl App {
    /// `L`: the panel, with the model's LoRAs.
    pub(super) fn open_lora_panel(&mut self) {
        if self.replay {
            self.info("replaying: the recorded run's model stays as it was");
            return;
        }
        let specs = self.info.as_ref().map(|i| i.loras.specs.clone()).unwrap_or_default();
        let rows = specs
            .iter()
            .filter_map(|s| s.rsplit_once(':'))
            .map(|(file, scale)| (file.to_string(), scale.parse().unwrap_or(1.0)))
            .collect();
        self.lora_panel = Some(LoraPanel { rows, picked: 0 });
    }

    /// A key while the panel is open; what to ask the worker.
    pub(super) fn on_lora_panel_key(&mut self, key: KeyCode) -> Vec<Command> {
        let Some(panel) = self.lora_panel.as_mut() else { return Vec::new() };
        let last = panel.rows.len().saturating_sub(1);
        match key {
            KeyCode::Up => panel.picked = panel.picked.saturating_sub(1),
            KeyCode::Down => panel.picked = (panel.picked + 1).min(last),
            KeyCode::Char(c @ ('+' | '=' | '-')) => {
                if let Some((_, scale)) = panel.rows.get_mut(panel.picked) {
                    let step = if c == '-' { -SCALE_STEP } else { SCALE_STEP };
                    // tenths stay tenths: 0.8 - 0.1 is 0.7, not 0.7000000000000001
                    *scale = ((*scale + step) * 10.0).round() / 10.0;
                }
            }
            KeyCode::Char('d') | KeyCode::Delete if !panel.rows.is_empty() => {
                panel.rows.remove(panel.picked);
                panel.picked = panel.picked.min(panel.rows.len().saturating_sub(1));
            }
            KeyCode::Char('a') => {
                self.lora_field.set_text("");
                self.focus = Some(Focus::Loras);
            }
            KeyCode::Enter => {
                let list = panel.list();
                self.lora_panel = None;
                self.running = false;
                self.target = None;
                return vec![Command::SetLoras(list)];
            }
            KeyCode::Esc | KeyCode::Char('L') => self.lora_panel = None,
            _ => {}
        }
        Vec::new()
    }

    /// `a`'s field: one more row (checked when the list is fused).
    pub(super) fn submit_lora_row(&mut self) -> Vec<Command> {
        let text = self.lora_field.text().trim().to_string();
        let Some(panel) = self.lora_panel.as_mut() else { return Vec::new() };
        if text.is_empty() {
            return Vec::new();
        }
        match LoraSpec::parse(&text) {
            Ok(spec) => {
                panel.rows.push((spec.path.display().to_string(), spec.scale));
                panel.picked = panel.rows.len() - 1;
            }
            Err(e) => self.status = Some((Level::Error, e.to_string())),
        }
        Vec::new()
    }
}

impl Worker {
    pub(super) fn set_loras(&mut self, list: &str) -> Result<()> {
        let loras = parse_list(list)?;
        let current = self.session.model();
        if loras == current.options.loras {
            self.send(Event::Note("the LoRAs are as they were".into()));
            return Ok(());
        }
        let options = LoadOptions { loras, ..current.options.clone() };
        self.send(Event::Busy("loading the model and fusing the LoRAs".into()));
        let model = self.reload_model(options)?;
        let mut notes = model.notes.clone();
        let had_latent = self.session.init_latents().is_some();
        // the settings were checked when the run began
        let mut session = Session::new_with(model, self.session.settings().clone(), true)?;
        session.set_record_taps(true);
        if self.tree.order.len() > 1 {
            notes.push("the other runs of the tree were left: other weights make a new run".into());
        }
        self.session = session;
        self.tree = Tree::new();
        self.send(Event::Loaded(Box::new(model_info(&self.session))));
        self.session.encode_prompt()?;
        if had_latent {
            self.session.get_latent()?;
        }
        self.send_branches();
        let count = self.session.model().loras.loras.len();
        notes.push(match count {
            0 => "LoRAs removed; the prompt re-encoded, the run restarts from its latent".to_string(),
            n => format!("{n} LoRA(s) fused; the prompt re-encoded, the run restarts from its latent"),
        });
        self.send_everything(notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_takes_files_with_scales_and_names_a_bad_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
        std::fs::write(&a, b"").unwrap();
        std::fs::write(&b, b"").unwrap();
        let list = format!(" {}:0.5 ;; {} ", a.display(), b.display());
        let specs = parse_list(&list).unwrap();
        assert_eq!(specs, vec![LoraSpec { path: a, scale: 0.5 }, LoraSpec { path: b, scale: 1.0 }]);
        assert!(parse_list("  ").unwrap().is_empty());
        let msg = parse_list("missing.safetensors:2").unwrap_err().to_string();
        assert_eq!(msg, "--lora missing.safetensors:2: no file missing.safetensors");
    }
}
