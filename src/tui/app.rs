//! The terminal lab's state and how it changes: keys and worker events are both
//! [`Message`]s, and [`App::update`] returns the commands for the worker. No tensors,
//! no terminal: this is what the screen tests drive directly.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::talk::{DenoiseAt, Talk};
use super::text_field::{FieldAction, TextField};
use super::views::{BranchBar, CompareView, DecodedView, EncodeView, LatentView, ModelInfo, StepView};
use super::worker::{Command, Event};
use crate::model::tokenizer::TokenKind;
use crate::scheduler::SamplerName;
use crate::session::Stage;

/// The attention view starts on the prompt's first word, the position after BOS.
const FIRST_WORD: usize = 1;

/// The four stages of the talk, each a screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    EncodePrompt,
    GetLatent,
    Denoise,
    VaeDecode,
}

impl Screen {
    pub const ALL: [Screen; 4] = [Screen::EncodePrompt, Screen::GetLatent, Screen::Denoise, Screen::VaeDecode];

    /// The stage's name in the talk (and in `src/stages/`).
    pub fn title(self) -> &'static str {
        match self {
            Screen::EncodePrompt => "encode_prompt",
            Screen::GetLatent => "get_latent",
            Screen::Denoise => "denoise",
            Screen::VaeDecode => "vae_decode",
        }
    }

    /// Its place in the talk, from 0.
    pub fn index(self) -> usize {
        Screen::ALL.iter().position(|s| *s == self).expect("listed")
    }

    fn cycle(self, forward: bool) -> Screen {
        let n = Screen::ALL.len();
        Screen::ALL[(self.index() + if forward { 1 } else { n - 1 }) % n]
    }
}

/// What the denoise screen shows of the step: its values and pictures, or a look
/// inside the UNet's pass (`u`, `a`); each key toggles its view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DenoiseView {
    #[default]
    Pictures,
    /// The tensor's path through the blocks, with each block's output shape.
    UNet,
    /// One prompt token's cross-attention map over the predicted x0.
    Attention,
    /// `c`: the run on screen and another of the session's runs, x0 beside x0.
    Compare,
}

impl DenoiseView {
    fn toggled(self, view: DenoiseView) -> DenoiseView {
        if self == view {
            DenoiseView::Pictures
        } else {
            view
        }
    }
}

/// Which text field has the keyboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Prompt,
    Negative,
    Seed,
    GoToStep,
    SavePath,
    /// `w`: the folder to save the session in.
    SessionSave,
    /// `o`: the session folder to open.
    SessionOpen,
    /// `i` on get_latent: the picture image to image starts from.
    InitImage,
    /// `b` on denoise: the branch's prompt, then its guidance scale.
    BranchPrompt,
    BranchGuidance,
    /// `L`: the LoRA list.
    Loras,
}

/// Everything that can change the app.
#[derive(Debug)]
pub enum Message {
    Key(KeyEvent),
    Paste(String),
    Worker(Event),
}

/// How a status line should look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Error,
}

/// The whole UI state.
pub struct App {
    pub screen: Screen,
    pub info: Option<ModelInfo>,
    /// What the worker is doing, while it does it.
    pub busy: Option<String>,
    pub status: Option<(Level, String)>,
    pub prompt: TextField,
    pub negative: TextField,
    pub seed_field: TextField,
    pub goto_field: TextField,
    pub save_field: TextField,
    /// `i`: the picture to start from (empty: text to image).
    pub init_image_field: TextField,
    /// Image to image's strength, `+` / `-` on get_latent.
    pub strength: f64,
    pub focus: Option<Focus>,
    pub seed: u64,
    pub guidance_scale: f64,
    /// The sampler asked for last, so that S pressed again before the worker
    /// answers goes on from it.
    sampler_asked: Option<SamplerName>,
    pub encode: Option<EncodeView>,
    pub latent: Option<LatentView>,
    pub history: Vec<StepView>,
    /// The step shown on the denoise screen; `None` follows the latest.
    pub selected: Option<usize>,
    /// Space pressed: keep stepping until paused or done.
    pub running: bool,
    /// `g N`: keep stepping until N steps are done.
    pub target: Option<usize>,
    /// A step was asked for and has not come back yet.
    pub stepping: bool,
    pub denoise_view: DenoiseView,
    /// The prompt token (its position of the 77) whose attention map `a` shows.
    pub attention_token: usize,
    pub decoded: Option<DecodedView>,
    pub decoded_x0: Option<DecodedView>,
    pub show_help: bool,
    /// The session folder field (`w` and `o`).
    pub session_field: TextField,
    /// A save found a session in this folder: `y` replaces it.
    pub confirm_overwrite: Option<PathBuf>,
    /// `q` asked for an autosave; quit once the worker answers.
    pub quitting: bool,
    /// Replaying a recording: nothing new to autosave.
    pub replay: bool,
    /// Talk mode: slides with the code, and where the walk through them is.
    pub talk: Talk,
    /// How this terminal draws images, for the key map.
    pub terminal_summary: String,
    /// The worker failed: what happened, and where it saved the run (or why it could not).
    pub crashed: Option<(String, Result<Option<PathBuf>, String>)>,
    /// The session or model could not be opened: why. The lab ends with it.
    pub load_failed: Option<String>,
    pub quit: bool,
    /// The session's runs, once it has branches (or was opened with them).
    pub branches: Option<BranchBar>,
    /// The compare view's last answer.
    pub compare: Option<CompareView>,
    /// `b`: the branch's prompt and guidance fields, and the step it forks at.
    pub branch_prompt: TextField,
    pub branch_guidance: TextField,
    /// `L`: the LoRA panel while open, and its field for another LoRA.
    pub lora_panel: Option<super::loras::LoraPanel>,
    pub lora_field: TextField,
    pub branch_at: usize,
}

impl App {
    pub fn new(prompt: &str, negative_prompt: &str, seed: u64, guidance_scale: f64) -> Self {
        Self {
            screen: Screen::EncodePrompt,
            info: None,
            busy: Some("loading the model".into()),
            status: None,
            prompt: TextField::new(prompt),
            negative: TextField::new(negative_prompt),
            seed_field: {
                let mut field = TextField::digits();
                field.set_text(seed.to_string());
                field
            },
            goto_field: TextField::digits(),
            save_field: TextField::new(""),
            init_image_field: TextField::new(""),
            branch_prompt: TextField::new(""),
            branch_guidance: TextField::new(""),
            lora_panel: None,
            lora_field: TextField::new(""),
            branch_at: 0,
            strength: crate::session::DEFAULT_STRENGTH,
            focus: None,
            seed,
            guidance_scale,
            sampler_asked: None,
            encode: None,
            latent: None,
            history: Vec::new(),
            selected: None,
            running: false,
            target: None,
            stepping: false,
            denoise_view: DenoiseView::Pictures,
            attention_token: FIRST_WORD,
            decoded: None,
            decoded_x0: None,
            show_help: false,
            session_field: TextField::new(""),
            confirm_overwrite: None,
            quitting: false,
            replay: false,
            talk: Talk::default(),
            terminal_summary: String::new(),
            crashed: None,
            load_failed: None,
            quit: false,
            branches: None,
            compare: None,
        }
    }

    /// Whether quitting now would lose something computed: a prompt encoded or a latent
    /// drawn, in a run that is not a replay.
    pub fn has_work_to_keep(&self) -> bool {
        !self.replay && self.info.is_some() && (self.encode.is_some() || self.latent.is_some())
    }

    /// Steps in the schedule (known once the model is loaded).
    pub fn total_steps(&self) -> usize {
        self.info.as_ref().map_or(0, |i| i.steps)
    }

    /// The step the denoise screen shows.
    pub fn shown_step(&self) -> Option<&StepView> {
        match self.selected {
            Some(i) => self.history.get(i),
            None => self.history.last(),
        }
    }

    /// The prompt's token positions the attention view lists: BOS, the words and EOS.
    /// The padding after EOS is left out: dozens of copies of one token, not the prompt.
    pub fn attention_tokens(&self) -> Vec<usize> {
        let Some(encode) = &self.encode else { return Vec::new() };
        let tokens = encode.prompt.tokens.iter().enumerate();
        tokens.filter(|(_, t)| t.kind != TokenKind::Pad).map(|(i, _)| i).collect()
    }

    /// The attention view's list ([`App::attention_tokens`]) and where its chosen token
    /// is in it (the last one when a shorter prompt left the choice past its end).
    pub fn attention_choice(&self) -> Option<(Vec<usize>, usize)> {
        let listed = self.attention_tokens();
        let at = listed.iter().position(|&i| i >= self.attention_token).or(listed.len().checked_sub(1))?;
        Some((listed, at))
    }

    /// Moves the attention view's token `delta` places along [`App::attention_tokens`].
    fn pick_token(&mut self, delta: isize) {
        if let Some((listed, at)) = self.attention_choice() {
            self.attention_token = listed[at.saturating_add_signed(delta).min(listed.len() - 1)];
        }
    }

    pub(super) fn info(&mut self, text: impl Into<String>) {
        self.status = Some((Level::Info, text.into()));
    }

    /// Applies one message; returns what the worker should do.
    pub fn update(&mut self, message: Message) -> Vec<Command> {
        match message {
            Message::Key(key) => self.on_key(key),
            Message::Paste(text) => {
                if let Some(field) = self.focused_field() {
                    field.paste(&text);
                }
                Vec::new()
            }
            Message::Worker(event) => self.on_event(event),
        }
    }

    fn focused_field(&mut self) -> Option<&mut TextField> {
        Some(match self.focus? {
            Focus::Prompt => &mut self.prompt,
            Focus::Negative => &mut self.negative,
            Focus::Seed => &mut self.seed_field,
            Focus::GoToStep => &mut self.goto_field,
            Focus::SavePath => &mut self.save_field,
            Focus::SessionSave | Focus::SessionOpen => &mut self.session_field,
            Focus::InitImage => &mut self.init_image_field,
            Focus::BranchPrompt => &mut self.branch_prompt,
            Focus::BranchGuidance => &mut self.branch_guidance,
            Focus::Loras => &mut self.lora_field,
        })
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return self.ask_to_quit();
        }
        if let Some(dir) = self.confirm_overwrite.take() {
            if key.code == KeyCode::Char('y') {
                return vec![Command::SaveSession { dir, force: true }];
            }
            self.info("kept the saved session");
            return Vec::new();
        }
        if let Some(focus) = self.focus {
            let field = self.focused_field().expect("focused");
            return match field.handle_key(key) {
                FieldAction::Submit => {
                    self.focus = None;
                    self.submit(focus)
                }
                FieldAction::Cancel => {
                    self.focus = None;
                    Vec::new()
                }
                _ => Vec::new(),
            };
        }
        if self.lora_panel.is_some() {
            return self.on_lora_panel_key(key.code);
        }
        if self.show_help {
            // any key closes the key map
            self.show_help = false;
            return Vec::new();
        }
        if self.talk.on {
            match key.code {
                KeyCode::PageDown | KeyCode::Right => return self.talk_forward(),
                KeyCode::PageUp | KeyCode::Left => {
                    self.talk_back();
                    return Vec::new();
                }
                KeyCode::Char('c') => {
                    self.talk.theme = self.talk.theme.toggled(self.talk.plain);
                    return Vec::new();
                }
                _ => {}
            }
        }
        match key.code {
            KeyCode::Char('q') => return self.ask_to_quit(),
            KeyCode::Char('w') => {
                self.session_field.set_text(self.default_session_dir().display().to_string());
                self.focus = Some(Focus::SessionSave);
            }
            KeyCode::Char('o') => {
                self.session_field.set_text(format!("{}/", crate::session::store::DEFAULT_ROOT));
                self.focus = Some(Focus::SessionOpen);
            }
            KeyCode::Char('?') => self.show_help = true,
            KeyCode::Char('L') => self.open_lora_panel(),
            KeyCode::Char('t') => self.toggle_talk(),
            KeyCode::Char(c @ '1'..='4') => self.screen = Screen::ALL[c as usize - '1' as usize],
            KeyCode::Tab => self.screen = self.screen.cycle(true),
            KeyCode::BackTab => self.screen = self.screen.cycle(false),
            _ => {
                if let Some(commands) = self.on_branch_key(key.code) {
                    return commands;
                }
                return self.on_screen_key(key);
            }
        }
        Vec::new()
    }

    fn on_screen_key(&mut self, key: KeyEvent) -> Vec<Command> {
        match (self.screen, key.code) {
            (Screen::EncodePrompt, KeyCode::Char('e')) => self.focus = Some(Focus::Prompt),
            (Screen::EncodePrompt, KeyCode::Char('E')) => self.focus = Some(Focus::Negative),
            (Screen::EncodePrompt, KeyCode::Enter) => return vec![self.encode_command()],
            (Screen::GetLatent, KeyCode::Char('e')) => self.focus = Some(Focus::Seed),
            (Screen::GetLatent, KeyCode::Char('r')) => {
                self.seed = random_seed();
                self.seed_field.set_text(self.seed.to_string());
                return vec![Command::GetLatent { seed: self.seed }];
            }
            (Screen::GetLatent, KeyCode::Enter) => return self.submit(Focus::Seed),
            (Screen::GetLatent, KeyCode::Char('i')) => self.focus = Some(Focus::InitImage),
            (Screen::GetLatent, KeyCode::Char('+' | '=')) => return self.change_strength(0.1),
            (Screen::GetLatent, KeyCode::Char('-')) => return self.change_strength(-0.1),
            (Screen::Denoise, KeyCode::Char(' ')) => {
                if self.running {
                    self.running = false;
                    self.info("paused: the step in progress finishes first");
                } else {
                    self.running = true;
                    self.target = None;
                    return self.next_step();
                }
            }
            (Screen::Denoise, KeyCode::Char('n')) => {
                // n pressed while a step runs queues one more, so n n n means three steps
                self.running = false;
                let done = self.history.len() + usize::from(self.stepping);
                let target = self.target.unwrap_or(done).max(done) + 1;
                self.target = Some(target.min(self.total_steps().max(1)));
                return self.next_step();
            }
            (Screen::Denoise, KeyCode::Char('g')) => {
                self.goto_field.set_text("");
                self.focus = Some(Focus::GoToStep);
            }
            (Screen::Denoise, KeyCode::Char('+' | '=')) => return self.change_guidance(0.5),
            (Screen::Denoise, KeyCode::Char('-')) => return self.change_guidance(-0.5),
            (Screen::Denoise, KeyCode::Char('S')) => return self.next_sampler(),
            (Screen::Denoise, KeyCode::Char('u')) => self.denoise_view = self.denoise_view.toggled(DenoiseView::UNet),
            (Screen::Denoise, KeyCode::Char('a')) => {
                self.denoise_view = self.denoise_view.toggled(DenoiseView::Attention);
            }
            (Screen::Denoise, KeyCode::Up) if self.denoise_view == DenoiseView::Attention => self.pick_token(-1),
            (Screen::Denoise, KeyCode::Down) if self.denoise_view == DenoiseView::Attention => self.pick_token(1),
            (Screen::Denoise, KeyCode::Left) => self.browse(-1),
            (Screen::Denoise, KeyCode::Right) => self.browse(1),
            (Screen::Denoise, KeyCode::Char('v')) => match self.shown_step() {
                Some(step) => return vec![Command::DecodeX0(step.index)],
                None => self.info("no step taken yet: n takes one"),
            },
            (Screen::VaeDecode, KeyCode::Char('d')) => return vec![Command::Decode],
            (Screen::VaeDecode, KeyCode::Char('s')) => {
                if self.decoded.is_none() {
                    self.info("nothing to save yet: d decodes the latent");
                } else {
                    self.save_field.set_text(self.default_save_path().display().to_string());
                    self.focus = Some(Focus::SavePath);
                }
            }
            _ => {}
        }
        Vec::new()
    }

    fn submit(&mut self, focus: Focus) -> Vec<Command> {
        match focus {
            Focus::Prompt | Focus::Negative => vec![self.encode_command()],
            Focus::Seed => match self.seed_field.text().parse::<u64>() {
                Ok(seed) => {
                    self.seed = seed;
                    vec![Command::GetLatent { seed }]
                }
                Err(_) => {
                    self.status =
                        Some((Level::Error, format!("seed {:?}: expected a whole number", self.seed_field.text())));
                    Vec::new()
                }
            },
            Focus::GoToStep => self.go_to(self.goto_field.text().parse::<usize>().ok()),
            Focus::BranchPrompt | Focus::BranchGuidance => self.submit_branch(focus),
            Focus::Loras => self.submit_lora_row(),
            Focus::InitImage => {
                let path = self.init_image_field.text().trim();
                let path = (!path.is_empty()).then(|| PathBuf::from(path));
                vec![Command::SetInitImage { path, strength: self.strength }]
            }
            Focus::SessionSave | Focus::SessionOpen => {
                let dir = PathBuf::from(self.session_field.text().trim());
                if dir.as_os_str().is_empty() {
                    self.status = Some((Level::Error, "session: expected a folder".into()));
                    return Vec::new();
                }
                if focus == Focus::SessionSave {
                    vec![Command::SaveSession { dir, force: false }]
                } else {
                    self.running = false;
                    self.target = None;
                    vec![Command::OpenSession(dir)]
                }
            }
            Focus::SavePath => {
                let path = self.save_field.text().trim().to_string();
                if path.is_empty() {
                    self.status = Some((Level::Error, "save: expected a file path".into()));
                    return Vec::new();
                }
                vec![Command::SavePng(PathBuf::from(path))]
            }
        }
    }

    /// `+` / `-` on get_latent: image to image's strength, in tenths.
    fn change_strength(&mut self, delta: f64) -> Vec<Command> {
        let Some(path) = self.latent.as_ref().and_then(|l| l.img2img.as_ref()).map(|i| i.path.clone()) else {
            self.info("text to image: i picks a picture to start from");
            return Vec::new();
        };
        self.strength = ((self.strength + delta) * 10.0).round().clamp(1.0, 10.0) / 10.0;
        vec![Command::SetInitImage { path: Some(PathBuf::from(path)), strength: self.strength }]
    }

    pub(super) fn encode_command(&self) -> Command {
        Command::Encode { prompt: self.prompt.text().to_string(), negative_prompt: self.negative.text().to_string() }
    }

    pub(super) fn next_step(&mut self) -> Vec<Command> {
        if self.stepping {
            return Vec::new();
        }
        if self.info.is_some() && self.history.len() >= self.total_steps() {
            self.running = false;
            self.target = None;
            self.info("all steps are done: 4 then d decodes the image, g rewinds");
            return Vec::new();
        }
        self.stepping = true;
        vec![Command::Step]
    }

    fn go_to(&mut self, step: Option<usize>) -> Vec<Command> {
        let total = self.total_steps();
        match step {
            Some(n) if n <= total => {
                self.selected = None;
                if n < self.history.len() {
                    self.running = false;
                    self.target = None;
                    vec![Command::RewindTo(n)]
                } else if n > self.history.len() {
                    self.target = Some(n);
                    self.next_step()
                } else {
                    Vec::new()
                }
            }
            _ => {
                let typed = self.goto_field.text().to_string();
                self.status = Some((Level::Error, format!("go to step {typed:?}: expected 0 to {total}")));
                Vec::new()
            }
        }
    }

    /// The sampler after the current one in `SamplerName::ALL`, round.
    fn next_sampler(&mut self) -> Vec<Command> {
        let shown = self.info.as_ref().and_then(|i| SamplerName::from_name(&i.sampler).ok());
        let current = self.sampler_asked.or(shown).unwrap_or_default();
        let all = SamplerName::ALL;
        let at = all.iter().position(|&s| s == current).unwrap_or(0);
        let next = all[(at + 1) % all.len()];
        self.sampler_asked = Some(next);
        vec![Command::SetScheduler(next)]
    }

    fn change_guidance(&mut self, delta: f64) -> Vec<Command> {
        // from the scale asked for last, so that keys pressed before the worker answers add up
        let scale = (((self.guidance_scale + delta) * 2.0).round() / 2.0).max(0.0);
        self.guidance_scale = scale;
        vec![Command::SetGuidance(scale)]
    }

    pub(super) fn browse(&mut self, delta: isize) {
        if self.history.is_empty() {
            return;
        }
        let last = self.history.len() - 1;
        let current = self.selected.unwrap_or(last) as isize;
        let next = (current + delta).clamp(0, last as isize) as usize;
        self.selected = if next == last { None } else { Some(next) };
    }

    /// `q` / Ctrl-C: autosave first when there is something to keep (the worker answers
    /// after the step in progress); pressed again while that runs, quit at once.
    fn ask_to_quit(&mut self) -> Vec<Command> {
        if self.quitting || !self.has_work_to_keep() {
            self.quit = true;
            return Vec::new();
        }
        self.quitting = true;
        self.running = false;
        self.target = None;
        self.busy = Some("saving the session before quitting (q again quits without saving)".into());
        vec![Command::Autosave]
    }

    /// Where `w` proposes to save the session: the sessions folder, by seed and steps.
    pub fn default_session_dir(&self) -> PathBuf {
        PathBuf::from(crate::session::store::DEFAULT_ROOT).join(format!("seed{}-step{}", self.seed, self.history.len()))
    }

    /// Where `s` proposes to save: the sessions folder, named after the seed and steps.
    pub fn default_save_path(&self) -> PathBuf {
        let steps = self.decoded.as_ref().map_or(self.history.len(), |d| d.steps_done);
        PathBuf::from("sessions").join(format!("sdlab-seed{}-step{steps}.png", self.seed))
    }

    fn on_event(&mut self, event: Event) -> Vec<Command> {
        if !matches!(event, Event::Busy(_)) {
            self.busy = None;
        }
        match event {
            Event::Loading(text) => self.busy = Some(text),
            Event::Loaded(info) => {
                self.info(format!("loaded {} on {} {}", info.name, info.device, info.dtype));
                let settings = &info.settings;
                self.prompt.set_text(settings.prompt.clone());
                self.negative.set_text(settings.negative_prompt.clone());
                self.seed = settings.seed;
                self.seed_field.set_text(settings.seed.to_string());
                self.guidance_scale = settings.guidance_scale;
                self.sampler_asked = None;
                self.info = Some(*info);
            }
            Event::Busy(text) => self.busy = Some(text),
            Event::Encoded(view) => {
                self.encode = Some(*view);
                self.attention_token = FIRST_WORD;
                self.clear_denoise();
            }
            Event::Latent(view) => {
                self.seed = view.seed;
                if let Some(i) = &view.img2img {
                    self.strength = i.strength;
                    self.init_image_field.set_text(i.path.clone());
                    self.info(format!(
                        "image to image, strength {}: the picture noised to t={}, then {} of the {} steps",
                        i.strength, i.first_timestep, i.calls, i.steps
                    ));
                }
                self.latent = Some(*view);
                self.clear_denoise();
            }
            Event::Note(text) => self.info(text),
            Event::Stepped(view) => {
                // a step asked for, not one of a session's sent again
                let live = self.stepping;
                self.stepping = false;
                self.talk.stepped(view.index);
                self.history.truncate(view.index);
                self.history.push(*view);
                self.decoded = None;
                let done = self.history.len();
                let reached = self.target.is_some_and(|t| done >= t) || done >= self.total_steps();
                let mut next = Vec::new();
                if reached {
                    self.running = false;
                    self.target = None;
                } else if self.running || self.target.is_some() {
                    next = self.next_step();
                }
                if live {
                    next.extend(self.refresh_compare());
                }
                return next;
            }
            Event::Rewound(steps) => {
                self.history.truncate(steps);
                self.talk.rewound(steps);
                self.selected = None;
                self.info(format!("rewound to step {steps}"));
            }
            Event::Invalidated { steps, image, what } => {
                let mut dropped = Vec::new();
                if steps > 0 {
                    dropped.push(format!("{steps} denoise steps"));
                }
                if image {
                    dropped.push("the decoded image".into());
                }
                self.info(format!("{what}: dropped {}", dropped.join(" and ")));
            }
            Event::SamplerSet(info) => {
                self.info(format!(
                    "sampler {}: {} calls, from the start (S for the next)",
                    info.sampler,
                    info.timesteps.len()
                ));
                self.info = Some(*info);
                self.clear_denoise();
            }
            // the app moved its scale when asked (a late answer must not undo a later key)
            Event::GuidanceSet(scale) => {
                self.info(format!("guidance scale {scale} from the next step on"));
            }
            Event::Decoded(view) => match view.from_x0_of_step {
                Some(_) => self.decoded_x0 = Some(*view),
                None => self.decoded = Some(*view),
            },
            Event::Saved(path) => self.info(format!("saved {}", path.display())),
            Event::SessionSaved(dir) => {
                if self.quitting {
                    self.quit = true;
                } else {
                    self.info(format!("saved the session in {}", dir.display()));
                }
            }
            Event::ConfirmOverwrite(dir) => {
                self.info(format!("{} holds a saved session: y replaces it, any other key keeps it", dir.display()));
                self.confirm_overwrite = Some(dir);
            }
            Event::Reset => {
                self.encode = None;
                self.latent = None;
                self.clear_denoise();
            }
            Event::Opened { stage, warnings } => {
                self.replay = self.info.as_ref().is_some_and(|i| i.device == "replay");
                self.screen = match stage {
                    Stage::Start | Stage::EncodePrompt => Screen::EncodePrompt,
                    Stage::GetLatent => Screen::GetLatent,
                    Stage::Denoise(_) => Screen::Denoise,
                    Stage::VaeDecode => Screen::VaeDecode,
                };
                let text = if warnings.is_empty() { "opened the session".to_string() } else { warnings.join("; ") };
                self.info(text);
                return self.refresh_compare();
            }
            event @ (Event::Branches(_) | Event::Compared(_)) => return self.on_branch_event(event),
            Event::Crashed { what, saved } => {
                self.crashed = Some((what, saved));
                self.quit = true;
            }
            Event::LoadFailed(text) => {
                self.load_failed = Some(text);
                self.quit = true;
            }
            Event::Error(text) => {
                if self.quitting {
                    // the autosave failed: say so and stay, rather than lose the run
                    self.quitting = false;
                }
                self.stepping = false;
                self.running = false;
                self.target = None;
                self.status = Some((Level::Error, text));
            }
        }
        Vec::new()
    }

    /// A new encoding or latent means the denoising history starts over.
    fn clear_denoise(&mut self) {
        self.history.clear();
        self.selected = None;
        self.decoded = None;
        self.decoded_x0 = None;
        self.talk.denoise = DenoiseAt::Intro;
    }
}

/// A seed from the clock: `r` wants a different picture, not a reproducible one
/// (the seed drawn is shown and saved, so the result stays reproducible).
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
}
