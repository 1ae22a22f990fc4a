//! Replay: a saved session walked stage by stage and step by step from what was
//! recorded, with no model loaded (no GPU, no download), for presenting a run
//! prepared elsewhere. It answers the same commands as the live worker; those that
//! would need the model say so.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use anyhow::{bail, Result};

use super::views::{DecodedView, ModelInfo};
use super::worker::{encode_view, img2img_view, latent_view, step_view, Command, Event, RunFacts};
use crate::fsutil::write_atomic;
use crate::image_out::to_rgb8;
use crate::session::store::SessionRecord;
use crate::session::Stage;

/// A recorded run and how many of its steps the audience has seen.
pub struct Replay {
    record: SessionRecord,
    dir: PathBuf,
    revealed: usize,
}

impl Replay {
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(Self { record: SessionRecord::load(dir)?, dir: dir.to_path_buf(), revealed: 0 })
    }

    pub fn run(mut self, commands: Receiver<Command>, events: &Sender<Event>) {
        let send = |event| {
            let _ = events.send(event);
        };
        if let Err(err) = self.start(&send) {
            send(Event::LoadFailed(format!("{err:#}")));
            return;
        }
        for command in commands {
            if let Err(err) = self.handle(command, &send) {
                send(Event::Error(format!("{err:#}")));
            }
        }
    }

    /// Shows stages 1 and 2 as recorded and no step yet: the speaker steps through them.
    pub fn start(&mut self, send: &impl Fn(Event)) -> Result<()> {
        let r = &self.record;
        let sampler = r.sampler()?;
        let latent_width = r.init_latents().map_or(0, |l| l.dims().last().copied().unwrap_or(0));
        let vae_scale_factor = r.settings.width.checked_div(latent_width).unwrap_or(8);
        let facts = RunFacts { name: &r.model.source, device: "replay", dtype: &r.runtime.dtype };
        let info = ModelInfo {
            recorded_steps: Some(r.history.len()),
            ..facts.info(&r.settings, &sampler, &r.scheduler_config, vae_scale_factor)
        };
        send(Event::Loaded(Box::new(info)));
        send(Event::Reset);
        if let Some(encoding) = &r.encoding {
            send(Event::Encoded(Box::new(encode_view(encoding)?)));
        }
        if let Some(latents) = r.init_latents() {
            let img2img = img2img_view(&r.settings, &sampler, r.init_image.as_ref(), r.image_latents())?;
            send(Event::Latent(Box::new(latent_view(r.settings.seed, latents, img2img)?)));
        }
        self.revealed = 0;
        let note = format!(
            "replaying {} ({} steps recorded): no model loaded; n and Space walk the recorded steps",
            self.dir.display(),
            r.history.len()
        );
        let warnings = self.record.recovered.clone().into_iter().chain([note]).collect();
        send(Event::Opened { stage: Stage::Start, warnings });
        Ok(())
    }

    pub fn handle(&mut self, command: Command, send: &impl Fn(Event)) -> Result<()> {
        let r = &self.record;
        match command {
            Command::Step => {
                let Some(record) = r.history.get(self.revealed) else {
                    bail!("replay: the recording ends after step {}", r.history.len());
                };
                send(Event::Stepped(Box::new(step_view(record, Duration::ZERO, None)?)));
                self.revealed += 1;
            }
            Command::RewindTo(steps) => {
                self.revealed = steps.min(self.revealed);
                send(Event::Rewound(self.revealed));
            }
            Command::Encode { prompt, negative_prompt } => {
                if (prompt.as_str(), negative_prompt.as_str()) != (&r.settings.prompt, &r.settings.negative_prompt) {
                    bail!("replay: the prompts are as recorded (run without --replay to change them)");
                }
                if let Some(encoding) = &r.encoding {
                    send(Event::Encoded(Box::new(encode_view(encoding)?)));
                }
            }
            Command::GetLatent { seed } => {
                if seed != r.settings.seed {
                    bail!("replay: the seed is {} as recorded (run without --replay to change it)", r.settings.seed);
                }
                if let Some(latents) = r.init_latents() {
                    let img2img = img2img_view(&r.settings, &r.sampler()?, r.init_image.as_ref(), r.image_latents())?;
                    send(Event::Latent(Box::new(latent_view(seed, latents, img2img)?)));
                }
            }
            Command::Decode => {
                let Some(image) = &r.image else { bail!("replay: this run was saved before it was decoded") };
                let view = DecodedView {
                    image: to_rgb8(image)?,
                    from_x0_of_step: None,
                    steps_done: r.history.len(),
                    elapsed: Duration::ZERO,
                };
                send(Event::Decoded(Box::new(view)));
            }
            Command::DecodeX0(_) => bail!("replay: no VAE is loaded (run without --replay to decode x0)"),
            Command::SetGuidance(_) => bail!("replay: the guidance scale is as recorded"),
            Command::SetScheduler(_) => bail!("replay: the sampler is as recorded"),
            Command::SetLoras(_) => bail!("replay: the recorded run's model stays as it was"),
            Command::SetInitImage { .. } => bail!("replay: the starting picture is as recorded"),
            Command::SavePng(path) => {
                let Some(image) = &r.image else { bail!("replay: this run was saved before it was decoded") };
                write_atomic(&path, &r.png_with_settings(&to_rgb8(image)?)?)?;
                send(Event::Saved(path));
            }
            Command::Fork { .. } | Command::SwitchBranch { .. } | Command::Compare(_) => {
                bail!("replay: branches are made live (run without --replay)")
            }
            Command::SaveSession { .. } => bail!("replay: this session is saved already ({})", self.dir.display()),
            Command::OpenSession(dir) => {
                *self = Replay::load(&dir)?;
                self.start(send)?;
            }
            // nothing new to keep
            Command::Autosave => send(Event::SessionSaved(PathBuf::new())),
            Command::ExitSaving { why, code } => super::ending::exit_saving(&why, Ok(None), code),
        }
        Ok(())
    }
}
