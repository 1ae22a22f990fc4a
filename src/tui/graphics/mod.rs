//! Images in the terminal: sixel, kitty, iTerm2 or unicode half-blocks, chosen once at startup.
//!
//! The lab shows latents, predicted x0 and decoded images while they change every step, over SSH
//! and inside tmux, so the layer is built around four constraints.
//!
//! **One question, asked inside the lab's own terminal state.** [`crate::tui::terminal`] enters
//! raw mode and the alternate screen, then asks the terminal what it draws ([`detect`] turns the
//! answers into a [`Graphics`]). Fallbacks to half-blocks say why, once, on the status line.
//!
//! **Encoding off the UI thread, without blinking.** An [`ImageSlot`] is one image pane.
//! [`ImageSlot::set`] replaces its image; [`ImageSlot::render`] draws the newest finished encoding
//! centred in the pane and, when the image or the pane size changed, hands a resize+encode job to
//! the slot's worker thread (a full-pane sixel takes tens of milliseconds to encode). The previous
//! encoding stays on screen until the next is ready, so a preview replaced every denoising step
//! never blinks. Images are scaled to fill the pane whatever their size, so a 64x64 latent grows
//! with the pane like the 512x512 decode does.
//!
//! **Placed images never cover text that should win.** Sixel, iTerm2 and directly placed kitty
//! images are pixels the terminal keeps apart from the cells ([`encode`]): re-sent every step,
//! they would paint over a popup. So a frame first names the areas that popups, fields and
//! dialogs take ([`Frame::hidden_under`]); a placed image that touches one is not drawn, and
//! when an image leaves the screen or a popup closes, the slot's owner clears what the terminal
//! kept ([`crate::tui::images`]). Half-blocks and kitty's unicode placeholders are cells, which
//! the popup simply replaces.
//!
//! **tmux and SSH.** Inside tmux (3.3 or later, `allow-passthrough` on) every image sequence goes
//! through tmux's passthrough envelope with its escapes doubled and its own absolute position
//! ([`Route::Tmux`]), since tmux forwards it without moving the outer cursor. Kitty images are
//! always sent within the escape sequence (`t=d`), never as a file or shared memory, so they work
//! over SSH, and zlib-compressed where the terminal inflates them.
//!
//! [`print_image`] draws one image below the shell prompt for `sdlab generate --show`.

pub mod detect;
mod encode;
mod slot;

use std::fmt;
use std::io::{self, IsTerminal};
use std::str::FromStr;

use anyhow::{bail, Context};
use image::{DynamicImage, RgbImage};
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::layout::{Position, Rect, Size};
use ratatui::{Terminal, TerminalOptions, Viewport};
use ratatui_image::FontSize;

pub use encode::kitty_delete;
pub use slot::{Frame, ImageSlot};

use super::terminal::{self, TerminalInfo};
use encode::{EncodeJob, Encoded};

/// `--graphics`: how images reach the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphicsMode {
    /// Whatever the terminal answers to the startup query; half-blocks if it answers nothing.
    Auto,
    Sixel,
    Kitty,
    Iterm2,
    Halfblocks,
}

impl GraphicsMode {
    const NAMES: [(GraphicsMode, &'static str); 5] = [
        (GraphicsMode::Auto, "auto"),
        (GraphicsMode::Sixel, "sixel"),
        (GraphicsMode::Kitty, "kitty"),
        (GraphicsMode::Iterm2, "iterm2"),
        (GraphicsMode::Halfblocks, "halfblocks"),
    ];

    /// The protocol this mode forces, or `None` to keep the detected one (kitty's
    /// placeholders are decided by its version, see [`detect`]).
    fn forced(self) -> Option<Protocol> {
        match self {
            GraphicsMode::Auto => None,
            GraphicsMode::Sixel => Some(Protocol::Sixel),
            GraphicsMode::Kitty => Some(Protocol::Kitty { placeholders: false }),
            GraphicsMode::Iterm2 => Some(Protocol::Iterm2),
            GraphicsMode::Halfblocks => Some(Protocol::Halfblocks),
        }
    }
}

impl fmt::Display for GraphicsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::NAMES.iter().find(|(mode, _)| mode == self).map_or("", |(_, name)| name);
        f.write_str(name)
    }
}

impl FromStr for GraphicsMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match Self::NAMES.iter().find(|(_, name)| name.eq_ignore_ascii_case(s)) {
            Some((mode, _)) => Ok(*mode),
            None => bail!("--graphics {s}: expected auto, sixel, kitty, iterm2 or halfblocks"),
        }
    }
}

/// The image protocols sdlab draws with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Halfblocks,
    Sixel,
    /// kitty's graphics protocol: with unicode placeholders (kitty 0.28 and later), or
    /// placed at the cursor and deleted by id.
    Kitty {
        placeholders: bool,
    },
    Iterm2,
}

impl Protocol {
    /// The name `--graphics` uses, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Halfblocks => "halfblocks",
            Protocol::Sixel => "sixel",
            Protocol::Kitty { placeholders: true } => "kitty (unicode placeholders)",
            Protocol::Kitty { placeholders: false } => "kitty (placed by id)",
            Protocol::Iterm2 => "iterm2",
        }
    }
}

/// How an image sequence reaches the terminal that draws it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Direct,
    /// Through tmux's passthrough; `origin` is the pane's top-left cell on the outer screen.
    Tmux {
        origin: (u16, u16),
    },
}

/// Where the cell size came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellSource {
    /// The terminal's answer to `CSI 16 t`.
    Terminal,
    /// The window's size in pixels over its size in cells (`TIOCGWINSZ`).
    Window,
    Assumed,
}

/// How images are drawn, as decided at startup.
#[derive(Clone, Copy, Debug)]
pub struct Graphics {
    pub protocol: Protocol,
    /// A cell's size in pixels: what maps image pixels onto cells.
    pub font_size: FontSize,
    pub cell_source: CellSource,
    pub route: Route,
    /// The terminal inflates zlib-compressed kitty images (`o=z`).
    pub kitty_zlib: bool,
}

impl Graphics {
    /// Drawing with `protocol` straight to a terminal whose cells are `font_size`.
    pub fn new(protocol: Protocol, font_size: FontSize) -> Self {
        Self { protocol, font_size, cell_source: CellSource::Assumed, route: Route::Direct, kitty_zlib: false }
    }

    /// One line on how images are drawn and why, for the key map (`?`): the first thing
    /// to read when images look wrong.
    pub fn describe(&self, info: &TerminalInfo) -> String {
        let cell = match self.cell_source {
            CellSource::Terminal => "told",
            CellSource::Window => "from the window",
            CellSource::Assumed => "assumed",
        };
        let via = match (&self.route, &info.tmux) {
            (Route::Tmux { .. }, Some(tmux)) => {
                format!(" via tmux {}", tmux.version.as_ref().map_or("", |v| v.version.as_str()))
            }
            _ => String::new(),
        };
        let terminal = match info.replies.as_ref() {
            None => "no terminal".to_string(),
            Some(r) if !r.complete => "no answer".to_string(),
            Some(r) => r.version.as_ref().map_or("no version".into(), |v| format!("{}({})", v.name, v.version)),
        };
        let (w, h) = (self.font_size.width, self.font_size.height);
        format!("images: {}{via} · cell {w}x{h} px ({cell}) · {terminal}", self.protocol.name())
    }

    /// Half-blocks with the assumed 8x16 px cell: what needs no terminal at all.
    pub fn halfblocks() -> Self {
        Self::new(Protocol::Halfblocks, detect::FALLBACK_FONT_SIZE)
    }

    /// What to send once before the UI draws: sixel display mode off (`CSI ? 80 l`), so every
    /// image lands at the cursor, in its pane, rather than in the screen's top-left corner
    /// (xterm's `sixelScrolling: false` turns that mode on).
    pub fn prepare(&self) -> String {
        if self.protocol != Protocol::Sixel {
            return String::new();
        }
        match self.route {
            Route::Direct => "\x1b[?80l".into(),
            Route::Tmux { .. } => terminal::mux::passthrough("\x1b[?80l"),
        }
    }
}

/// Decides how images are drawn from what the terminal told and `--graphics`; the note,
/// if any, says why images fall back or what was assumed.
pub fn setup(mode: GraphicsMode, info: &TerminalInfo) -> (Graphics, Option<String>) {
    detect::choose(mode, info, |key| std::env::var(key).ok(), font_size_from_window)
}

/// The cell size from the window's size in pixels (`TIOCGWINSZ`), which many terminals fill in
/// even when they ignore the escape-sequence query (tmux fills it in for its panes).
fn font_size_from_window() -> Option<FontSize> {
    let size = crossterm::terminal::window_size().ok()?;
    if size.columns == 0 || size.rows == 0 {
        return None;
    }
    let font = FontSize::new(size.width / size.columns, size.height / size.rows);
    (font.width > 0 && font.height > 0).then_some(font)
}

/// A random id, so that two programs showing kitty images in one terminal do not overwrite each
/// other's; std's hasher keys are the randomness at hand.
fn random_kitty_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new().build_hasher().finish();
    // Id 0 means "no id" to kitty; placeholders carry the id in a 24-bit colour plus one byte.
    (bits as u32).max(1)
}

/// Prints one image below the cursor, outside any full-screen UI (`sdlab generate --show`), at
/// most `max_cols` x `max_rows` cells and never larger than the terminal.
///
/// Asks the terminal like the lab does and prints its note, if any, to stderr.
pub fn print_image(image: &RgbImage, mode: GraphicsMode, max_cols: u16, max_rows: u16) -> anyhow::Result<()> {
    let stdout = io::stdout();
    if !stdout.is_terminal() {
        bail!("--show needs a terminal on stdout");
    }
    let info = terminal::ask_outside_ui().context("asking the terminal what it draws")?;
    let (graphics, note) = setup(mode, &info);
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let printed = (|| {
        let (cols, rows) = crossterm::terminal::size().context("reading the terminal size")?;
        // One row stays free under the image for the cursor (see `draw_inline`).
        let bounds = Size::new(max_cols.min(cols), max_rows.min(rows.saturating_sub(1)));
        let job = EncodeJob {
            image: DynamicImage::ImageRgb8(image.clone()),
            target: bounds,
            graphics,
            kitty_id: random_kitty_id(),
        };
        let mut encoded = job.run().map_err(anyhow::Error::msg)?;
        encoded.take_kitty_ids(random_kitty_id(), None);
        let options = TerminalOptions { viewport: Viewport::Inline(encoded.size().height + 1) };
        let mut terminal = Terminal::with_options(CrosstermBackend::new(io::stdout()), options)?;
        io::Write::write_all(terminal.backend_mut(), graphics.prepare().as_bytes())?;
        draw_inline(&mut terminal, encoded, graphics.route)
    })();
    if let Some(tmux) = &info.tmux {
        tmux.restore();
    }
    printed
}

/// Draws `encoded` at the top of an inline viewport one row taller than the image and leaves the
/// cursor on that last row, so the shell continues below the image and a sixel that ends on the
/// screen's last row cannot scroll it out from under ratatui.
fn draw_inline<B: Backend>(terminal: &mut Terminal<B>, mut encoded: Encoded, route: Route) -> anyhow::Result<()>
where
    B::Error: Send + Sync + 'static,
{
    terminal.draw(|frame| {
        let area = frame.area();
        let size = encoded.size();
        let rect = Rect::new(area.x, area.y, size.width.min(area.width), size.height.min(area.height));
        encoded.render(rect, frame.buffer_mut(), route, true);
        let below = area.y + size.height.min(area.height.saturating_sub(1));
        frame.set_cursor_position(Position::new(area.x, below));
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    /// Every cell's symbol in order: where the escape sequences are.
    pub(super) fn symbols(buf: &Buffer) -> String {
        buf.content().iter().map(|cell| cell.symbol()).collect()
    }

    /// Drawing with `protocol` on 8x16 px cells.
    pub(super) fn graphics(protocol: Protocol) -> Graphics {
        Graphics::new(protocol, FontSize::new(8, 16))
    }

    /// A 32x32 gradient, red growing rightwards and green downwards, like a small latent preview.
    pub(super) fn gradient() -> RgbImage {
        RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 128]))
    }

    fn encoded(graphics: Graphics, target: Size) -> Encoded {
        let job = EncodeJob { image: DynamicImage::ImageRgb8(gradient()), target, graphics, kitty_id: 42 };
        job.run().expect("encoding succeeds")
    }

    fn draw(graphics: Graphics, area: Rect) -> Buffer {
        let mut buf = Buffer::empty(area);
        let mut image = encoded(graphics, area.as_size());
        image.take_kitty_ids(42, None);
        let size = image.size();
        image.render(Rect::new(area.x, area.y, size.width, size.height), &mut buf, graphics.route, true);
        buf
    }

    /// The text between the first `start` and the next `end` after it.
    fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
        let from = text.find(start)? + start.len();
        let len = text[from..].find(end)?;
        Some(&text[from..from + len])
    }

    #[test]
    fn graphics_mode_parses_and_prints_every_choice() {
        for name in ["auto", "sixel", "kitty", "iterm2", "halfblocks"] {
            let mode: GraphicsMode = name.parse().unwrap();
            assert_eq!(mode.to_string(), name);
        }
        assert_eq!("Kitty".parse::<GraphicsMode>().unwrap(), GraphicsMode::Kitty);
        let err = "png".parse::<GraphicsMode>().unwrap_err().to_string();
        assert_eq!(err, "--graphics png: expected auto, sixel, kitty, iterm2 or halfblocks");
    }

    #[test]
    fn graphics_halfblocks_fill_the_pane_with_half_blocks_in_the_image_colours() {
        // 32x32 px into 20x10 cells of 8x16 px: scaled up to 160x160 px, exactly the pane.
        let buf = draw(graphics(Protocol::Halfblocks), Rect::new(0, 0, 20, 10));
        let half_blocks = buf.content().iter().filter(|c| matches!(c.symbol(), "▀" | "▄")).count();
        assert!(half_blocks >= 150, "only {half_blocks} of 200 cells are half blocks");
        let rgb = |c: ratatui::style::Color| match c {
            ratatui::style::Color::Rgb(r, g, b) => (r, g, b),
            other => panic!("expected an RGB colour, got {other:?}"),
        };
        let (r, g, b) = rgb(buf[(0, 0)].fg);
        assert!(r < 40 && g < 40 && b == 128, "top-left is dark: {:?}", (r, g, b));
        let (r, g, b) = rgb(buf[(19, 9)].fg);
        assert!(r > 200 && g > 200 && b == 128, "bottom-right is bright: {:?}", (r, g, b));
    }

    #[test]
    fn graphics_sixel_is_one_dcs_sequence_in_the_top_left_cell() {
        let buf = draw(graphics(Protocol::Sixel), Rect::new(0, 0, 20, 10));
        let text = symbols(&buf);
        let body = between(&text, "\x1bP", "\x1b\\").expect("a DCS sequence");
        assert!(body.contains('q'), "DCS is not a sixel: {:?}", &body[..body.len().min(40)]);
        assert!(buf[(0, 0)].symbol().starts_with("\x1b7"), "the cursor is saved around the image");
        assert!(buf[(0, 0)].symbol().ends_with("\x1b8\x1b[C"), "and put back one cell on");
        assert!(!text.contains("tmux"));
        // The rest of the image is left to the terminal.
        assert!(buf.content()[1..].iter().all(|c| c.diff_option == ratatui::buffer::CellDiffOption::Skip));
    }

    #[test]
    fn graphics_kitty_placeholders_transmit_directly_in_base64() {
        let buf = draw(graphics(Protocol::Kitty { placeholders: true }), Rect::new(0, 0, 20, 10));
        let text = symbols(&buf);
        let control = between(&text, "\x1b_G", ";").expect("a kitty graphics command");
        assert!(control.contains("t=d"), "not a direct transmission: {control}");
        assert!(control.contains("a=T") && control.contains("U=1"), "{control}");
        assert!(!text.contains("t=f") && !text.contains("t=s") && !text.contains("t=t"));
        // Every cell of the pane is a unicode placeholder pointing at the image.
        let placeholders = buf.content().iter().filter(|c| c.symbol().contains('\u{10EEEE}')).count();
        assert_eq!(placeholders, 200);
    }

    #[test]
    fn graphics_kitty_without_placeholders_places_one_image_at_the_top_left_cell() {
        let buf = draw(graphics(Protocol::Kitty { placeholders: false }), Rect::new(0, 0, 20, 10));
        let text = symbols(&buf);
        assert!(!text.contains('\u{10EEEE}') && !text.contains("U=1"));
        let control = between(&text, "\x1b_G", ";").expect("a kitty graphics command");
        assert!(control.contains("a=T") && control.contains("i=42") && control.contains("c=20,r=10"), "{control}");
        assert!(buf.content()[1..].iter().all(|c| c.diff_option == ratatui::buffer::CellDiffOption::Skip));
    }

    #[test]
    fn graphics_iterm2_sends_an_inline_file() {
        let text = symbols(&draw(graphics(Protocol::Iterm2), Rect::new(0, 0, 20, 10)));
        let args = between(&text, "\x1b]1337;File=", ":").expect("an iTerm2 file sequence");
        assert!(args.contains("inline=1"), "{args}");
        assert!(args.contains("width=160px") && args.contains("height=160px"), "{args}");
    }

    /// What tmux forwards of the envelopes in `text`: their contents, escapes undoubled;
    /// and what it keeps for the pane. An undoubled ESC inside ends an envelope early, and
    /// the rest of the image then reaches the pane as text: the bug this layer fixes.
    fn forwarded_by_tmux(text: &str) -> (String, String) {
        let (mut forwarded, mut kept) = (String::new(), String::new());
        let mut rest = text;
        while let Some(start) = rest.find("\x1bPtmux;") {
            kept.push_str(&rest[..start]);
            let body = &rest[start + "\x1bPtmux;".len()..];
            let mut chars = body.char_indices();
            let mut end = body.len();
            while let Some((i, c)) = chars.next() {
                if c == '\x1b' {
                    match chars.next() {
                        Some((_, '\x1b')) => forwarded.push('\x1b'),
                        _ => {
                            end = i + 2;
                            break;
                        }
                    }
                } else {
                    forwarded.push(c);
                }
            }
            rest = &body[end.min(body.len())..];
        }
        kept.push_str(rest);
        (forwarded, kept)
    }

    #[test]
    fn graphics_tmux_forwards_whole_images_at_the_pane_cell() {
        let mut tmux = graphics(Protocol::Sixel);
        tmux.route = Route::Tmux { origin: (3, 1) };
        let buf = draw(tmux, Rect::new(5, 2, 20, 10));
        let (forwarded, kept) = forwarded_by_tmux(buf[(5, 2)].symbol());
        assert!(forwarded.starts_with("\x1b7\x1b[4;9H"), "placed at the pane's cell: {:?}", &forwarded[..12]);
        assert!(forwarded.contains("\x1bP") && forwarded.ends_with("\x1b\\\x1b8"), "the sixel arrives whole");
        assert_eq!(kept, "\x1b[C", "tmux itself only moves the cursor on");

        let mut tmux = graphics(Protocol::Kitty { placeholders: true });
        tmux.route = Route::Tmux { origin: (0, 0) };
        let text = symbols(&draw(tmux, Rect::new(0, 0, 20, 10)));
        assert!(text.starts_with("\x1bPtmux;\x1b\x1b_G"), "{:?}", &text[..20]);
        let (forwarded, _) = forwarded_by_tmux(&text);
        assert!(forwarded.contains("a=T") && forwarded.ends_with("\x1b\\"));
    }

    #[test]
    fn graphics_tiny_areas_draw_nothing_and_do_not_panic() {
        let job = EncodeJob {
            image: DynamicImage::ImageRgb8(gradient()),
            target: Size::new(0, 0),
            graphics: graphics(Protocol::Sixel),
            kitty_id: 1,
        };
        assert!(job.run().is_err());
        for protocol in
            [Protocol::Halfblocks, Protocol::Sixel, Protocol::Kitty { placeholders: true }, Protocol::Iterm2]
        {
            let buf = draw(graphics(protocol), Rect::new(0, 0, 1, 1));
            assert_ne!(buf[(0, 0)].symbol(), " ", "{protocol:?} draws into one cell");
        }
    }

    #[test]
    fn graphics_setup_keeps_a_forced_protocol_without_a_terminal() {
        for (mode, protocol) in [
            (GraphicsMode::Sixel, Protocol::Sixel),
            (GraphicsMode::Kitty, Protocol::Kitty { placeholders: false }),
            (GraphicsMode::Iterm2, Protocol::Iterm2),
            (GraphicsMode::Halfblocks, Protocol::Halfblocks),
        ] {
            assert_eq!(setup(mode, &TerminalInfo::default()).0.protocol, protocol, "{mode}");
        }
        assert_eq!(setup(GraphicsMode::Halfblocks, &TerminalInfo::default()).1, None);
    }

    #[test]
    fn graphics_prepare_turns_sixel_display_mode_off_through_tmux_too() {
        assert_eq!(graphics(Protocol::Sixel).prepare(), "\x1b[?80l");
        assert_eq!(graphics(Protocol::Halfblocks).prepare(), "");
        let mut tmux = graphics(Protocol::Sixel);
        tmux.route = Route::Tmux { origin: (0, 0) };
        assert_eq!(tmux.prepare(), "\x1bPtmux;\x1b\x1b[?80l\x1b\\");
    }

    #[test]
    fn graphics_print_draws_the_image_inline_and_parks_the_cursor_below_it() {
        let mut terminal =
            Terminal::with_options(TestBackend::new(40, 20), TerminalOptions { viewport: Viewport::Inline(11) })
                .unwrap();
        let image = encoded(graphics(Protocol::Kitty { placeholders: true }), Size::new(40, 10));
        assert_eq!(image.size(), Size::new(20, 10));
        draw_inline(&mut terminal, image, Route::Direct).unwrap();
        let buf = terminal.backend().buffer().clone();
        assert!(symbols(&buf).contains("\x1b_G"));
        let placeholders = buf.content().iter().filter(|c| c.symbol().contains('\u{10EEEE}')).count();
        assert_eq!(placeholders, 200);
        assert_eq!(terminal.get_cursor_position().unwrap(), Position::new(0, 10));
    }
}
