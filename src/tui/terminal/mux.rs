//! tmux and GNU screen: what sits between the lab and the terminal that draws.
//!
//! tmux (3.3 and later) forwards an escape sequence to the outer terminal only inside a
//! passthrough envelope, `ESC P tmux; … ESC \`, with every ESC inside doubled, and only
//! where the pane's `allow-passthrough` option is on. It does not move the outer
//! terminal's cursor to the pane before forwarding, so an image must carry its own
//! absolute position: the pane's origin on the outer screen plus the cell inside the
//! pane. GNU screen forwards nothing usable for images.

use std::process::{Command, Stdio};

use super::query::TermVersion;

/// What the lab runs inside, as the environment tells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MuxKind {
    #[default]
    Direct,
    Tmux,
    Screen,
}

impl MuxKind {
    /// tmux sets `TMUX` (and, since 3.2, `TERM_PROGRAM=tmux`) in its panes; GNU screen
    /// sets `STY`. Their `TERM` (`screen`, `tmux-256color`) is a hint only: users
    /// override it, and a tmux pane's default `TERM` is `screen`.
    pub fn detect(env: impl Fn(&str) -> Option<String>) -> MuxKind {
        let set = |key: &str| env(key).is_some_and(|v| !v.is_empty());
        if set("TMUX") || env("TERM_PROGRAM").as_deref() == Some("tmux") {
            MuxKind::Tmux
        } else if set("STY") {
            MuxKind::Screen
        } else {
            MuxKind::Direct
        }
    }
}

/// Wraps `sequence` for tmux to forward to the outer terminal.
pub fn passthrough(sequence: &str) -> String {
    let mut out = String::with_capacity(sequence.len() + sequence.len() / 16 + 10);
    out.push_str("\x1bPtmux;");
    for c in sequence.chars() {
        if c == '\x1b' {
            out.push('\x1b');
        }
        out.push(c);
    }
    out.push_str("\x1b\\");
    out
}

/// The tmux this pane belongs to, and what the lab changed in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tmux {
    pub version: Option<TermVersion>,
    /// `allow-passthrough` is on for the pane, or why not.
    pub passthrough: Result<(), String>,
    /// The pane's own value of `allow-passthrough` before the lab turned it on (empty:
    /// none, it inherited the window's), to put back on exit.
    previous: Option<String>,
    pane: Option<String>,
}

/// How long to wait for a client to attach to the session (see [`Tmux::connect`]).
const CLIENT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// tmux 3.3 added `allow-passthrough` and made passthrough opt-in.
fn passes_images(version: &TermVersion) -> bool {
    version.numbers().as_slice() >= [3, 3].as_slice()
}

impl Tmux {
    /// Asks the tmux server for its version and turns passthrough on for this pane.
    pub fn connect() -> Tmux {
        let pane = std::env::var("TMUX_PANE").ok().filter(|p| !p.is_empty());
        let version = tmux(&pane, &["display-message", "-p", "#{version}"])
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| TermVersion { name: "tmux".into(), version: v });
        let mut this = Tmux { version, passthrough: Ok(()), previous: None, pane };
        this.passthrough = match &this.version {
            Some(v) if passes_images(v) => this.allow_passthrough().and_then(|()| this.wait_for_a_client()),
            Some(v) => Err(format!("tmux {} is older than 3.3, which passes images through", v.version)),
            None => Err("tmux did not tell its version (3.3 or later passes images through)".into()),
        };
        this
    }

    /// tmux forwards to the terminals of the clients attached to the session, and takes
    /// the answers to its own questions (which look like the lab's) until it has them all.
    /// Started as a session's first command, the lab runs before its client attaches and
    /// asks; so this waits, a little, for a client whose terminal tmux has identified.
    fn wait_for_a_client(&self) -> Result<(), String> {
        let deadline = std::time::Instant::now() + CLIENT_WAIT;
        loop {
            let state = tmux(&self.pane, &["display-message", "-p", "#{session_attached} #{client_termtype}"])?;
            let (attached, termtype) = state.split_once(' ').unwrap_or((&state, ""));
            let attached = attached.parse::<u32>().is_ok_and(|n| n > 0);
            if attached && !termtype.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                // a terminal that names no version leaves termtype empty: ask it anyway
                return if attached { Ok(()) } else { Err("no tmux client is attached to pass images to".into()) };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn allow_passthrough(&mut self) -> Result<(), String> {
        let previous = tmux(&self.pane, &["show-options", "-pv", "allow-passthrough"])?;
        tmux(&self.pane, &["set-option", "-p", "allow-passthrough", "on"])
            .map_err(|err| format!("tmux refused allow-passthrough ({err})"))?;
        self.previous = Some(previous);
        Ok(())
    }

    /// A tmux as [`Tmux::connect`] would find it, without a server.
    #[cfg(test)]
    pub(crate) fn for_tests(version: TermVersion, passthrough: Result<(), String>) -> Tmux {
        Tmux { version: Some(version), passthrough, previous: None, pane: None }
    }

    /// Puts `allow-passthrough` back as it was.
    pub fn restore(&self) {
        match self.previous.as_deref() {
            None => {}
            Some("") => drop(tmux(&self.pane, &["set-option", "-pu", "allow-passthrough"])),
            Some(value) => drop(tmux(&self.pane, &["set-option", "-p", "allow-passthrough", value])),
        }
    }

    /// The pane's top-left cell on the outer terminal, 0-based: its place in the window,
    /// below a status line at the top.
    pub fn pane_origin(&self) -> Option<(u16, u16)> {
        let text =
            tmux(&self.pane, &["display-message", "-p", "#{pane_left} #{pane_top} #{status} #{status-position}"])
                .ok()?;
        origin_from(&text)
    }
}

/// Parses `left top status status-position`: `status` is `off`, `on` or a line count.
fn origin_from(text: &str) -> Option<(u16, u16)> {
    let mut fields = text.split_whitespace();
    let left = fields.next()?.parse::<u16>().ok()?;
    let top = fields.next()?.parse::<u16>().ok()?;
    let status_lines = match fields.next()? {
        "off" => 0,
        "on" => 1,
        n => n.parse().unwrap_or(1),
    };
    let above = if fields.next() == Some("top") { status_lines } else { 0 };
    Some((left, top + above))
}

/// Runs a tmux command aimed at the lab's pane; its output, trimmed, or why it failed.
fn tmux(pane: &Option<String>, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("tmux");
    command.arg(args[0]);
    if let Some(pane) = pane {
        command.args(["-t", pane]);
    }
    command.args(&args[1..]).stdin(Stdio::null());
    let out = command.output().map_err(|err| format!("cannot run tmux: {err}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mux_is_told_by_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
        };
        assert_eq!(MuxKind::detect(env(&[("TMUX", "/tmp/tmux-0/default,1,0"), ("TERM", "screen")])), MuxKind::Tmux);
        assert_eq!(MuxKind::detect(env(&[("TERM_PROGRAM", "tmux")])), MuxKind::Tmux);
        assert_eq!(MuxKind::detect(env(&[("STY", "123.pts-0.host"), ("TERM", "screen")])), MuxKind::Screen);
        assert_eq!(MuxKind::detect(env(&[("TERM", "screen-256color")])), MuxKind::Direct);
        assert_eq!(MuxKind::detect(env(&[("TMUX", "")])), MuxKind::Direct);
    }

    /// What tmux does with a passthrough envelope: strip it and undouble the escapes; an
    /// undoubled ESC followed by `\` ends it early.
    fn unwrap_like_tmux(wrapped: &str) -> (String, &str) {
        let body = wrapped.strip_prefix("\x1bPtmux;").expect("an envelope");
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\x1b' {
                match chars.next() {
                    Some((_, '\x1b')) => out.push('\x1b'),
                    Some((j, '\\')) => return (out, &body[j + 1..]),
                    _ => panic!("a lone ESC inside the envelope at {i}"),
                }
            } else {
                out.push(c);
            }
        }
        panic!("the envelope never ends")
    }

    #[test]
    fn mux_passthrough_doubles_every_escape_so_tmux_forwards_the_whole_sequence() {
        let sixel = "\x1b[10X\x1b[1B\x1bP0;1q\"1;1;4;4#0;2;100;0;0#0~~~~-\x1b\\";
        let wrapped = passthrough(sixel);
        let (forwarded, after) = unwrap_like_tmux(&wrapped);
        assert_eq!(forwarded, sixel);
        assert_eq!(after, "", "nothing of the sequence is left for tmux to print");
        assert_eq!(wrapped.matches('\x1b').count(), 2 * sixel.matches('\x1b').count() + 2);
    }

    #[test]
    fn mux_tmux_passes_images_from_3_3() {
        let tmux = |v: &str| TermVersion { name: "tmux".into(), version: v.into() };
        assert!(!passes_images(&tmux("3.2a")) && !passes_images(&tmux("2.9")));
        assert!(passes_images(&tmux("3.3a")) && passes_images(&tmux("3.5")) && passes_images(&tmux("next-3.6")));
        assert!(passes_images(&tmux("4.0")));
    }

    #[test]
    fn mux_pane_origin_counts_a_status_line_above_the_pane() {
        assert_eq!(origin_from("0 0 on bottom"), Some((0, 0)));
        assert_eq!(origin_from("41 0 on top"), Some((41, 1)));
        assert_eq!(origin_from("0 12 2 top"), Some((0, 14)));
        assert_eq!(origin_from("3 4 off top"), Some((3, 4)));
        assert_eq!(origin_from("no pane"), None);
    }
}
