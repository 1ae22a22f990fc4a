//! The terminal, owned by one value from the first byte to the last.
//!
//! [`TerminalSession::enter`] switches to raw mode and the alternate screen once, then
//! asks the terminal what it can do ([`query`]) within that state, on the same thread:
//! no second owner can save and restore the terminal's settings behind the UI's back.
//! Leaving restores everything it changed, on every way out: a normal return, an error,
//! or a panic on the UI thread (the panic hook restores first, so the message lands on
//! the normal screen).

pub mod mux;
pub mod query;

use std::io::{self, IsTerminal, Stdout, Write};
use std::sync::{Mutex, Once};
use std::thread::{self, ThreadId};
use std::time::Duration;

use anyhow::{Context, Result};
use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use crossterm::terminal::{self as ct, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::Terminal;

pub use mux::{MuxKind, Tmux};
pub use query::Replies;

/// How long the startup query waits. Terminals answer within a round trip; this only
/// bounds the wait on those that answer nothing.
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(1000);

/// What the terminal and its multiplexer told at startup.
#[derive(Clone, Debug, Default)]
pub struct TerminalInfo {
    /// `None` when stdin or stdout is not a terminal, so nothing was asked.
    pub replies: Option<Replies>,
    pub mux: MuxKind,
    pub tmux: Option<Tmux>,
}

/// The lab's terminal: raw mode, the alternate screen and bracketed paste, undone on drop.
pub struct TerminalSession {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
    pub info: TerminalInfo,
}

/// What leaving must undo, kept where the panic hook can reach it.
struct Undo {
    ui_thread: ThreadId,
    /// Bytes that put back what the query found (sixel display mode), before leaving.
    reset: String,
    tmux: Option<Tmux>,
}

static ACTIVE: Mutex<Option<Undo>> = Mutex::new(None);
/// The last panic's message and place, for whoever reports it.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

impl TerminalSession {
    /// Takes over the terminal: raw mode, alternate screen, bracketed paste, then the query.
    pub fn enter() -> Result<Self> {
        install_panic_hook();
        let mux = MuxKind::detect(|key| std::env::var(key).ok());
        let tmux = (mux == MuxKind::Tmux).then(Tmux::connect);
        *lock(&ACTIVE) = Some(Undo { ui_thread: thread::current().id(), reset: String::new(), tmux: tmux.clone() });
        let entered = (|| {
            ct::enable_raw_mode().context("the terminal refused raw mode")?;
            crossterm::execute!(io::stdout(), EnterAlternateScreen, EnableBracketedPaste)
                .context("cannot write to the terminal")?;
            let replies = ask_terminal(mux, tmux.as_ref());
            if let Some(Undo { reset, .. }) = lock(&ACTIVE).as_mut() {
                *reset = replies.as_ref().map(|r| reset_sequence(r, mux)).unwrap_or_default();
            }
            let terminal = Terminal::new(CrosstermBackend::new(io::stdout())).context("reading the terminal size")?;
            Ok(Self { terminal, info: TerminalInfo { replies, mux, tmux } })
        })();
        if entered.is_err() {
            restore();
        }
        entered
    }

    /// Clears the screen and redraws every cell on the next draw (images included).
    ///
    /// ratatui's `Terminal::clear` asks the terminal for the cursor position and fails
    /// when the answer is late (a busy terminal, tmux relaying a large image), which
    /// ended the lab; resizing to the same area clears without asking anything.
    pub fn force_redraw(&mut self) -> io::Result<()> {
        let area: Rect = self.terminal.size()?.into();
        self.terminal.resize(area)
    }

    /// Writes bytes outside ratatui's buffer (image deletions), now.
    pub fn write_raw(&mut self, bytes: &str) -> io::Result<()> {
        let out = self.terminal.backend_mut();
        out.write_all(bytes.as_bytes())?;
        out.flush()
    }
}

impl Drop for TerminalSession {
    fn drop(&mut self) {
        restore();
    }
}

/// Asks the terminal what it draws without taking it over (for `generate --show`): raw
/// mode only for the query, on this thread. Inside tmux, passthrough stays on for the
/// caller, who puts it back with [`Tmux::restore`].
pub fn ask_outside_ui() -> Result<TerminalInfo> {
    let mux = MuxKind::detect(|key| std::env::var(key).ok());
    let tmux = (mux == MuxKind::Tmux).then(Tmux::connect);
    let replies = if io::stdin().is_terminal() && io::stdout().is_terminal() {
        ct::enable_raw_mode().context("the terminal refused raw mode")?;
        let replies = ask_terminal(mux, tmux.as_ref());
        ct::disable_raw_mode().context("the terminal refused to leave raw mode")?;
        replies
    } else {
        None
    };
    Ok(TerminalInfo { replies, mux, tmux })
}

/// Asks the terminal (through tmux when passthrough is on), unless there is none.
fn ask_terminal(mux: MuxKind, tmux: Option<&Tmux>) -> Option<Replies> {
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        return None;
    }
    let through_tmux = mux == MuxKind::Tmux && tmux.is_some_and(|t| t.passthrough.is_ok());
    let mut typed = String::new();
    if through_tmux {
        // tmux drops passthrough while a pane waits to be redrawn, as it does right after
        // switching to the alternate screen. Two status reports that tmux answers itself
        // are two turns of its loop, after which the redraw is done.
        for _ in 0..2 {
            typed += &query::ask(&mut io::stdout(), &mut io::stdin(), query::STATUS, QUERY_TIMEOUT).ok()?.typed;
        }
    }
    let request = if through_tmux { query::request(mux::passthrough) } else { query::request(str::to_string) };
    let mut replies = query::ask(&mut io::stdout(), &mut io::stdin(), &request, QUERY_TIMEOUT).ok()?;
    replies.typed.insert_str(0, &typed);
    Some(replies)
}

/// What puts back the modes the lab changes: sixel display mode, which images need off.
fn reset_sequence(replies: &Replies, mux: MuxKind) -> String {
    let sequence = match replies.sixel_display_mode {
        Some(true) => "\x1b[?80h",
        _ => return String::new(),
    };
    if mux == MuxKind::Tmux {
        mux::passthrough(sequence)
    } else {
        sequence.to_string()
    }
}

/// Undoes what [`TerminalSession::enter`] did; idempotent, safe from the panic hook.
pub fn restore() {
    let Some(undo) = lock(&ACTIVE).take() else { return };
    let mut out = io::stdout();
    let _ = out.write_all(undo.reset.as_bytes());
    let _ = crossterm::execute!(out, DisableBracketedPaste, LeaveAlternateScreen, crossterm::cursor::Show);
    let _ = ct::disable_raw_mode();
    if let Some(tmux) = undo.tmux {
        tmux.restore();
    }
}

/// Writes a line to stderr, if there still is one: after SIGHUP the terminal is gone, and
/// `eprintln!` would panic on the failed write instead of letting the lab end.
pub fn tell(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

/// The message and place of the last panic on any thread, taken once.
pub fn take_panic_report() -> Option<String> {
    lock(&LAST_PANIC).take()
}

/// Records every panic; on the UI thread of an active session it restores the
/// terminal before the default hook prints, so the message is readable afterwards.
/// A panic elsewhere (the worker) is reported by the UI once it has restored.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            *lock(&LAST_PANIC) = Some(format!("{message}{place}"));
            let ui_thread = lock(&ACTIVE).as_ref().map(|undo| undo.ui_thread);
            match ui_thread {
                Some(id) if id == thread::current().id() => {
                    restore();
                    previous(info);
                }
                // the lab reports it on the normal screen, after restoring
                Some(_) => {}
                None => previous(info),
            }
        }));
    });
}

/// A poisoned lock still holds what is needed to restore the terminal.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
