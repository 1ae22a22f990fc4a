//! `L`: the LoRAs fused into the model, edited as one line (`FILE[:SCALE]`
//! separated by `;`: add one, delete one, change a scale). Enter fuses them into
//! a freshly loaded model, re-encodes the prompt and restarts the run from its
//! latent; the U view charts where they act.

use anyhow::Result;

use super::app::{App, Focus};
use super::branches::Tree;
use super::worker::{model_info, Command, Event, Worker};
use crate::model::lora::LoraSpec;
use crate::model::{self, LoadOptions, Progress};
use crate::session::Session;

/// The list `L` edits: `FILE[:SCALE]` entries separated by `;` (empty: none).
pub fn parse_list(list: &str) -> Result<Vec<LoraSpec>> {
    list.split(';').map(str::trim).filter(|s| !s.is_empty()).map(LoraSpec::parse).collect()
}

impl App {
    /// `L`: the LoRA list, ready to edit.
    pub(super) fn edit_loras(&mut self) {
        if self.replay {
            self.info("replaying: the recorded run's model stays as it was");
            return;
        }
        let specs = self.info.as_ref().map(|i| i.loras.specs.join("; ")).unwrap_or_default();
        self.lora_field.set_text(specs);
        self.focus = Some(Focus::Loras);
    }

    pub(super) fn submit_loras(&mut self) -> Vec<Command> {
        self.running = false;
        self.target = None;
        vec![Command::SetLoras(self.lora_field.text().to_string())]
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
        let (name, variant, runtime) = (current.files.name.clone(), current.files.variant(), current.runtime.clone());
        self.send(Event::Busy("loading the model and fusing the LoRAs".into()));
        let model = model::open_with(&name, variant.as_deref(), options, runtime, &Progress::Quiet)?;
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
