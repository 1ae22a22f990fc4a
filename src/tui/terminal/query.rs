//! Asking the terminal what it is: one batch of queries, read back within the raw mode
//! the caller already set up, on the calling thread, ended by a status report that
//! every terminal answers.
//!
//! Nothing here spawns a thread or touches the terminal's modes: a reader left behind
//! after a timeout, restoring the settings it saw when it started, is what left the lab
//! in cooked mode in one start out of four.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// What to ask: the graphics protocols, which terminal and version this is, its
/// background colour, its cell size in pixels and whether sixel display mode is on.
const QUERIES: [&str; 7] = [
    // kitty graphics: a 1x1 image query, answered `OK` by terminals that draw it
    "\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\",
    // the same, zlib-compressed (`o=z`): answered `OK` where compressed transmission works
    "\x1b_Gi=32,s=1,v=1,a=q,t=d,f=24,o=z;eJxjYGAAAAADAAE=\x1b\\",
    // XTVERSION: name and version
    "\x1b[>0q",
    // OSC 11: the background colour
    "\x1b]11;?\x1b\\",
    // the cell size in pixels
    "\x1b[16t",
    // DECRQM 80: sixel display mode
    "\x1b[?80$p",
    // primary device attributes (4 = sixel)
    "\x1b[c",
];

/// Device status report: every terminal answers `ESC [ 0 n`, after the answers to
/// everything sent before it, so it marks the end of the replies.
pub const STATUS: &str = "\x1b[5n";

/// The queries as one write, each wrapped by `wrap` (tmux passthrough, or nothing).
pub fn request(wrap: impl Fn(&str) -> String) -> String {
    QUERIES.iter().chain([&STATUS]).map(|q| wrap(q)).collect()
}

/// A terminal's name and version as XTVERSION gives it: `kitty(0.26.5)`, `XTerm(379)`,
/// `tmux 3.3a`, `WezTerm 20240203-110809-5046fc22`, `iTerm2 3.5.0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermVersion {
    pub name: String,
    pub version: String,
}

impl TermVersion {
    /// Splits `name(version)` or `name version`.
    fn parse(text: &str) -> Self {
        let text = text.trim();
        let (name, version) = match text.split_once('(') {
            Some((name, rest)) => (name, rest.trim_end_matches(')')),
            None => text.split_once(' ').unwrap_or((text, "")),
        };
        Self { name: name.trim().to_string(), version: version.trim().to_string() }
    }

    /// The leading numbers of the version, `0.26.5` as `[0, 26, 5]`, `3.3a` as `[3, 3]`,
    /// tmux's development `next-3.6` as `[3, 6]`.
    pub fn numbers(&self) -> Vec<u32> {
        let mut numbers = Vec::new();
        let start = self.version.find(|c: char| c.is_ascii_digit()).unwrap_or(self.version.len());
        for part in self.version[start..].split('.') {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            match digits.parse() {
                Ok(n) => numbers.push(n),
                Err(_) => break,
            }
            if digits.len() < part.len() {
                break;
            }
        }
        numbers
    }

    /// Whether this is `name` at `min` or later (by leading numbers).
    pub fn is_at_least(&self, name: &str, min: &[u32]) -> bool {
        self.name.eq_ignore_ascii_case(name) && self.numbers().as_slice() >= min
    }
}

/// Everything the terminal answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replies {
    /// The status report came back: the terminal answered everything it will.
    pub complete: bool,
    /// Sixel in the device attributes.
    pub sixel: bool,
    pub kitty: bool,
    pub kitty_zlib: bool,
    pub version: Option<TermVersion>,
    /// The background, 8 bits a channel.
    pub background: Option<[u8; 3]>,
    /// A cell's width and height in pixels.
    pub cell_px: Option<(u16, u16)>,
    /// Whether sixel display mode (DECSDM, `?80`) was set: `None` when not reported.
    pub sixel_display_mode: Option<bool>,
    /// What the user typed while the lab was asking (plain characters; keys that send
    /// escape sequences are lost): handed to the lab as its first keys.
    pub typed: String,
}

impl Replies {
    /// Reads every reply in `bytes`, keeping the plain characters typed in between.
    pub fn parse(bytes: &[u8]) -> Self {
        let mut replies = Replies::default();
        let mut typed = Vec::new();
        let mut rest = bytes;
        while let Some(esc) = rest.iter().position(|&b| b == 0x1b) {
            typed.extend_from_slice(&rest[..esc]);
            rest = &rest[esc..];
            let Some((kind, body, len)) = sequence(rest) else {
                // unfinished: more bytes to come
                rest = &[];
                break;
            };
            replies.take(kind, body);
            rest = &rest[len..];
        }
        typed.extend_from_slice(rest);
        replies.typed = String::from_utf8_lossy(&typed).into_owned();
        replies
    }

    fn take(&mut self, kind: u8, body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        match kind {
            b'_' => {
                // kitty: `Gi=31;OK`
                if let Some(reply) = text.strip_prefix('G') {
                    let (keys, message) = reply.split_once(';').unwrap_or((reply, ""));
                    let ok = message.starts_with("OK");
                    if keys.split(',').any(|k| k == "i=31") {
                        self.kitty |= ok;
                    } else if keys.split(',').any(|k| k == "i=32") {
                        self.kitty_zlib |= ok;
                    }
                }
            }
            b'P' => {
                if let Some(version) = text.strip_prefix(">|") {
                    self.version = Some(TermVersion::parse(version));
                }
            }
            b']' => {
                if let Some(colour) = text.strip_prefix("11;") {
                    self.background = parse_rgb(colour);
                }
            }
            b'[' => self.take_csi(&text),
            _ => {}
        }
    }

    fn take_csi(&mut self, text: &str) {
        if text == "0n" {
            self.complete = true;
        } else if let Some(attributes) = text.strip_prefix('?').and_then(|t| t.strip_suffix('c')) {
            self.sixel |= attributes.split(';').any(|a| a == "4");
        } else if let Some(mode) = text.strip_prefix("?80;").and_then(|t| t.strip_suffix("$y")) {
            self.sixel_display_mode = match mode {
                "1" | "3" => Some(true),
                "2" | "4" => Some(false),
                _ => None,
            };
        } else if let Some(size) = text.strip_prefix("6;").and_then(|t| t.strip_suffix('t')) {
            let mut numbers = size.split(';').map(|n| n.parse::<u16>().ok());
            if let (Some(Some(height)), Some(Some(width))) = (numbers.next(), numbers.next()) {
                if width > 0 && height > 0 {
                    self.cell_px = Some((width, height));
                }
            }
        }
    }
}

/// The escape sequence at the start of `bytes` (which starts with ESC): its kind (the
/// byte after ESC), its body, and its whole length; `None` while it is unfinished.
/// CSI ends at its final byte; DCS, APC and OSC at `ESC \` (OSC also at BEL).
fn sequence(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let kind = *bytes.get(1)?;
    match kind {
        b'[' => {
            let end = bytes[2..].iter().position(|b| (0x40..=0x7e).contains(b))? + 2;
            Some((kind, &bytes[2..=end], end + 1))
        }
        b'P' | b'_' | b']' | b'^' | b'X' => {
            let body = &bytes[2..];
            let st = body.windows(2).position(|w| w == b"\x1b\\");
            let bel = if kind == b']' { body.iter().position(|&b| b == 0x07) } else { None };
            match (st, bel) {
                (Some(st), Some(bel)) if bel < st => Some((kind, &body[..bel], bel + 3)),
                (Some(st), _) => Some((kind, &body[..st], st + 4)),
                (None, Some(bel)) => Some((kind, &body[..bel], bel + 3)),
                (None, None) => None,
            }
        }
        // any other escape (a key typed meanwhile): skip the ESC and its next byte
        _ => Some((kind, &[], 2)),
    }
}

/// `rgb:RRRR/GGGG/BBBB` (1 to 4 hex digits a channel) as 8 bits a channel.
fn parse_rgb(text: &str) -> Option<[u8; 3]> {
    let channels: Vec<&str> = text.strip_prefix("rgb:")?.split('/').collect();
    let [r, g, b] = channels.as_slice() else { return None };
    let eight = |hex: &str| -> Option<u8> {
        if hex.is_empty() || hex.len() > 4 {
            return None;
        }
        let value = u32::from_str_radix(hex, 16).ok()?;
        let max = (1u32 << (4 * hex.len())) - 1;
        Some(((value * 255 + max / 2) / max) as u8)
    };
    Some([eight(r)?, eight(g)?, eight(b)?])
}

/// Sends `request` and reads the replies until the status report or `timeout`.
///
/// The terminal must already be in raw mode (no echo, no line buffering), and nothing
/// else may read `input` meanwhile. Bytes that arrive after the timeout stay unread.
pub fn ask(
    out: &mut impl Write,
    input: &mut (impl Read + AsFd),
    request: &str,
    timeout: Duration,
) -> io::Result<Replies> {
    out.write_all(request.as_bytes())?;
    out.flush()?;
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !readable(input, left)? {
            return Ok(Replies::parse(&bytes));
        }
        let n = input.read(&mut chunk)?;
        if n == 0 {
            return Ok(Replies::parse(&bytes));
        }
        bytes.extend_from_slice(&chunk[..n]);
        let replies = Replies::parse(&bytes);
        if replies.complete {
            return Ok(replies);
        }
    }
}

/// Waits until `input` has bytes to read, at most `wait`.
fn readable(input: &impl AsFd, wait: Duration) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(input, PollFlags::IN)];
    let timeout = Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
    loop {
        match poll(&mut fds, Some(&timeout)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies recorded from real terminals (Debian's builds), answering [`request`].
    pub(crate) const XTERM_VT340: &[u8] = b"\x1bP>|XTerm(379)\x1b\\\x1b]11;rgb:ffff/ffff/ffff\x1b\\\x1b[6;15;7t\x1b[?80;1$y\x1b[?63;1;2;4;6;9;15;16;22;28c\x1b[0n";
    pub(crate) const KITTY_0_26: &[u8] = b"\x1b_Gi=31;OK\x1b\\\x1b_Gi=32;OK\x1b\\\x1bP>|kitty(0.26.5)\x1b\\\x1b]11;rgb:0000/0000/0000\x1b\\\x1b[6;18;9t\x1b[?62;c\x1b[0n";
    /// tmux answering for itself (no passthrough).
    pub(crate) const TMUX_ITSELF: &[u8] = b"\x1bP>|tmux 3.3a\x1b\\\x1b[?1;2c\x1b[0n";

    #[test]
    fn query_asks_everything_and_ends_with_the_status_report() {
        let plain = request(str::to_string);
        for query in ["\x1b_Gi=31", "\x1b[>0q", "\x1b]11;?", "\x1b[16t", "\x1b[?80$p", "\x1b[c"] {
            assert!(plain.contains(query), "{query:?} missing");
        }
        assert!(plain.ends_with("\x1b[5n"));
        let wrapped = request(|q| format!("<{q}>"));
        assert_eq!(wrapped.matches('<').count(), QUERIES.len() + 1);
    }

    #[test]
    fn query_reads_xterm_as_sixel_on_white() {
        let r = Replies::parse(XTERM_VT340);
        assert!(r.complete && r.sixel && !r.kitty);
        assert_eq!(r.version, Some(TermVersion { name: "XTerm".into(), version: "379".into() }));
        assert_eq!(r.background, Some([255, 255, 255]));
        assert_eq!(r.cell_px, Some((7, 15)));
        assert_eq!(r.sixel_display_mode, Some(true));
    }

    #[test]
    fn query_reads_kitty_with_its_version_and_compression() {
        let r = Replies::parse(KITTY_0_26);
        assert!(r.complete && r.kitty && r.kitty_zlib && !r.sixel);
        let version = r.version.unwrap();
        assert_eq!(version.numbers(), vec![0, 26, 5]);
        assert!(version.is_at_least("kitty", &[0, 26]));
        assert!(!version.is_at_least("kitty", &[0, 28]));
        assert_eq!(r.background, Some([0, 0, 0]));
        assert_eq!(r.cell_px, Some((9, 18)));
    }

    #[test]
    fn query_reads_tmux_and_a_failed_kitty_query() {
        let r = Replies::parse(TMUX_ITSELF);
        assert!(r.complete && !r.sixel && !r.kitty);
        assert_eq!(r.version.as_ref().unwrap().numbers(), vec![3, 3]);
        let r = Replies::parse(b"\x1b_Gi=31;ENOTSUPPORTED:no\x1b\\\x1b[0n");
        assert!(r.complete && !r.kitty);
    }

    #[test]
    fn query_waits_for_unfinished_replies_and_keeps_typed_characters() {
        let r = Replies::parse(b"q\x1b[A\x1bP>|XTe");
        assert!(!r.complete && r.version.is_none());
        assert_eq!(r.typed, "q");
        let r = Replies::parse(b"3\x1b[?62;c n\x1b[0n\r");
        assert_eq!(r.typed, "3 n\r");
        let r = Replies::parse(b"\x1b]11;rgb:1/22/333\x07\x1b[0n");
        assert_eq!(r.background, Some([17, 34, 51]));
        assert!(r.complete);
    }

    #[test]
    fn query_reads_what_arrives_through_a_pipe() {
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(&XTERM_VT340[..20]).unwrap();
        writer.write_all(&XTERM_VT340[20..]).unwrap();
        let mut sent = Vec::new();
        let r = ask(&mut sent, &mut reader, "ask", Duration::from_secs(5)).unwrap();
        assert_eq!(sent, b"ask");
        assert!(r.complete && r.sixel);
    }

    #[test]
    fn query_gives_up_after_the_timeout_on_a_silent_terminal() {
        let (mut reader, _writer) = std::io::pipe().unwrap();
        let started = Instant::now();
        let r = ask(&mut Vec::new(), &mut reader, "ask", Duration::from_millis(50)).unwrap();
        assert!(!r.complete && r.version.is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
