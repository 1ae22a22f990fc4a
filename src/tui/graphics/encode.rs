//! A picture made into what the terminal draws, for a pane of a given size.
//!
//! Two kinds come out. **Cells** (half-blocks, kitty's unicode placeholders) are
//! ordinary buffer cells: whatever is drawn over them replaces them, like text.
//! **Placed** images (sixel, iTerm2, kitty placed directly) are one escape sequence
//! written at the image's top-left cell, and pixels the terminal keeps until something
//! erases them; the other cells of the image are skipped by ratatui's diff. A placed
//! image carries its own position when it goes through tmux (see [`Route`]).

use std::fmt::Write as _;
use std::io::Write as _;

use base64::Engine as _;
use image::{imageops::FilterType, DynamicImage};
use ratatui::buffer::{Buffer, CellDiffOption};
use ratatui::layout::{Rect, Size};
use ratatui::widgets::Widget;
use ratatui_image::protocol::halfblocks::Halfblocks;
use ratatui_image::protocol::iterm2::Iterm2;
use ratatui_image::protocol::kitty::Kitty;
use ratatui_image::protocol::sixel::Sixel;
use ratatui_image::protocol::Protocol as CellProtocol;
use ratatui_image::Resize;

use super::{Graphics, Protocol, Route};
use crate::tui::terminal::mux::passthrough;

/// tmux (3.3a) drops a passthrough sequence past about a megabyte; a large image goes
/// out as several consecutive envelopes, which reach the terminal as one stream.
const PASSTHROUGH_PIECE: usize = 256 * 1024;

/// kitty takes base64 payloads in chunks of at most 4096 bytes.
const KITTY_CHUNK: usize = 4096;

/// One resize+encode, runnable on any thread.
pub(super) struct EncodeJob {
    pub image: DynamicImage,
    pub target: Size,
    pub graphics: Graphics,
    pub kitty_id: u32,
}

impl EncodeJob {
    /// Scales the image to fill `target` cells (keeping its aspect ratio) and encodes it.
    pub fn run(self) -> Result<Encoded, String> {
        if self.target.width == 0 || self.target.height == 0 {
            return Err("no room to draw the image".into());
        }
        let font = self.graphics.font_size;
        let target_px = (
            u32::from(self.target.width) * u32::from(font.width),
            u32::from(self.target.height) * u32::from(font.height),
        );
        // Growing a latent shows its real pixels as crisp blocks; shrinking a decode needs
        // smoothing or it aliases.
        let filter = if self.image.width() <= target_px.0 && self.image.height() <= target_px.1 {
            FilterType::Nearest
        } else {
            FilterType::Triangle
        };
        let resize = Resize::Scale(Some(filter));
        let size = resize.size_for(&self.image, font, self.target);
        let image = resize.resize(&self.image, font, size, None);
        let tmux = matches!(self.graphics.route, Route::Tmux { .. });
        let failed = |err: ratatui_image::errors::Errors| format!("could not encode the image: {err}");
        Ok(match self.graphics.protocol {
            Protocol::Halfblocks => {
                Encoded::cells(CellProtocol::Halfblocks(Halfblocks::new(image, size).map_err(failed)?))
            }
            Protocol::Kitty { placeholders: true } => {
                let kitty = Kitty::new(image, size, self.kitty_id, tmux, self.graphics.kitty_zlib).map_err(failed)?;
                Encoded::cells(CellProtocol::Kitty(kitty))
            }
            // ratatui-image puts an erasure of the image's cells before the image; sdlab
            // erases only where the image was not before (see `Encoded::render`)
            Protocol::Sixel => {
                Encoded::placed(after(Sixel::new(image, size, false).map_err(failed)?.data, "\x1bP"), size, true)
            }
            Protocol::Iterm2 => {
                Encoded::placed(after(Iterm2::new(image, size, false).map_err(failed)?.data, "\x1b]1337;"), size, true)
            }
            // kitty draws its images over the cells, opaque (f=24) and scaled to them whole
            Protocol::Kitty { placeholders: false } => {
                let image = kitty_place(&image, size, self.graphics.kitty_zlib);
                Encoded::Placed { payload: Payload::Kitty { image, ids: None }, size, erases: false, written: None }
            }
        })
    }
}

/// `data` from the first `start` on (all of it when `start` is not there).
fn after(mut data: String, start: &str) -> String {
    let at = data.find(start).unwrap_or(0);
    data.drain(..at);
    data
}

/// Erases `size` cells from the cursor down, leaving the cursor where it was: what is
/// under an image's transparent edges must not show through.
fn erase_cells(size: Size) -> String {
    let mut out = String::new();
    for row in 0..size.height {
        let _ = write!(out, "\x1b[{}X", size.width);
        if row + 1 < size.height {
            out.push_str("\x1b[1B");
        }
    }
    if size.height > 1 {
        let _ = write!(out, "\x1b[{}A", size.height - 1);
    }
    out
}

/// A kitty image to transmit and place at the cursor in one command, `size` cells large,
/// quietly (`q=2`: no replies to mistake for keys), without moving the cursor (`C=1`).
/// Its id is given when it is shown ([`KittyImage::placed_as`]).
pub fn kitty_place(image: &DynamicImage, size: Size, zlib: bool) -> KittyImage {
    let rgb = image.to_rgb8();
    let (w, h) = rgb.dimensions();
    let raw = rgb.into_raw();
    let payload = if zlib {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        // writing into a Vec cannot fail
        encoder.write_all(&raw).expect("zlib into a Vec");
        encoder.finish().expect("zlib into a Vec")
    } else {
        raw
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
    let compression = if zlib { "o=z," } else { "" };
    let chunks: Vec<&[u8]> = encoded.as_bytes().chunks(KITTY_CHUNK).collect();
    let head = format!("\x1b_Ga=T,f=24,t=d,{compression}i=");
    let mut tail = String::with_capacity(encoded.len() + chunks.len() * 16 + 96);
    for (i, chunk) in chunks.iter().enumerate() {
        let more = u8::from(i + 1 < chunks.len());
        if i == 0 {
            let (cols, rows) = (size.width, size.height);
            let _ = write!(tail, ",p=1,s={w},v={h},c={cols},r={rows},C=1,q=2,m={more};");
        } else {
            let _ = write!(tail, "\x1b_Gm={more};");
        }
        tail.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        tail.push_str("\x1b\\");
    }
    KittyImage { head, tail }
}

/// A kitty transmission waiting for its image id.
pub struct KittyImage {
    head: String,
    tail: String,
}

impl KittyImage {
    /// The transmission under image id `id`.
    pub fn placed_as(&self, id: u32) -> String {
        format!("{}{id}{}", self.head, self.tail)
    }
}

/// Deletes kitty image `id`: its placement and its data.
pub fn kitty_delete(id: u32) -> String {
    format!("\x1b_Ga=d,d=I,i={id},q=2\x1b\\")
}

/// What a placed image sends.
pub(super) enum Payload {
    Sequence(String),
    /// kitty, by id: `ids` are the image's own and the one of the image it replaces,
    /// deleted right after it is shown (see [`Encoded::take_kitty_ids`]).
    Kitty {
        image: KittyImage,
        ids: Option<(u32, Option<u32>)>,
    },
}

/// An image encoded for the terminal, `size` cells large.
pub(super) enum Encoded {
    Cells {
        protocol: CellProtocol,
        size: Size,
    },
    Placed {
        payload: Payload,
        size: Size,
        /// Whether cells under the image must be erased where it first appears.
        erases: bool,
        /// The last symbol made: where, by which route, whether it erases, and itself.
        written: Option<(Rect, Route, bool, String)>,
    },
}

impl Encoded {
    fn cells(protocol: CellProtocol) -> Self {
        let size = protocol.size();
        Encoded::Cells { protocol, size }
    }

    fn placed(sequence: String, size: Size, erases: bool) -> Self {
        Encoded::Placed { payload: Payload::Sequence(sequence), size, erases, written: None }
    }

    /// Whether this is a kitty image placed by id that has no id yet: one never shown.
    pub fn wants_kitty_ids(&self) -> bool {
        matches!(self, Encoded::Placed { payload: Payload::Kitty { ids: None, .. }, .. })
    }

    /// Gives a kitty image placed by id its id, `id`, and the id of the image it replaces.
    ///
    /// Sending an image under the id of the one on screen makes kitty drop the old image
    /// at once and show the new one only once all of it has arrived: the pane blinks. So
    /// a pane's images take turns between two ids, and each deletes the one before it
    /// after it is shown.
    pub fn take_kitty_ids(&mut self, id: u32, replaces: Option<u32>) {
        if let Encoded::Placed { payload: Payload::Kitty { ids, .. }, .. } = self {
            *ids = Some((id, replaces));
        }
    }

    pub fn size(&self) -> Size {
        match self {
            Encoded::Cells { size, .. } | Encoded::Placed { size, .. } => *size,
        }
    }

    /// Whether this image is plain coloured cells, which whatever is drawn over replaces.
    pub fn is_half_blocks(&self) -> bool {
        matches!(self, Encoded::Cells { protocol: CellProtocol::Halfblocks(_), .. })
    }

    /// Whether the terminal keeps this image's pixels apart from the cells.
    pub fn is_placed(&self) -> bool {
        matches!(self, Encoded::Placed { .. })
    }

    /// Draws the image into `rect` (its own size, or less for cell images clipped by
    /// the pane); a placed image that does not fit whole is not drawn.
    ///
    /// `fresh`: the image appears where none was drawn the frame before, so the text under
    /// it is erased first. An image replacing the one before it in the same place is drawn
    /// straight over it: erasing first made every step's image blink.
    pub fn render(&mut self, rect: Rect, buf: &mut Buffer, route: Route, fresh: bool) {
        match self {
            Encoded::Cells { protocol, .. } => {
                ratatui_image::Image::new(protocol).allow_clipping(true).render(rect, buf)
            }
            Encoded::Placed { payload, size, erases, written } => {
                if rect.width < size.width || rect.height < size.height {
                    return;
                }
                let erase = *erases && fresh;
                if written.as_ref().is_none_or(|(at, via, erased, _)| (*at, *via, *erased) != (rect, route, erase)) {
                    let image = match payload {
                        Payload::Sequence(sequence) if erase => erase_cells(*size) + sequence,
                        Payload::Sequence(sequence) => sequence.clone(),
                        Payload::Kitty { ids: None, .. } => return,
                        Payload::Kitty { image, ids: Some((id, replaces)) } => {
                            image.placed_as(*id) + &replaces.map(kitty_delete).unwrap_or_default()
                        }
                    };
                    *written = Some((rect, route, erase, place_at(&image, rect, route)));
                }
                let symbol = &written.as_ref().expect("just written").3;
                for y in rect.top()..rect.bottom() {
                    for x in rect.left()..rect.right() {
                        if let Some(cell) = buf.cell_mut((x, y)) {
                            cell.set_diff_option(CellDiffOption::Skip);
                        }
                    }
                }
                if let Some(cell) = buf.cell_mut(rect.as_position()) {
                    cell.set_symbol(symbol).set_diff_option(CellDiffOption::ForcedWidth(1.try_into().expect("1")));
                }
            }
        }
    }
}

/// The sequence that draws `payload` with its top-left at `rect`'s, written at that cell.
///
/// The cursor is saved and restored around the image, then moved one cell on, which is
/// where ratatui expects it after a one-cell symbol. Through tmux the image also moves
/// the outer terminal's cursor to the pane's cell itself, since tmux forwards it as is.
fn place_at(payload: &str, rect: Rect, route: Route) -> String {
    match route {
        Route::Direct => format!("\x1b7{payload}\x1b8\x1b[C"),
        Route::Tmux { origin: (left, top) } => {
            let (row, column) = (u32::from(top) + u32::from(rect.y) + 1, u32::from(left) + u32::from(rect.x) + 1);
            let whole = format!("\x1b7\x1b[{row};{column}H{payload}\x1b8");
            let mut out = String::with_capacity(whole.len() * 11 / 10 + 64);
            let mut piece = String::new();
            for c in whole.chars() {
                piece.push(c);
                if piece.len() >= PASSTHROUGH_PIECE {
                    out.push_str(&passthrough(&piece));
                    piece.clear();
                }
            }
            if !piece.is_empty() {
                out.push_str(&passthrough(&piece));
            }
            out.push_str("\x1b[C");
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_kitty_place_sends_rgb_in_chunks_quietly_without_moving_the_cursor() {
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(64, 48, image::Rgb([10, 200, 30])));
        let text = kitty_place(&image, Size::new(8, 3), false).placed_as(7);
        let first = &text[..text.find(';').unwrap()];
        for key in ["a=T", "f=24", "t=d", "i=7", "p=1", "s=64", "v=48", "c=8", "r=3", "C=1", "q=2", "m=1"] {
            assert!(first.split([',', 'G']).any(|k| k == key), "{key} missing from {first}");
        }
        assert!(!first.contains("U=1"), "no unicode placeholders: kitty < 0.28 rejects them");
        let chunks: Vec<&str> = text.split("\x1b\\").filter(|c| !c.is_empty()).collect();
        // 64 * 48 * 3 bytes = 9216, base64 12288: three chunks of 4096
        assert_eq!(chunks.len(), 3);
        assert!(chunks[1].starts_with("\x1b_Gm=1;") && chunks[2].starts_with("\x1b_Gm=0;"));
        let payload: String = chunks.iter().map(|c| &c[c.find(';').unwrap() + 1..]).collect();
        let bytes = base64::engine::general_purpose::STANDARD.decode(payload).unwrap();
        assert_eq!(&bytes[..3], &[10, 200, 30]);
        assert_eq!(kitty_delete(7), "\x1b_Ga=d,d=I,i=7,q=2\x1b\\");
    }

    #[test]
    fn encode_kitty_place_compresses_with_zlib_when_asked() {
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(64, 48, image::Rgb([10, 200, 30])));
        let text = kitty_place(&image, Size::new(8, 3), true).placed_as(7);
        assert!(text.starts_with("\x1b_Ga=T,f=24,t=d,o=z,"), "{}", &text[..40]);
        let payload = &text[text.find(';').unwrap() + 1..text.find("\x1b\\").unwrap()];
        let compressed = base64::engine::general_purpose::STANDARD.decode(payload).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&compressed[..]), &mut raw).unwrap();
        assert_eq!(raw.len(), 64 * 48 * 3);
    }

    #[test]
    fn encode_a_kitty_image_deletes_the_one_it_replaces_after_it_is_shown() {
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3])));
        let mut encoded = EncodeJob {
            image,
            target: Size::new(4, 2),
            graphics: super::super::tests::graphics(Protocol::Kitty { placeholders: false }),
            kitty_id: 1,
        }
        .run()
        .unwrap();
        let rect = Rect::new(0, 0, 4, 2);
        let mut buf = Buffer::empty(rect);
        encoded.render(rect, &mut buf, Route::Direct, true);
        assert_eq!(buf[(0, 0)].symbol(), " ", "no id yet: nothing to show");
        encoded.take_kitty_ids(22, Some(11));
        encoded.render(rect, &mut buf, Route::Direct, true);
        let symbol = buf[(0, 0)].symbol();
        let shown = symbol.find("a=T").unwrap();
        let deleted = symbol.find(&kitty_delete(11)).expect("the old image deleted");
        assert!(shown < deleted && symbol[shown..].starts_with("a=T,f=24,t=d,i=22,"), "{symbol:?}");
    }

    #[test]
    fn encode_erase_cells_clears_each_row_and_comes_back() {
        assert_eq!(erase_cells(Size::new(5, 3)), "\x1b[5X\x1b[1B\x1b[5X\x1b[1B\x1b[5X\x1b[2A");
        assert_eq!(erase_cells(Size::new(7, 1)), "\x1b[7X");
        assert_eq!(after("\x1b[5X\x1bPq#0~\x1b\\".to_string(), "\x1bP"), "\x1bPq#0~\x1b\\");
    }

    #[test]
    fn encode_a_placed_image_erases_its_cells_only_where_it_first_appears() {
        let mut image = Encoded::placed("\x1bPqIMAGE\x1b\\".into(), Size::new(4, 2), true);
        let rect = Rect::new(1, 1, 4, 2);
        let mut buf = Buffer::empty(Rect::new(0, 0, 10, 5));
        image.render(rect, &mut buf, Route::Direct, true);
        assert_eq!(buf[(1, 1)].symbol(), "\x1b7\x1b[4X\x1b[1B\x1b[4X\x1b[1A\x1bPqIMAGE\x1b\\\x1b8\x1b[C");
        image.render(rect, &mut buf, Route::Direct, false);
        assert_eq!(buf[(1, 1)].symbol(), "\x1b7\x1bPqIMAGE\x1b\\\x1b8\x1b[C", "over itself: no erasing");
    }

    #[test]
    fn encode_placed_images_carry_their_position_through_tmux_in_pieces() {
        let rect = Rect::new(10, 4, 5, 2);
        let direct = place_at("IMAGE", rect, Route::Direct);
        assert_eq!(direct, "\x1b7IMAGE\x1b8\x1b[C");
        let through = place_at("\x1bPqIMAGE\x1b\\", rect, Route::Tmux { origin: (2, 1) });
        assert_eq!(through, "\x1bPtmux;\x1b\x1b7\x1b\x1b[6;13H\x1b\x1bPqIMAGE\x1b\x1b\\\x1b\x1b8\x1b\\\x1b[C");

        let big = "\x1bPq".to_string() + &"~".repeat(3 * PASSTHROUGH_PIECE) + "\x1b\\";
        let through = place_at(&big, rect, Route::Tmux { origin: (0, 0) });
        let pieces = through.matches("\x1bPtmux;").count();
        assert_eq!(pieces, 4);
        // every envelope is small enough for tmux, and together they hold the whole image
        let inner: String = through
            .split("\x1bPtmux;")
            .skip(1)
            .map(|p| p.strip_suffix("\x1b[C").unwrap_or(p).strip_suffix("\x1b\\").unwrap().replace("\x1b\x1b", "\x1b"))
            .collect();
        assert!(inner.ends_with(&(big.clone() + "\x1b8")));
        assert!(through.split("\x1bPtmux;").all(|p| p.len() <= 2 * PASSTHROUGH_PIECE + 16));
    }
}
