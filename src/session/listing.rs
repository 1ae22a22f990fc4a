//! `sdlab sessions`: what is saved, read from each `session.json` alone.

use std::path::Path;

use anyhow::{bail, Result};

use super::folder::recover_all;
use super::format::parse_session_json;
use super::store::{BRANCHES, SESSION_JSON};
use crate::fsutil::{limits, read_regular};

/// One line of `sdlab sessions`. Text from the file is as written: print it with
/// [`crate::text::printable_line`].
pub struct SessionSummary {
    pub name: String,
    pub prompt: String,
    pub model: String,
    pub steps_done: usize,
    pub steps: usize,
    pub stage: String,
    pub saved: String,
    pub guidance_scale: f64,
    /// A branch: its parent (`None`: the main run) and the step it forked at.
    pub fork: Option<(Option<String>, usize)>,
    /// The session's branches, sorted by name, each listed as a session is.
    pub branches: Vec<Result<SessionSummary, (String, String)>>,
}

type Entry = Result<SessionSummary, (String, String)>;

/// What is saved under `root`.
pub struct Listing {
    /// Sorted by name; a folder whose `session.json` cannot be read is listed with
    /// the error instead of failing the listing.
    pub sessions: Vec<Entry>,
    /// Sessions recovered from interrupted saves on the way.
    pub notes: Vec<String>,
}

/// The sessions saved under `root`, after recovering any an interrupted save left
/// only as leftovers.
pub fn list_sessions(root: &Path) -> Result<Listing> {
    let notes = recover_all(root);
    let sessions = match std::fs::read_dir(root) {
        Ok(_) => summaries(root, true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => bail!("{}: cannot list the folder ({e})", root.display()),
    };
    Ok(Listing { sessions, notes })
}

/// The names of the sessions saved in `root` (or a session's branches in its
/// `branches/`): folders holding a `session.json`, sorted; none where `root` cannot be read.
pub fn saved_names(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(SESSION_JSON).is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The sessions (or a session's branches) in `root`, sorted by name.
fn summaries(root: &Path, with_branches: bool) -> Vec<Entry> {
    saved_names(root)
        .into_iter()
        .map(|name| {
            let path = root.join(&name).join(SESSION_JSON);
            let branches = if with_branches { summaries(&root.join(&name).join(BRANCHES), false) } else { Vec::new() };
            let file = read_regular(&path, limits::SESSION_JSON)
                .and_then(|bytes| parse_session_json(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())))
                .map_err(|e| (name.clone(), format!("{e:#}")))?;
            let steps = file.settings.sampler(&file.scheduler_config).map_or(file.settings.steps, |s| s.calls());
            Ok(SessionSummary {
                name,
                prompt: file.settings.prompt,
                model: file.model.source,
                steps_done: file.steps_done,
                steps,
                stage: file.stage,
                saved: file.saved,
                guidance_scale: file.settings.guidance_scale,
                fork: file.fork.map(|f| (f.parent, f.at)),
                branches,
            })
        })
        .collect()
}
