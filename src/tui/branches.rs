//! The lab's tree of runs: the session's main run and its branches. The worker
//! keeps the run on screen as its session and parks the others here; `b` forks
//! the run on screen, `[` / `]` switch, `c` compares two runs' x0 step by step.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};

use super::views::{BranchBar, BranchEntry, CompareSide, CompareView};
use super::worker::{Event, Worker};
use crate::image_out::to_rgb8;
use crate::preview;
use crate::session::store::{self, OpenOptions, SaveOptions, SessionRecord};
use crate::session::{Change, Session};

/// The session's main run's name in the lab (its folder is the session's own).
pub const MAIN: &str = "main";

/// The runs not on screen, and the order all runs were made in.
#[derive(Default)]
pub struct Tree {
    pub active: String,
    pub order: Vec<String>,
    pub parked: Vec<(String, Session)>,
}

impl Tree {
    pub fn new() -> Self {
        Self { active: MAIN.into(), order: vec![MAIN.into()], parked: Vec::new() }
    }

    fn parked(&self, name: &str) -> Option<&Session> {
        self.parked.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

impl Worker {
    /// `b`: a branch of the run on screen after its first `at` steps, which
    /// becomes the run on screen.
    pub(super) fn fork(&mut self, at: usize, change: Change) -> Result<()> {
        let parent = (self.tree.active != MAIN).then(|| self.tree.active.clone());
        if change.prompt.is_some() {
            self.send(Event::Busy("encode_prompt (the branch's prompt)".into()));
        }
        let branch = self.session.fork(at, parent, &change)?;
        let name = (1..).map(|i| format!("b{i}")).find(|n| !self.tree.order.contains(n)).expect("a free name");
        self.activate(name.clone(), branch)?;
        self.tree.order.push(name.clone());
        let from = self.session.fork_point().and_then(|f| f.parent.clone()).unwrap_or_else(|| MAIN.into());
        self.send(Event::Note(format!(
            "branch {name} forked from {from} at step {at}: n steps it, [ ] switch, c compares"
        )));
        Ok(())
    }

    /// `[` / `]`: the previous or next run of the tree on screen.
    pub(super) fn switch(&mut self, forward: bool) -> Result<()> {
        let n = self.tree.order.len();
        if n < 2 {
            bail!("no branches yet: b on the denoise screen forks the run at the step shown");
        }
        let at = self.tree.order.iter().position(|r| *r == self.tree.active).unwrap_or(0);
        let next = self.tree.order[(at + if forward { 1 } else { n - 1 }) % n].clone();
        let i = self.tree.parked.iter().position(|(name, _)| *name == next).context("a listed run is parked")?;
        let (name, session) = self.tree.parked.remove(i);
        self.activate(name, session)?;
        let steps = self.session.history().len();
        self.send(Event::Note(format!("{next} on screen: {steps} of {} steps", self.session.calls())));
        Ok(())
    }

    /// Puts `session` on screen as `name`, parking the one there.
    fn activate(&mut self, name: String, session: Session) -> Result<()> {
        let old = std::mem::replace(&mut self.session, session);
        let old_name = std::mem::replace(&mut self.tree.active, name);
        self.tree.parked.push((old_name, old));
        self.session.set_record_taps(true);
        // the fields (prompt, seed, guidance) are the run's on screen
        self.send(Event::Loaded(Box::new(super::worker::model_info(&self.session))));
        self.send_everything(Vec::new())
    }

    /// What the branch bar shows.
    pub(super) fn send_branches(&self) {
        let entry = |name: &String| {
            let s = if *name == self.tree.active { Some(&self.session) } else { self.tree.parked(name) };
            s.map(|s| BranchEntry {
                name: name.clone(),
                fork: s.fork_point().map(|f| (f.parent.clone().unwrap_or_else(|| MAIN.into()), f.at)),
                steps_done: s.history().len(),
                guidance_scale: s.settings().guidance_scale,
            })
        };
        let runs: Vec<BranchEntry> = self.tree.order.iter().filter_map(entry).collect();
        let active = runs.iter().position(|r| r.name == self.tree.active).unwrap_or(0);
        self.send(Event::Branches(Box::new(BranchBar { runs, active })));
    }

    /// `c`: the run on screen beside the one it is compared with (its parent; the
    /// main run's first branch), both after `step` steps.
    pub(super) fn compare(&self, step: usize) -> Result<()> {
        let active = &self.tree.active;
        let other_name = match self.session.fork_point() {
            Some(f) => f.parent.clone().unwrap_or_else(|| MAIN.into()),
            None => self
                .tree
                .order
                .iter()
                .find(|n| *n != active)
                .cloned()
                .context("nothing to compare with: b on the denoise screen forks the run at the step shown")?,
        };
        let other = self.tree.parked(&other_name).with_context(|| format!("no run named {other_name}"))?;
        let side = |name: &str, s: &Session| -> Result<CompareSide> {
            let decoded = super::worker::decodes_every_step(s.settings());
            let x0 = match step.checked_sub(1).and_then(|i| s.history().get(i)) {
                Some(r) => {
                    let x0 = r.denoise.scheduler.pred_original_sample();
                    Some(if decoded { to_rgb8(&s.decode(x0)?)? } else { preview::latent_to_rgb(x0)? })
                }
                None => None,
            };
            Ok(CompareSide { name: name.into(), steps_done: s.history().len(), calls: s.calls(), x0, decoded })
        };
        let left = side(active, &self.session)?;
        let right = side(&other_name, other)?;
        let (difference, max_difference) = match (&left.x0, &right.x0) {
            (Some(a), Some(b)) if a.dimensions() == b.dimensions() => {
                let (image, max) = difference(a, b);
                (Some(image), max)
            }
            _ => (None, 0.0),
        };
        self.send(Event::Compared(Box::new(CompareView { step, left, right, difference, max_difference })));
        Ok(())
    }

    /// Saves the main run in `dir` and each branch in `dir/branches/NAME`. A branch
    /// whose parent was since changed before its fork is not saved (its steps would
    /// not continue the parent's); the note says which.
    pub(super) fn save_tree(&self, dir: &Path, force: bool) -> Result<Vec<String>> {
        let run = |name: &str| if name == self.tree.active { Some(&self.session) } else { self.tree.parked(name) };
        let main = run(MAIN).context("the tree has its main run")?;
        main.save(dir, SaveOptions { force })?;
        let mut notes = Vec::new();
        for name in self.tree.order.iter().filter(|n| *n != MAIN) {
            let Some(branch) = run(name) else { continue };
            let fork = branch.fork_point().expect("a branch has a fork");
            let parent = run(fork.parent.as_deref().unwrap_or(MAIN));
            // forked at 0 it shares nothing; later, the parent must still end its first steps alike
            let same_start = fork.at == 0
                || match parent {
                    Some(p) if p.history().len() >= fork.at => p.digest_at(fork.at)? == branch.digest_at(fork.at)?,
                    _ => false,
                };
            if !same_start {
                notes.push(format!("branch {name} not saved: its parent changed before step {}", fork.at));
                continue;
            }
            let branch_dir = store::session_dir(&dir.join(store::BRANCHES), name)?;
            branch.save(&branch_dir, SaveOptions { force: true })?;
        }
        Ok(notes)
    }

    /// Opens the session `dir` names (a session folder, or one of its branches'),
    /// with all its runs; a branch that cannot be read is left out, with a warning
    /// naming it. Returns the run to show and its warnings.
    /// The worker's session must be the session's main run, just opened.
    pub(super) fn open_tree(&mut self, dir: &Path, mut warnings: Vec<String>) -> Result<Vec<String>> {
        let (root, show) = split_branch_dir(dir);
        let model = self.session.shared_model();
        let mut runs: Vec<(String, Session)> = Vec::new();
        let branches = root.join(store::BRANCHES);
        for name in store::saved_names(&branches) {
            let opened = SessionRecord::load(&branches.join(&name))
                .and_then(|r| Session::from_record(model.clone(), r, OpenOptions::default()));
            match opened {
                Ok(o) => {
                    warnings.extend(o.warnings);
                    runs.push((name, o.session));
                }
                Err(e) => warnings.push(format!("branch {name} left out: {e:#}")),
            }
        }
        let order: Vec<String> = std::iter::once(MAIN.to_string()).chain(runs.iter().map(|(n, _)| n.clone())).collect();
        self.tree = Tree { active: MAIN.into(), order, parked: runs };
        if let Some(i) = show.and_then(|s| self.tree.parked.iter().position(|(n, _)| *n == s)) {
            let (name, session) = self.tree.parked.remove(i);
            let main = std::mem::replace(&mut self.session, session);
            self.tree.parked.push((MAIN.into(), main));
            self.tree.active = name;
        }
        self.session.set_record_taps(true);
        Ok(warnings)
    }
}

/// A session folder, or `SESSION/branches/NAME`: the session's folder and the branch.
pub fn split_branch_dir(dir: &Path) -> (PathBuf, Option<String>) {
    let branches = dir.parent().filter(|p| p.file_name().is_some_and(|n| n == store::BRANCHES));
    match (branches.and_then(Path::parent), dir.file_name().and_then(|n| n.to_str())) {
        (Some(root), Some(name)) => (root.to_path_buf(), Some(name.to_string())),
        _ => (dir.to_path_buf(), None),
    }
}

/// |a - b| per pixel, averaged over the channels, and its maximum: white where
/// equal to red at the maximum (the title gives the maximum, so a small difference
/// is still seen, and read as small).
fn difference(a: &RgbImage, b: &RgbImage) -> (RgbImage, f32) {
    let d: Vec<f32> = a
        .pixels()
        .zip(b.pixels())
        .map(|(p, q)| (0..3).map(|c| (f32::from(p[c]) - f32::from(q[c])).abs()).sum::<f32>() / (3.0 * 255.0))
        .collect();
    let max = d.iter().copied().fold(0.0, f32::max);
    let image = RgbImage::from_fn(a.width(), a.height(), |x, y| {
        let v = if max > 0.0 { d[(y * a.width() + x) as usize] / max } else { 0.0 };
        let fade = (255.0 * (1.0 - v)).round() as u8;
        Rgb([255, fade, fade])
    });
    (image, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_difference_map_is_white_where_equal_and_red_at_the_largest() {
        let a = RgbImage::from_fn(4, 1, |x, _| Rgb([(x * 50) as u8, 0, 0]));
        let b = RgbImage::from_pixel(4, 1, Rgb([0, 0, 0]));
        let (map, max) = difference(&a, &b);
        assert!((max - 150.0 / (3.0 * 255.0)).abs() < 1e-6);
        assert_eq!(map.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(map.get_pixel(3, 0).0, [255, 0, 0]);
        assert_eq!(map.get_pixel(1, 0).0, [255, 170, 170]);
    }
}
