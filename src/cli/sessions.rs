//! `sdlab sessions`: what is saved, one line each.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use sdlab::session::store::{self, list_sessions, SessionSummary};
use sdlab::text::printable_line;

#[derive(Args)]
pub struct SessionsArgs {
    /// The folder sessions are saved in.
    #[arg(long, default_value = store::DEFAULT_ROOT)]
    dir: PathBuf,
}

pub fn run(args: SessionsArgs) -> Result<()> {
    let listing = list_sessions(&args.dir)?;
    for note in &listing.notes {
        eprintln!("note: {}", printable_line(note));
    }
    let sessions = listing.sessions;
    if sessions.is_empty() {
        eprintln!("no sessions in {}", args.dir.display());
        return Ok(());
    }
    println!("{:<20}  {:<9}  {:<16}  {:<24}  prompt", "name", "step", "saved", "model");
    for entry in &sessions {
        print_entry(entry, None);
        if let Ok(session) = entry {
            for branch in &session.branches {
                print_entry(branch, Some(&session.name));
            }
        }
    }
    Ok(())
}

/// One line; a branch's is `SESSION/NAME` (what resume takes) and says where it forks.
fn print_entry(entry: &Result<SessionSummary, (String, String)>, session: Option<&str>) {
    let address = |name: &str| match session {
        Some(session) => format!("{session}/{name}"),
        None => name.to_string(),
    };
    match entry {
        Ok(s) => {
            let step = if s.stage == "vae_decode" && s.steps_done == s.steps {
                "done".to_string()
            } else {
                format!("{}/{}", s.steps_done, s.steps)
            };
            let saved = s.saved.replace('T', " ").chars().take(16).collect::<String>();
            let model = match (&s.fork, session) {
                (Some((parent, at)), Some(session)) => {
                    let parent = parent.as_deref().map_or(session.to_string(), |p| format!("{session}/{p}"));
                    short(&format!("{parent}@{at} cfg {}", s.guidance_scale), 24)
                }
                _ => short(&s.model, 24),
            };
            // Text from the files: printed as text, never as terminal commands.
            println!(
                "{:<20}  {step:<9}  {:<16}  {:<24}  {}",
                printable_line(&address(&s.name)),
                printable_line(&saved),
                model,
                short(&s.prompt, 60)
            );
        }
        Err((name, error)) => println!("{:<20}  unreadable: {}", address(name), printable_line(error)),
    }
}

/// The end of a long model path, the start of a long prompt: whichever part says more.
fn short(text: &str, width: usize) -> String {
    let text = printable_line(text);
    let count = text.chars().count();
    if count <= width {
        text
    } else if text.contains('/') && !text.contains(' ') {
        format!("…{}", text.chars().skip(count - (width - 1)).collect::<String>())
    } else {
        format!("{}…", text.chars().take(width - 1).collect::<String>())
    }
}
