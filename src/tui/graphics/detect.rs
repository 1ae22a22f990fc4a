//! Which image protocol to use, from what the terminal answered and where the lab runs.
//!
//! The terminal's own answers decide; the environment only breaks ties the answers
//! leave open. Every fallback to half-blocks comes with one line saying why, for the
//! status line.

use ratatui_image::FontSize;

use super::{CellSource, Graphics, GraphicsMode, Protocol, Route};
use crate::tui::terminal::{MuxKind, TerminalInfo};

/// The cell size assumed when neither the terminal nor the window size tells one: a
/// common font with the 1:2 shape half-blocks rely on to keep the aspect ratio.
pub const FALLBACK_FONT_SIZE: FontSize = FontSize::new(8, 16);

/// kitty draws unicode placeholders (`U=1`) from 0.28.0 on; older ones reject the key.
const KITTY_PLACEHOLDERS: [u32; 2] = [0, 28];

/// Chooses how images are drawn.
///
/// `env` reads environment variables (hints for terminals that answer no version);
/// `window_font` measures the cell from the window's pixel size (`TIOCGWINSZ`).
pub fn choose(
    mode: GraphicsMode,
    info: &TerminalInfo,
    env: impl Fn(&str) -> Option<String>,
    window_font: impl FnOnce() -> Option<FontSize>,
) -> (Graphics, Option<String>) {
    let replies = info.replies.as_ref();
    let answered = replies.and_then(|r| r.cell_px).map(|(w, h)| FontSize::new(w, h));
    let (measured, cell_source) = match answered {
        Some(size) => (Some(size), CellSource::Terminal),
        None => match window_font() {
            Some(size) => (Some(size), CellSource::Window),
            None => (None, CellSource::Assumed),
        },
    };
    let font_size = measured.unwrap_or(FALLBACK_FONT_SIZE);
    let route = match info.mux {
        MuxKind::Tmux => Route::Tmux { origin: info.tmux.as_ref().and_then(|t| t.pane_origin()).unwrap_or((0, 0)) },
        _ => Route::Direct,
    };
    let kitty_zlib = replies.is_some_and(|r| r.kitty_zlib);
    let graphics = |protocol| Graphics { protocol, font_size, cell_source, route, kitty_zlib };

    let (protocol, mut note) = match mode.forced() {
        Some(forced) => (forced_protocol(forced, info), None),
        None => match blocked(info) {
            Some(why) => (Protocol::Halfblocks, Some(why)),
            None => detected(info, &env),
        },
    };
    if protocol != Protocol::Halfblocks && measured.is_none() {
        let size = format!("{}x{}", font_size.width, font_size.height);
        note = Some(format!("graphics: the terminal told no cell size; assuming {size} px (images may be scaled)"));
    }
    (graphics(protocol), note)
}

/// What `--graphics kitty|sixel|iterm2|halfblocks` draws with: kitty's placeholders only
/// where its version is known to draw them.
fn forced_protocol(forced: Protocol, info: &TerminalInfo) -> Protocol {
    match forced {
        Protocol::Kitty { .. } => Protocol::Kitty { placeholders: draws_placeholders(info) },
        other => other,
    }
}

/// Why no image can reach the terminal from here, if so.
fn blocked(info: &TerminalInfo) -> Option<String> {
    let why = match info.mux {
        MuxKind::Screen => "GNU screen passes no images through".to_string(),
        MuxKind::Tmux => match info.tmux.as_ref().map(|t| &t.passthrough) {
            Some(Ok(())) => return unanswered(info),
            Some(Err(why)) => why.clone(),
            None => "tmux did not answer".to_string(),
        },
        MuxKind::Direct => return unanswered(info),
    };
    Some(format!("graphics: {why}; images are drawn with half-blocks"))
}

/// Why the terminal's own answers cannot decide, if so.
fn unanswered(info: &TerminalInfo) -> Option<String> {
    let why = match &info.replies {
        None => "stdin or stdout is not a terminal",
        Some(r) if !r.complete => "the terminal did not answer the graphics query",
        Some(_) => return None,
    };
    Some(format!("graphics: {why}; images are drawn with half-blocks (choose with --graphics)"))
}

/// The protocol the terminal's answers point to.
fn detected(info: &TerminalInfo, env: &impl Fn(&str) -> Option<String>) -> (Protocol, Option<String>) {
    let replies = info.replies.as_ref().expect("answered, or blocked() said why not");
    let name = replies.version.as_ref().map(|v| v.name.to_ascii_lowercase()).unwrap_or_default();
    let direct = info.mux == MuxKind::Direct;
    // Outside tmux, the terminal's own variables may name it when it answers no version.
    let hinted = |key: &str, value: &str| direct && env(key).is_some_and(|v| v.contains(value));
    let iterm2 = name.starts_with("iterm2")
        || name.starts_with("wezterm")
        || hinted("TERM_PROGRAM", "iTerm")
        || hinted("TERM_PROGRAM", "WezTerm")
        || hinted("LC_TERMINAL", "iTerm")
        || (direct && env("KONSOLE_VERSION").is_some_and(|v| !v.is_empty()));
    let protocol = if iterm2 {
        // WezTerm's and Konsole's kitty protocol lacks placeholders and their sixel is
        // slower; iTerm2's inline images work in all three.
        Protocol::Iterm2
    } else if replies.kitty {
        Protocol::Kitty { placeholders: draws_placeholders(info) }
    } else if replies.sixel {
        Protocol::Sixel
    } else {
        let which =
            replies.version.as_ref().map_or("the terminal".to_string(), |v| format!("{}({})", v.name, v.version));
        let note =
            format!("graphics: {which} draws no sixel, kitty or iTerm2 images; images are drawn with half-blocks");
        return (Protocol::Halfblocks, Some(note));
    };
    (protocol, None)
}

/// kitty 0.28 or later, by its XTVERSION answer; anything unknown gets direct placement,
/// which every kitty-protocol terminal draws.
fn draws_placeholders(info: &TerminalInfo) -> bool {
    let version = info.replies.as_ref().and_then(|r| r.version.as_ref());
    version.is_some_and(|v| v.is_at_least("kitty", &KITTY_PLACEHOLDERS) || v.name.eq_ignore_ascii_case("ghostty"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::terminal::query::{Replies, TermVersion};
    use crate::tui::terminal::Tmux;

    fn answered(bytes: &[u8]) -> TerminalInfo {
        TerminalInfo { replies: Some(Replies::parse(bytes)), ..TerminalInfo::default() }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn pick(mode: GraphicsMode, info: &TerminalInfo) -> (Graphics, Option<String>) {
        choose(mode, info, no_env, || None)
    }

    /// Recorded answers (see `terminal::query`'s tests for where they come from).
    const XTERM: &[u8] =
        b"\x1bP>|XTerm(379)\x1b\\\x1b]11;rgb:ffff/ffff/ffff\x1b\\\x1b[6;15;7t\x1b[?63;1;2;4;6;9;15;16;22;28c\x1b[0n";
    const XTERM_NO_SIXEL: &[u8] = b"\x1bP>|XTerm(379)\x1b\\\x1b[?64;1;2;6;9;15;16;17;18;21;22;28c\x1b[0n";
    const KITTY_026: &[u8] =
        b"\x1b_Gi=31;OK\x1b\\\x1b_Gi=32;OK\x1b\\\x1bP>|kitty(0.26.5)\x1b\\\x1b[6;18;9t\x1b[?62;c\x1b[0n";
    const KITTY_035: &[u8] = b"\x1b_Gi=31;OK\x1b\\\x1bP>|kitty(0.35.2)\x1b\\\x1b[6;18;9t\x1b[?62;c\x1b[0n";
    const WEZTERM: &[u8] =
        b"\x1b_Gi=31;OK\x1b\\\x1bP>|WezTerm 20240203-110809-5046fc22\x1b\\\x1b[6;20;10t\x1b[?65;4;6;18;22c\x1b[0n";

    #[test]
    fn graphics_xterm_vt340_draws_sixel_with_its_cell_size() {
        let (g, note) = pick(GraphicsMode::Auto, &answered(XTERM));
        assert_eq!(g.protocol, Protocol::Sixel);
        assert_eq!((g.font_size.width, g.font_size.height), (7, 15));
        assert_eq!(g.route, Route::Direct);
        assert_eq!(note, None);
    }

    #[test]
    fn graphics_kitty_before_0_28_places_images_directly() {
        let (g, note) = pick(GraphicsMode::Auto, &answered(KITTY_026));
        assert_eq!(g.protocol, Protocol::Kitty { placeholders: false });
        assert!(g.kitty_zlib);
        assert_eq!(note, None);
        let (g, _) = pick(GraphicsMode::Kitty, &answered(KITTY_026));
        assert_eq!(g.protocol, Protocol::Kitty { placeholders: false }, "--graphics kitty is gated too");
        let (g, _) = pick(GraphicsMode::Auto, &answered(KITTY_035));
        assert_eq!(g.protocol, Protocol::Kitty { placeholders: true });
        // a kitty-protocol terminal that names no version: direct placement works everywhere
        let (g, _) = pick(GraphicsMode::Auto, &answered(b"\x1b_Gi=31;OK\x1b\\\x1b[6;18;9t\x1b[?62;c\x1b[0n"));
        assert_eq!(g.protocol, Protocol::Kitty { placeholders: false });
    }

    #[test]
    fn graphics_wezterm_and_iterm_use_inline_images() {
        let (g, _) = pick(GraphicsMode::Auto, &answered(WEZTERM));
        assert_eq!(g.protocol, Protocol::Iterm2);
        let info = answered(b"\x1b[?62;22c\x1b[0n");
        let env = |key: &str| (key == "TERM_PROGRAM").then(|| "iTerm.app".to_string());
        assert_eq!(choose(GraphicsMode::Auto, &info, env, || None).0.protocol, Protocol::Iterm2);
    }

    #[test]
    fn graphics_without_an_image_protocol_say_so_once() {
        let (g, note) = pick(GraphicsMode::Auto, &answered(XTERM_NO_SIXEL));
        assert_eq!(g.protocol, Protocol::Halfblocks);
        assert!(note.unwrap().contains("XTerm(379) draws no sixel, kitty or iTerm2 images"));
        let (g, note) = pick(GraphicsMode::Auto, &answered(b""));
        assert_eq!(g.protocol, Protocol::Halfblocks);
        assert!(note.unwrap().contains("did not answer"));
        let (g, note) = pick(GraphicsMode::Auto, &TerminalInfo::default());
        assert_eq!(g.protocol, Protocol::Halfblocks);
        assert!(note.unwrap().contains("not a terminal"));
    }

    fn in_tmux(passthrough: Result<(), String>, outer: &[u8]) -> TerminalInfo {
        let tmux = Tmux::for_tests(TermVersion { name: "tmux".into(), version: "3.3a".into() }, passthrough);
        TerminalInfo { replies: Some(Replies::parse(outer)), mux: MuxKind::Tmux, tmux: Some(tmux) }
    }

    #[test]
    fn graphics_in_tmux_go_through_passthrough_or_fall_back_and_say_why() {
        let (g, note) = pick(GraphicsMode::Auto, &in_tmux(Ok(()), XTERM));
        assert_eq!(g.protocol, Protocol::Sixel);
        assert!(matches!(g.route, Route::Tmux { .. }));
        assert_eq!(note, None);

        let refused = Err("tmux 3.2a is older than 3.3, which passes images through".to_string());
        let (g, note) = pick(GraphicsMode::Auto, &in_tmux(refused, b""));
        assert_eq!(g.protocol, Protocol::Halfblocks);
        assert_eq!(
            note.unwrap(),
            "graphics: tmux 3.2a is older than 3.3, which passes images through; images are drawn with half-blocks"
        );

        let screen = TerminalInfo { mux: MuxKind::Screen, ..answered(XTERM) };
        let (g, note) = pick(GraphicsMode::Auto, &screen);
        assert_eq!(g.protocol, Protocol::Halfblocks);
        assert!(note.unwrap().contains("GNU screen"));
    }

    #[test]
    fn graphics_forced_protocols_are_kept_and_a_guessed_cell_is_noted() {
        let (g, note) = pick(GraphicsMode::Sixel, &TerminalInfo::default());
        assert_eq!(g.protocol, Protocol::Sixel);
        assert_eq!((g.font_size.width, g.font_size.height), (8, 16));
        assert!(note.unwrap().contains("assuming 8x16 px"));
        let (g, note) = choose(GraphicsMode::Sixel, &TerminalInfo::default(), no_env, || Some(FontSize::new(10, 21)));
        assert_eq!((g.font_size.width, g.font_size.height), (10, 21));
        assert_eq!(note, None);
        let (g, note) = pick(GraphicsMode::Halfblocks, &answered(XTERM));
        assert_eq!(g.protocol, Protocol::Halfblocks);
        assert_eq!(note, None);
    }
}
