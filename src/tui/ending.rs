//! How the lab ends when it does not end by `q`: an error, a panic, the worker's panic,
//! or a signal (SIGHUP when the terminal or the SSH connection goes, SIGTERM). Each way
//! puts the terminal back, saves the run when anything was computed, and says in one
//! line what happened and where the run is.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::app::App;
use super::terminal;
use super::worker::{Command, Event, WorkerHandle};

/// How long the lab waits, after a failure, for the worker to save the run (it finishes
/// the step in progress first).
const SAVE_BEFORE_EXIT: Duration = Duration::from_secs(300);

/// Ends the process after a signal: the terminal put back, then what happened and where
/// the run is saved.
pub fn exit_saving(why: &str, saved: Result<Option<PathBuf>, String>, code: i32) -> ! {
    terminal::restore();
    terminal::tell(&format!("error: the lab stopped: {why}; {}", saved_sentence(saved)));
    std::process::exit(code)
}

/// Where the run went, for the message the lab ends with.
pub fn saved_sentence(saved: Result<Option<PathBuf>, String>) -> String {
    match saved {
        Ok(Some(dir)) => format!("the run is saved in {0} (sdlab tui --session {0})", dir.display()),
        Ok(None) => "nothing was computed, so nothing was saved".into(),
        Err(err) => format!("saving the run failed too: {err}"),
    }
}

/// The worker's own failure, reported after it saved what it could.
pub fn crashed_worker(app: &App) -> anyhow::Result<()> {
    if let Some(why) = &app.load_failed {
        anyhow::bail!("the lab could not start: {why}");
    }
    match &app.crashed {
        None => Ok(()),
        Some((what, saved)) => {
            anyhow::bail!("the lab stopped: the worker failed: {what}; {}", saved_sentence(saved.clone()))
        }
    }
}

/// Asks the worker to save the run, and waits for the answer.
pub fn save_before_exit(worker: &WorkerHandle) -> Result<Option<PathBuf>, String> {
    terminal::tell("sdlab: saving the run before exiting (it finishes the step in progress first)");
    worker.commands.send(Command::Autosave).map_err(|_| "the worker had stopped".to_string())?;
    let deadline = Instant::now() + SAVE_BEFORE_EXIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match worker.events.recv_timeout(left) {
            Ok(Event::SessionSaved(dir)) => return Ok((!dir.as_os_str().is_empty()).then_some(dir)),
            Ok(Event::Error(err)) => return Err(err),
            Ok(Event::Crashed { what, .. }) => return Err(format!("the worker failed too: {what}")),
            Ok(_) => {}
            Err(_) => return Err("the worker did not answer in time".into()),
        }
    }
}

/// SIGHUP (the SSH connection or the terminal closed) and SIGTERM end the lab with the
/// run saved: a thread of its own hands the worker the last command (save, then end the
/// process), since the UI thread may never return from reading a terminal that is gone.
/// Should the worker not answer in time, this thread ends the process itself.
pub fn exit_saving_on_signals(commands: Sender<Command>) {
    use signal_hook::consts::{SIGHUP, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM]) else { return };
    std::thread::spawn(move || {
        let Some(signal) = signals.forever().next() else { return };
        let why = if signal == SIGHUP { "the terminal closed (SIGHUP)" } else { "asked to stop (SIGTERM)" };
        let code = 128 + signal;
        if commands.send(Command::ExitSaving { why: why.into(), code }).is_ok() {
            std::thread::sleep(SAVE_BEFORE_EXIT);
        }
        terminal::restore();
        terminal::tell(&format!("error: the lab stopped: {why}; the run could not be saved in time"));
        std::process::exit(code);
    });
}
