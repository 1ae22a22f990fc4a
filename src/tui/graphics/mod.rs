//! Images in the terminal: sixel, kitty, iTerm2 or unicode halfblocks, chosen once at startup.
//!
//! The lab shows latents, predicted x0 and decoded images while they change every step, over SSH
//! and inside tmux, so the layer is built around three constraints.
//!
//! **One query, bounded.** [`make_picker`] asks the terminal once, before the UI owns stdin, for its
//! graphics protocol and its cell size in pixels (what maps image pixels onto cells). The query
//! gives up after [`QUERY_TIMEOUT`], so a terminal that never answers (a pipe, some tmux or SSH
//! setups) costs a second, not a hang. `--graphics` ([`GraphicsMode`]) overrides the detected
//! protocol; a failed query falls back to halfblocks with a measured or assumed cell size and
//! returns a note for the caller to show instead of failing.
//!
//! **Encoding off the UI thread, without blinking.** An [`ImageSlot`] is one image pane.
//! [`ImageSlot::set`] replaces its image; [`ImageSlot::render`] draws the newest finished encoding
//! centred in the pane and, when the image or the pane size changed, hands a resize+encode job to
//! the slot's worker thread (a full-pane sixel takes tens of milliseconds to encode). The app calls
//! [`ImageSlot::poll`] each loop turn to pick finished encodings up; the waker given to
//! [`ImageSlot::with_waker`] wakes an app that blocks on its own event channel. The previous
//! encoding stays on screen until the next is ready, so a preview replaced every denoising step
//! never blinks: that is why the slot drives ratatui-image's [`StatefulProtocol`] itself rather
//! than through `ratatui_image::thread::ThreadProtocol`, which shows nothing while a job is out.
//! Images are scaled to fill the pane whatever their size (`Resize::Scale`), so a 64x64 latent
//! grows with the pane like the 512x512 decode does.
//!
//! ```no_run
//! # fn demo(terminal: &mut ratatui::DefaultTerminal, image: image::RgbImage) -> anyhow::Result<()> {
//! use sdlab::tui::graphics::{make_picker, GraphicsMode, ImageSlot};
//! let (picker, note) = make_picker(GraphicsMode::Auto); // before entering raw mode / the alternate screen
//! let mut slot = ImageSlot::new(&picker);
//! slot.set(image); // whenever the pipeline sends a new image
//! loop {
//!     slot.poll(); // pick up finished encodings (returns true when one arrived: redraw)
//!     terminal.draw(|frame| slot.render(frame.area(), frame.buffer_mut()))?;
//!     # break;
//! }
//! # Ok(()) }
//! ```
//!
//! **Stale cells.** ratatui-image puts the whole escape sequence into the symbol of the image's
//! top-left buffer cell and marks every other cell of the image as skipped by ratatui's diff. With
//! sixel and iTerm2 the image is then pixels the terminal drew, not cells ratatui knows: a popup
//! drawn over part of it and then closed leaves its text behind, unless the popup happened to
//! cover that top-left cell (which makes ratatui re-send the image). Kitty (unicode placeholders)
//! and halfblocks are ordinary cells and need nothing. So when an overlay closes the app calls
//! `terminal.clear()` before the next draw if [`needs_clear_after_overlay`] says so; ratatui's own
//! resize handling already clears, and an image that shrinks or moves is fine because the cells it
//! leaves are no longer skipped and get rewritten.
//!
//! **tmux and SSH.** ratatui-image decides it is inside tmux from `TERM` (`tmux*`) or
//! `TERM_PROGRAM=tmux`, runs `tmux set -p allow-passthrough on` for the pane, and wraps the query
//! and every image sequence in `ESC Ptmux; … ESC \` with the inner escapes doubled. Kitty images
//! are sent with direct transmission (`t=d`, base64 in the escape sequence), never as a file or
//! shared memory, so they work over SSH; over SSH the startup query also probes for zlib-compressed
//! transmission, which cuts the bytes sent per image.
//!
//! [`print_image`] draws one image below the shell prompt for `sdlab generate --show`.

mod slot;

use std::env;
use std::fmt;
use std::io::{self, IsTerminal};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use image::{imageops::FilterType, DynamicImage, RgbImage};
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::buffer::Buffer;
use ratatui::layout::{Position, Rect, Size};
use ratatui::{Terminal, TerminalOptions, Viewport};
use ratatui_image::picker::{cap_parser::QueryStdioOptions, Capability, Picker, ProtocolType};
use ratatui_image::protocol::halfblocks::Halfblocks;
use ratatui_image::protocol::iterm2::Iterm2;
use ratatui_image::protocol::kitty::StatefulKitty;
use ratatui_image::protocol::sixel::Sixel;
use ratatui_image::protocol::{StatefulProtocol, StatefulProtocolType};
use ratatui_image::{FontSize, Resize, ResizeEncodeRender};

pub use slot::ImageSlot;

/// How long the startup query waits. Every terminal answers the status report that ends the query
/// within one round trip, so this only bounds the wait on terminals (or pipes) that answer nothing.
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(1000);

/// The cell size assumed when neither the terminal nor the window size tells one: a common font
/// with the 1:2 shape halfblocks rely on to keep the aspect ratio.
const FALLBACK_FONT_SIZE: FontSize = FontSize::new(8, 16);

/// `--graphics`: how images reach the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphicsMode {
    /// Whatever the terminal answers to the startup query; halfblocks if it answers nothing.
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

    /// The protocol this mode forces, or `None` to keep the detected one.
    fn forced_protocol(self) -> Option<ProtocolType> {
        match self {
            GraphicsMode::Auto => None,
            GraphicsMode::Sixel => Some(ProtocolType::Sixel),
            GraphicsMode::Kitty => Some(ProtocolType::Kitty),
            GraphicsMode::Iterm2 => Some(ProtocolType::Iterm2),
            GraphicsMode::Halfblocks => Some(ProtocolType::Halfblocks),
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

/// The lower-case name `--graphics` uses for a protocol, for messages.
fn protocol_name(protocol: ProtocolType) -> &'static str {
    match protocol {
        ProtocolType::Halfblocks => "halfblocks",
        ProtocolType::Sixel => "sixel",
        ProtocolType::Kitty => "kitty",
        ProtocolType::Iterm2 => "iterm2",
    }
}

/// Queries the terminal once for its graphics protocol and cell size, then applies `--graphics`.
///
/// Call it before entering raw mode and before anything reads terminal events: the query reads the
/// answers from stdin. Never fails: when the terminal does not answer it falls back (see the
/// module doc) and the second value says so, for the caller to show.
pub fn make_picker(mode: GraphicsMode) -> (Picker, Option<String>) {
    if mode == GraphicsMode::Halfblocks {
        // Halfblocks only need the cell's shape, near 1:2 in every usual font, so skip a query that
        // could time out on exactly the terminals people pick halfblocks for.
        return (picker_without_query(ProtocolType::Halfblocks, font_size_from_window()), None);
    }
    resolve_picker(mode, query_terminal(), font_size_from_window)
}

/// The terminal's own answer, or why there is none.
fn query_terminal() -> Result<Picker, String> {
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        return Err("stdin or stdout is not a terminal".into());
    }
    let options = QueryStdioOptions {
        timeout: QUERY_TIMEOUT,
        kitty_compression: env::var_os("SSH_CONNECTION").is_some() || env::var_os("SSH_TTY").is_some(),
        ..QueryStdioOptions::default()
    };
    let outcome = match Picker::from_query_stdio_with_options(options) {
        // Without an answer ratatui-image returns a guessed picker rather than an error; its empty
        // capability list is the only sign of that.
        Ok(picker) if picker.capabilities().is_empty() => Err("the terminal did not answer the graphics query".into()),
        Ok(picker) => Ok(picker),
        Err(err) => Err(format!("the graphics query failed ({err})")),
    };
    if outcome.is_err() {
        release_query_reader();
    }
    outcome
}

/// After a timed-out query, ratatui-image's reader thread is still blocked reading stdin and
/// would swallow the user's first keystroke (seen in tmux without an outer client to answer the
/// passthrough query). A plain Device Status Report, which every terminal and tmux itself
/// answers, gives that thread the bytes it waits for; it then finds its receiver gone and ends.
fn release_query_reader() {
    use std::io::Write;
    let mut out = io::stdout();
    if out.write_all(b"\x1b[5n").and_then(|()| out.flush()).is_ok() {
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Applies `--graphics` to a query's outcome; split from [`make_picker`] so tests need no terminal.
fn resolve_picker(
    mode: GraphicsMode,
    queried: Result<Picker, String>,
    window_font_size: impl FnOnce() -> Option<FontSize>,
) -> (Picker, Option<String>) {
    match queried {
        Ok(mut picker) => {
            if let Some(protocol) = mode.forced_protocol() {
                picker.set_protocol_type(protocol);
            }
            (picker, None)
        }
        Err(reason) => {
            let measured = window_font_size();
            let protocol = mode.forced_protocol().unwrap_or(ProtocolType::Halfblocks);
            let picker = picker_without_query(protocol, measured);
            let font = picker.font_size();
            let source = if measured.is_some() { "from the window size" } else { "assumed" };
            let advice = if mode == GraphicsMode::Auto { "; choose one with --graphics" } else { "" };
            let note = format!(
                "graphics: {reason}; drawing images with {} and a {}x{} px cell ({source}){advice}",
                protocol_name(protocol),
                font.width,
                font.height
            );
            (picker, Some(note))
        }
    }
}

/// A picker that asks the terminal nothing: for a failed query, for `--graphics halfblocks`,
/// and for tests that render into a buffer.
pub fn picker_without_query(protocol: ProtocolType, font_size: Option<FontSize>) -> Picker {
    // `from_fontsize` is deprecated in favour of the query, but it is the only way to give a picker
    // the cell size we measured or assumed when the query has nothing to say.
    #[allow(deprecated)]
    let mut picker = Picker::from_fontsize(font_size.unwrap_or(FALLBACK_FONT_SIZE));
    picker.set_protocol_type(protocol);
    picker
}

/// The cell size from the window's size in pixels (`TIOCGWINSZ`), which many terminals fill in
/// even when they ignore the escape-sequence query.
fn font_size_from_window() -> Option<FontSize> {
    let size = crossterm::terminal::window_size().ok()?;
    if size.columns == 0 || size.rows == 0 {
        return None;
    }
    let font = FontSize::new(size.width / size.columns, size.height / size.rows);
    (font.width > 0 && font.height > 0).then_some(font)
}

/// Puts the terminal in the mode images need, once before the UI starts. For sixel that is
/// DEC's sixel scrolling mode (`CSI ? 80 l`): with sixel display mode on (xterm's
/// `sixelScrolling: false` turns it on) every image lands in the screen's top-left corner
/// instead of at the cursor, i.e. in its pane. Terminals already in that mode ignore it.
pub fn prepare_terminal(protocol: ProtocolType, out: &mut impl io::Write) -> io::Result<()> {
    if protocol == ProtocolType::Sixel {
        out.write_all(b"\x1b[?80l")?;
        out.flush()?;
    }
    Ok(())
}

/// Whether text drawn over an image with this protocol stays on screen after it is gone, so that
/// closing an overlay (the help popup) must be followed by `terminal.clear()` before the next draw.
pub fn needs_clear_after_overlay(protocol: ProtocolType) -> bool {
    matches!(protocol, ProtocolType::Sixel | ProtocolType::Iterm2)
}

/// What every encoding made for one pane shares: protocol, cell size and tmux wrapping.
#[derive(Clone, Debug)]
struct Encoding {
    protocol: ProtocolType,
    font_size: FontSize,
    tmux: bool,
    kitty_compression: bool,
    /// Kitty keeps transmitted images in terminal memory by id; one id per pane makes each new
    /// image replace the last instead of piling up a denoising run's worth of frames.
    kitty_id: u32,
}

impl Encoding {
    fn new(picker: &Picker) -> Self {
        Self {
            protocol: picker.protocol_type(),
            font_size: picker.font_size(),
            tmux: picker.tmux_detected(),
            kitty_compression: picker.capabilities().contains(&Capability::KittyCompression),
            kitty_id: random_kitty_id(),
        }
    }

    /// Prepares `image` for encoding to fill (keeping its aspect ratio) `target` cells.
    fn job(&self, image: &DynamicImage, target: Size) -> EncodeJob {
        let kind = match self.protocol {
            ProtocolType::Halfblocks => StatefulProtocolType::Halfblocks(Halfblocks::default()),
            ProtocolType::Sixel => StatefulProtocolType::Sixel(Sixel { is_tmux: self.tmux, ..Sixel::default() }),
            ProtocolType::Kitty => {
                StatefulProtocolType::Kitty(StatefulKitty::new(self.kitty_id, self.tmux, self.kitty_compression))
            }
            ProtocolType::Iterm2 => StatefulProtocolType::ITerm2(Iterm2 { is_tmux: self.tmux, ..Iterm2::default() }),
        };
        // Growing a latent shows its real pixels as crisp blocks; shrinking a decode needs smoothing
        // or it aliases.
        let target_px = (
            u32::from(target.width) * u32::from(self.font_size.width),
            u32::from(target.height) * u32::from(self.font_size.height),
        );
        let filter = if image.width() <= target_px.0 && image.height() <= target_px.1 {
            FilterType::Nearest
        } else {
            FilterType::Triangle
        };
        EncodeJob {
            protocol: StatefulProtocol::new(image.clone(), self.font_size, None, kind),
            resize: Resize::Scale(Some(filter)),
            target,
        }
    }
}

/// A random id, so that two programs showing kitty images in one terminal do not overwrite each
/// other's; std's hasher keys are the randomness at hand.
fn random_kitty_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new().build_hasher().finish();
    // Id 0 means "no id" to kitty.
    (bits as u32).max(1)
}

/// One resize+encode, runnable on any thread.
struct EncodeJob {
    protocol: StatefulProtocol,
    resize: Resize,
    target: Size,
}

impl EncodeJob {
    fn run(mut self) -> Result<Encoded, String> {
        if self.target.width == 0 || self.target.height == 0 {
            return Err("no room to draw the image".into());
        }
        let size = self.protocol.size_for(self.resize.clone(), self.target);
        self.protocol.resize_encode(&self.resize, size);
        match self.protocol.last_encoding_result() {
            Some(Err(err)) => Err(format!("could not encode the image: {err}")),
            _ => Ok(Encoded { protocol: self.protocol, size }),
        }
    }
}

/// An image encoded for a terminal, `size` cells large.
struct Encoded {
    protocol: StatefulProtocol,
    size: Size,
}

impl Encoded {
    /// Draws the image at the top-left of `area` or, with `centre`, in its middle; clipped to `area`.
    fn render(&mut self, area: Rect, buf: &mut Buffer, centre: bool) {
        let area = area.intersection(buf.area);
        let width = self.size.width.min(area.width);
        let height = self.size.height.min(area.height);
        if width == 0 || height == 0 {
            return;
        }
        let (x, y) = if centre {
            (area.x + (area.width - width) / 2, area.y + (area.height - height) / 2)
        } else {
            (area.x, area.y)
        };
        self.protocol.render(Rect::new(x, y, width, height), buf);
    }
}

/// Prints one image below the cursor, outside any full-screen UI (`sdlab generate --show`), at
/// most `max_cols` x `max_rows` cells and never larger than the terminal.
///
/// Queries the terminal like [`make_picker`] and prints its note, if any, to stderr.
pub fn print_image(image: &RgbImage, mode: GraphicsMode, max_cols: u16, max_rows: u16) -> anyhow::Result<()> {
    let stdout = io::stdout();
    if !stdout.is_terminal() {
        bail!("--show needs a terminal on stdout");
    }
    let (picker, note) = make_picker(mode);
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let (cols, rows) = crossterm::terminal::size().context("reading the terminal size")?;
    // One row stays free under the image for the cursor (see `draw_inline`).
    let bounds = Size::new(max_cols.min(cols), max_rows.min(rows.saturating_sub(1)));
    let encoded = Encoding::new(&picker)
        .job(&DynamicImage::ImageRgb8(image.clone()), bounds)
        .run()
        .map_err(anyhow::Error::msg)?;
    let options = TerminalOptions { viewport: Viewport::Inline(encoded.size.height + 1) };
    let mut terminal = Terminal::with_options(CrosstermBackend::new(stdout), options)?;
    draw_inline(&mut terminal, encoded)
}

/// Draws `encoded` at the top of an inline viewport one row taller than the image and leaves the
/// cursor on that last row, so the shell continues below the image and a sixel that ends on the
/// screen's last row cannot scroll it out from under ratatui.
fn draw_inline<B: Backend>(terminal: &mut Terminal<B>, mut encoded: Encoded) -> anyhow::Result<()>
where
    B::Error: Send + Sync + 'static,
{
    terminal.draw(|frame| {
        let area = frame.area();
        encoded.render(area, frame.buffer_mut(), false);
        let below = area.y + encoded.size.height.min(area.height.saturating_sub(1));
        frame.set_cursor_position(Position::new(area.x, below));
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;

    /// Every cell's symbol in order: where ratatui-image puts its escape sequences.
    pub(super) fn symbols(buf: &Buffer) -> String {
        buf.content().iter().map(|cell| cell.symbol()).collect()
    }

    /// A picker as the query would build it, without a terminal.
    pub(super) fn picker(protocol: ProtocolType) -> Picker {
        picker_without_query(protocol, Some(FontSize::new(8, 16)))
    }

    /// A 32x32 gradient, red growing rightwards and green downwards, like a small latent preview.
    pub(super) fn gradient() -> RgbImage {
        RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 128]))
    }

    fn encode(encoding: &Encoding, area: Rect) -> Buffer {
        let mut buf = Buffer::empty(area);
        let mut encoded =
            encoding.job(&DynamicImage::ImageRgb8(gradient()), area.as_size()).run().expect("encoding succeeds");
        encoded.render(area, &mut buf, true);
        buf
    }

    fn encoding(protocol: ProtocolType, tmux: bool) -> Encoding {
        Encoding { tmux, ..Encoding::new(&picker(protocol)) }
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
        let area = Rect::new(0, 0, 20, 10);
        let buf = encode(&encoding(ProtocolType::Halfblocks, false), area);
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
        let area = Rect::new(0, 0, 20, 10);
        let buf = encode(&encoding(ProtocolType::Sixel, false), area);
        let text = symbols(&buf);
        let body = between(&text, "\x1bP", "\x1b\\").expect("a DCS sequence");
        assert!(body.contains('q'), "DCS is not a sixel: {:?}", &body[..body.len().min(40)]);
        assert!(buf[(0, 0)].symbol().starts_with('\x1b'));
        assert!(!text.contains("tmux"));
        // The rest of the image is left to the terminal.
        assert!(buf.content()[1..].iter().all(|c| c.diff_option == ratatui::buffer::CellDiffOption::Skip));
    }

    #[test]
    fn graphics_kitty_transmits_directly_in_base64() {
        let area = Rect::new(0, 0, 20, 10);
        let buf = encode(&encoding(ProtocolType::Kitty, false), area);
        let text = symbols(&buf);
        let control = between(&text, "\x1b_G", ";").expect("a kitty graphics command");
        assert!(control.contains("t=d"), "not a direct transmission: {control}");
        assert!(control.contains("a=T") && control.contains("U=1"), "{control}");
        assert!(!text.contains("t=f") && !text.contains("t=s") && !text.contains("t=t"));
        let payload = between(&text, "m=0;", "\x1b\\").expect("a final chunk");
        assert!(!payload.is_empty());
        assert!(payload.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)), "not base64");
        // Every cell of the pane is a unicode placeholder pointing at the image.
        let placeholders = buf.content().iter().filter(|c| c.symbol().contains('\u{10EEEE}')).count();
        assert_eq!(placeholders, 200);
    }

    #[test]
    fn graphics_iterm2_sends_an_inline_file() {
        let area = Rect::new(0, 0, 20, 10);
        let text = symbols(&encode(&encoding(ProtocolType::Iterm2, false), area));
        let args = between(&text, "\x1b]1337;File=", ":").expect("an iTerm2 file sequence");
        assert!(args.contains("inline=1"), "{args}");
        assert!(args.contains("width=160px") && args.contains("height=160px"), "{args}");
    }

    #[test]
    fn graphics_tmux_wraps_sequences_for_passthrough() {
        let area = Rect::new(0, 0, 20, 10);
        let sixel = symbols(&encode(&encoding(ProtocolType::Sixel, true), area));
        assert!(sixel.starts_with("\x1bPtmux;"), "{:?}", &sixel[..20]);
        assert!(sixel.contains("\x1b\x1bP"), "inner escapes are doubled");
        assert!(sixel.trim_end_matches(' ').ends_with("\x1b\\"));

        let kitty = symbols(&encode(&encoding(ProtocolType::Kitty, true), area));
        assert!(kitty.starts_with("\x1bPtmux;\x1b\x1b_G"), "{:?}", &kitty[..20]);
        assert_eq!(kitty.matches("\x1bPtmux;").count(), kitty.matches("\x1b\x1b\\\x1b\\").count());

        let iterm2 = symbols(&encode(&encoding(ProtocolType::Iterm2, true), area));
        assert!(iterm2.starts_with("\x1bPtmux;") && iterm2.contains("\x1b\x1b]1337;File="));
    }

    #[test]
    fn graphics_tiny_areas_draw_nothing_and_do_not_panic() {
        let job = encoding(ProtocolType::Sixel, false).job(&DynamicImage::ImageRgb8(gradient()), Size::new(0, 0));
        assert!(job.run().is_err());
        for protocol in [ProtocolType::Halfblocks, ProtocolType::Sixel, ProtocolType::Kitty, ProtocolType::Iterm2] {
            let buf = encode(&encoding(protocol, false), Rect::new(0, 0, 1, 1));
            assert_ne!(buf[(0, 0)].symbol(), " ", "{protocol:?} draws into one cell");
        }
    }

    #[test]
    fn graphics_make_picker_keeps_a_forced_protocol_without_a_terminal() {
        for (mode, protocol) in [
            (GraphicsMode::Sixel, ProtocolType::Sixel),
            (GraphicsMode::Kitty, ProtocolType::Kitty),
            (GraphicsMode::Iterm2, ProtocolType::Iterm2),
            (GraphicsMode::Halfblocks, ProtocolType::Halfblocks),
        ] {
            assert_eq!(make_picker(mode).0.protocol_type(), protocol, "{mode}");
        }
        assert_eq!(make_picker(GraphicsMode::Halfblocks).1, None);
    }

    #[test]
    fn graphics_failed_query_falls_back_to_halfblocks_and_says_so() {
        let failed = || Err("the terminal did not answer the graphics query".to_string());
        let (picker, note) = resolve_picker(GraphicsMode::Auto, failed(), || None);
        assert_eq!(picker.protocol_type(), ProtocolType::Halfblocks);
        assert_eq!((picker.font_size().width, picker.font_size().height), (8, 16));
        let note = note.expect("a note for the user");
        assert!(note.contains("did not answer") && note.contains("halfblocks") && note.contains("8x16"), "{note}");
        assert!(note.contains("--graphics"), "{note}");

        let (picker, note) = resolve_picker(GraphicsMode::Sixel, failed(), || Some(FontSize::new(10, 21)));
        assert_eq!(picker.protocol_type(), ProtocolType::Sixel);
        assert_eq!((picker.font_size().width, picker.font_size().height), (10, 21));
        assert!(note.unwrap().contains("sixel and a 10x21 px cell (from the window size)"));

        let (picker, note) = resolve_picker(GraphicsMode::Kitty, Ok(picker), || None);
        assert_eq!(picker.protocol_type(), ProtocolType::Kitty);
        assert_eq!(note, None);
    }

    #[test]
    fn graphics_only_sixel_and_iterm2_need_a_clear_after_an_overlay() {
        assert!(needs_clear_after_overlay(ProtocolType::Sixel));
        assert!(needs_clear_after_overlay(ProtocolType::Iterm2));
        assert!(!needs_clear_after_overlay(ProtocolType::Kitty));
        assert!(!needs_clear_after_overlay(ProtocolType::Halfblocks));
    }

    #[test]
    fn graphics_print_draws_the_image_inline_and_parks_the_cursor_below_it() {
        let mut terminal =
            Terminal::with_options(TestBackend::new(40, 20), TerminalOptions { viewport: Viewport::Inline(11) })
                .unwrap();
        let encoded = encoding(ProtocolType::Kitty, false)
            .job(&DynamicImage::ImageRgb8(gradient()), Size::new(40, 10))
            .run()
            .unwrap();
        assert_eq!(encoded.size, Size::new(20, 10));
        draw_inline(&mut terminal, encoded).unwrap();
        let buf = terminal.backend().buffer().clone();
        assert!(symbols(&buf).contains("\x1b_G"));
        let placeholders = buf.content().iter().filter(|c| c.symbol().contains('\u{10EEEE}')).count();
        assert_eq!(placeholders, 200);
        assert_eq!(terminal.get_cursor_position().unwrap(), Position::new(0, 10));
    }
}
