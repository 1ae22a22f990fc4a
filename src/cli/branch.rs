//! `sdlab branch`: fork a saved run after K steps, go on with another prompt,
//! negative prompt, guidance scale or eta, and save the branch inside the session.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use sdlab::fsutil::check_output;
use sdlab::session::store::{self, OpenOptions, SessionRecord};
use sdlab::session::{Change, Session};
use sdlab::text::printable_line;

use super::generate::{finish, Outputs};
use super::resume::{open_saved_model, Chosen};

#[derive(Args)]
pub struct BranchArgs {
    /// The run to fork: a session name (under --dir) or SESSION/BRANCH.
    parent: String,
    /// Fork after this many of the parent's steps (0 forks before the first).
    #[arg(long)]
    at: usize,
    /// The branch's name, saved as SESSION/NAME.
    #[arg(long)]
    name: String,
    /// Go on with this prompt (re-encoded) from the fork.
    #[arg(long)]
    prompt: Option<String>,
    /// Go on with this negative prompt from the fork.
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Go on with this guidance scale from the fork.
    #[arg(long)]
    guidance: Option<f64>,
    /// Go on with this eta from the fork (DDIM's noise on each step).
    #[arg(long)]
    eta: Option<f64>,
    /// Stop after this many steps of the whole path (resume goes on); decode only at the end.
    #[arg(long)]
    stop_at: Option<usize>,
    /// Another seed: new noise, with --at 0 only ("what does seed 7 do instead?").
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the branch's image here (the session keeps it in branches/NAME/images/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write every intermediate of the branch's whole path (the shared steps too).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// The folder sessions are saved in.
    #[arg(long, default_value = store::DEFAULT_ROOT)]
    dir: PathBuf,
    /// Replace a branch of that name.
    #[arg(long)]
    force: bool,
}

pub fn run(args: BranchArgs) -> Result<()> {
    for path in args.out.iter().chain(&args.trace) {
        check_output(path)?;
    }
    let session_name = args.parent.split('/').next().unwrap_or_default();
    let parent_branch = args.parent.split_once('/').map(|(_, b)| b.to_string());
    let session_dir = store::session_dir(&args.dir, session_name)?;
    let parent_dir = store::run_dir(&args.dir, &args.parent)?;
    let branch_dir = store::session_dir(&session_dir.join(store::BRANCHES), &args.name)?;
    if parent_branch.as_deref() == Some(args.name.as_str()) {
        bail!("--name {}: that is the branch being forked; name the new branch another way", args.name);
    }
    let mut record = SessionRecord::load(&parent_dir)?;
    if let Some(note) = record.recovered.take() {
        eprintln!("note: {note}");
    }
    if ancestors(&record, &session_dir)?.contains(&args.name) {
        bail!("--name {}: the run being forked goes on from that branch; replacing it would cut it off", args.name);
    }
    store::check_can_save(&branch_dir, args.force)?;
    let taken = record.history.len();
    if args.at > taken {
        let calls = record.sampler().map_or(record.settings.steps, |s| s.calls());
        bail!("--at {}: {} has taken {taken} of its {calls} steps; fork at 0 to {taken}", args.at, args.parent);
    }
    let model = open_saved_model(Chosen::default(), &record.model, &record.runtime.device, &record.runtime.dtype)?;
    let opened = Session::from_record(model, record, OpenOptions::default())
        .map_err(|e| anyhow!("{}: {e}", parent_dir.join(store::SESSION_JSON).display()))?;
    for warning in &opened.warnings {
        eprintln!("warning: {}", printable_line(warning));
    }
    let change = Change {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        guidance_scale: args.guidance,
        eta: args.eta,
        seed: args.seed,
    };
    let mut branch = opened.session.fork(args.at, parent_branch, &change)?;
    if let Some(k) = args.stop_at.filter(|&k| k < args.at || k > branch.calls()) {
        bail!("--stop-at {k}: expected {} to {} (from the fork to the run's last step)", args.at, branch.calls());
    }
    eprintln!("branch {session_name}/{} from {} at step {} of {}", args.name, args.parent, args.at, branch.calls());
    let outputs =
        Outputs { png: args.out.as_deref(), trace: args.trace.as_deref(), session: Some(&branch_dir), show: None };
    finish(&mut branch, args.stop_at, &[], &outputs, args.force)
}

/// The branches the run in `record` goes on from (its parent, the parent's parent, ...).
fn ancestors(record: &SessionRecord, session_dir: &std::path::Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut parent = record.fork.as_ref().and_then(|f| f.parent.clone());
    while let Some(name) = parent {
        if names.contains(&name) {
            break;
        }
        let dir = store::session_dir(&session_dir.join(store::BRANCHES), &name)?;
        parent = SessionRecord::load(&dir)?.fork.and_then(|f| f.parent);
        names.push(name);
    }
    Ok(names)
}
