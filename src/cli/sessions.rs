//! `sdlab sessions`: what is saved, one line each.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use sdlab::session::store::{self, list_sessions};
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
    for entry in sessions {
        match entry {
            Ok(s) => {
                let step = if s.stage == "vae_decode" && s.steps_done == s.steps {
                    "done".to_string()
                } else {
                    format!("{}/{}", s.steps_done, s.steps)
                };
                let saved = s.saved.replace('T', " ").chars().take(16).collect::<String>();
                // Text from the files: printed as text, never as terminal commands.
                println!(
                    "{:<20}  {step:<9}  {:<16}  {:<24}  {}",
                    s.name,
                    printable_line(&saved),
                    short(&s.model, 24),
                    short(&s.prompt, 60)
                );
            }
            Err((name, error)) => println!("{name:<20}  unreadable: {}", printable_line(&error)),
        }
    }
    Ok(())
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
