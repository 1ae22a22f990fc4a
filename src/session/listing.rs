//! `sdlab sessions`: what is saved, read from each `session.json` alone.

use std::path::Path;

use anyhow::{bail, Result};

use super::folder::recover_all;
use super::format::parse_session_json;
use super::store::SESSION_JSON;
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
}

/// What is saved under `root`.
pub struct Listing {
    /// Sorted by name; a folder whose `session.json` cannot be read is listed with
    /// the error instead of failing the listing.
    pub sessions: Vec<Result<SessionSummary, (String, String)>>,
    /// Sessions recovered from interrupted saves on the way.
    pub notes: Vec<String>,
}

/// The sessions saved under `root`, after recovering any an interrupted save left
/// only as leftovers.
pub fn list_sessions(root: &Path) -> Result<Listing> {
    let notes = recover_all(root);
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing { sessions: Vec::new(), notes }),
        Err(e) => bail!("{}: cannot list the folder ({e})", root.display()),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(SESSION_JSON).is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let sessions = names
        .into_iter()
        .map(|name| {
            let path = root.join(&name).join(SESSION_JSON);
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
            })
        })
        .collect();
    Ok(Listing { sessions, notes })
}
