//! The lab's branch keys on the denoise screen: `b` forks the run at the step on
//! screen, `[` / `]` switch runs, `c` compares the run on screen with its parent
//! step by step (Left/Right browse both).

use crossterm::event::KeyCode;

use super::app::{App, DenoiseView, Focus, Level, Screen};
use super::worker::{Command, Event};

impl App {
    /// The branch keys' commands; `None` when `key` is not one of them here.
    pub(super) fn on_branch_key(&mut self, key: KeyCode) -> Option<Vec<Command>> {
        if self.screen != Screen::Denoise || self.replay {
            return None;
        }
        let comparing = self.denoise_view == DenoiseView::Compare;
        Some(match key {
            KeyCode::Char('b') => {
                self.running = false;
                self.target = None;
                self.branch_at = self.shown_steps();
                self.branch_prompt.set_text(self.prompt.text().to_string());
                self.focus = Some(Focus::BranchPrompt);
                Vec::new()
            }
            KeyCode::Char('[') => vec![Command::SwitchBranch { forward: false }],
            KeyCode::Char(']') => vec![Command::SwitchBranch { forward: true }],
            KeyCode::Char('c') => {
                self.denoise_view = if comparing { DenoiseView::Pictures } else { DenoiseView::Compare };
                if comparing {
                    Vec::new()
                } else {
                    vec![Command::Compare(self.shown_steps())]
                }
            }
            KeyCode::Left | KeyCode::Right if comparing => {
                self.browse(if key == KeyCode::Left { -1 } else { 1 });
                vec![Command::Compare(self.shown_steps())]
            }
            _ => return None,
        })
    }

    /// Enter in `b`'s fields: the prompt, then the guidance scale, then the fork.
    pub(super) fn submit_branch(&mut self, focus: Focus) -> Vec<Command> {
        if focus == Focus::BranchPrompt {
            self.branch_guidance.set_text(self.guidance_scale.to_string());
            self.focus = Some(Focus::BranchGuidance);
            return Vec::new();
        }
        let Ok(guidance) = self.branch_guidance.text().trim().parse::<f64>() else {
            let text = format!("guidance {:?}: expected a number", self.branch_guidance.text());
            self.status = Some((Level::Error, text));
            self.focus = Some(Focus::BranchGuidance);
            return Vec::new();
        };
        let prompt = self.branch_prompt.text().to_string();
        let prompt = (prompt != self.prompt.text()).then_some(prompt);
        let guidance = (guidance != self.guidance_scale).then_some(guidance);
        vec![Command::Fork { at: self.branch_at, prompt, guidance }]
    }

    /// The worker's branch events; what to ask next.
    pub(super) fn on_branch_event(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::Branches(bar) => self.branches = Some(*bar),
            Event::Compared(view) => self.compare = Some(*view),
            _ => {}
        }
        Vec::new()
    }

    /// The compare view follows the run on screen: a new step, a switch, a fork.
    pub(super) fn refresh_compare(&self) -> Vec<Command> {
        if self.denoise_view == DenoiseView::Compare && self.branches.as_ref().is_some_and(|b| b.runs.len() > 1) {
            vec![Command::Compare(self.shown_steps())]
        } else {
            Vec::new()
        }
    }

    /// Steps taken up to the step on screen (0 before the first).
    pub fn shown_steps(&self) -> usize {
        self.shown_step().map_or(0, |s| s.index + 1)
    }
}
