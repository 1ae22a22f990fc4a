//! A labelled contact sheet (`sdlab grid`): rows and columns of equally sized
//! pictures, a label over each column and beside each row, drawn with an 8x8
//! bitmap font so the sheet needs no font files.

use anyhow::{bail, Result};
use font8x8::{UnicodeFonts, BASIC_FONTS};
use image::{Rgb, RgbImage};

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([0, 0, 0]);

/// What a sheet shows: `cells[row][column]` is a strip of pictures (x0 at some
/// steps and the final image, say), each strip as long as `strip_labels`.
pub struct Sheet {
    pub row_labels: Vec<String>,
    pub column_labels: Vec<String>,
    /// Under each column label, one per picture of a strip; empty for strips of one.
    pub strip_labels: Vec<String>,
    pub cells: Vec<Vec<Vec<RgbImage>>>,
}

/// The layout's one unit: text and gaps grow with the pictures, so labels stay
/// readable beside 512-pixel images and do not swamp 64-pixel ones.
fn scale(picture_height: u32) -> u32 {
    (picture_height / 96).max(1)
}

impl Sheet {
    /// The sheet as one picture.
    pub fn render(&self) -> Result<RgbImage> {
        let Some(first) = self.cells.first().and_then(|r| r.first()).and_then(|s| s.first()) else {
            bail!("a contact sheet needs at least one picture");
        };
        let (w, h) = first.dimensions();
        let per_strip = self.cells[0][0].len();
        let well_formed = self.cells.len() == self.row_labels.len()
            && self.cells.iter().all(|row| {
                row.len() == self.column_labels.len()
                    && row.iter().all(|s| s.len() == per_strip && s.iter().all(|p| p.dimensions() == (w, h)))
            })
            && (self.strip_labels.is_empty() || self.strip_labels.len() == per_strip);
        if !well_formed {
            bail!("a contact sheet's rows, columns and strips must match their labels, pictures all {w}x{h}");
        }
        let s = scale(h);
        let (gap, line) = (4 * s, 8 * s);
        let strip_w = per_strip as u32 * w + (per_strip as u32 - 1) * gap;
        let label_w = self.row_labels.iter().map(|l| text_width(l, s)).max().unwrap_or(0);
        let left = label_w + 2 * gap;
        let header_lines = if self.strip_labels.is_empty() { 1 } else { 2 };
        let top = gap + header_lines * (line + gap);
        let pitch_x = strip_w + 2 * gap;
        let pitch_y = h + gap;
        let columns = self.column_labels.len() as u32;
        let rows = self.row_labels.len() as u32;
        let mut sheet = RgbImage::from_pixel(left + columns * pitch_x, top + rows * pitch_y + gap, BACKGROUND);
        for (c, label) in self.column_labels.iter().enumerate() {
            let x = left + c as u32 * pitch_x;
            draw_text(&mut sheet, label, x, gap, strip_w, s);
            for (i, sub) in self.strip_labels.iter().enumerate() {
                draw_text(&mut sheet, sub, x + i as u32 * (w + gap), gap + line + gap, w, s);
            }
        }
        for (r, label) in self.row_labels.iter().enumerate() {
            let y = top + r as u32 * pitch_y;
            draw_text(&mut sheet, label, gap, y + (h.saturating_sub(line)) / 2, label_w, s);
            for (c, strip) in self.cells[r].iter().enumerate() {
                for (i, picture) in strip.iter().enumerate() {
                    let x = left + c as u32 * pitch_x + i as u32 * (w + gap);
                    image::imageops::replace(&mut sheet, picture, i64::from(x), i64::from(y));
                }
            }
        }
        Ok(sheet)
    }
}

fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * 8 * scale
}

/// `text` at (x, y), cut to `max_width`; characters the font lacks show as `?`.
fn draw_text(image: &mut RgbImage, text: &str, x: u32, y: u32, max_width: u32, scale: u32) {
    let fits = (max_width / (8 * scale)) as usize;
    for (i, ch) in text.chars().take(fits).enumerate() {
        let glyph = BASIC_FONTS.get(ch).or_else(|| BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        let x0 = x + i as u32 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits >> col & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (px, py) = (x0 + col * scale + dx, y + row as u32 * scale + dy);
                            if px < image.width() && py < image.height() {
                                image.put_pixel(px, py, INK);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(v: u8) -> RgbImage {
        RgbImage::from_pixel(64, 64, Rgb([v, 128, 0]))
    }

    fn inked(image: &RgbImage, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> usize {
        x.flat_map(|x| y.clone().map(move |y| (x, y))).filter(|&(x, y)| *image.get_pixel(x, y) == INK).count()
    }

    #[test]
    fn pictures_land_in_their_cells_under_their_labels() {
        let sheet = Sheet {
            row_labels: vec!["seed 1".into(), "seed 22".into()],
            column_labels: vec!["cfg 3".into(), "cfg 7.5".into(), "cfg 12".into()],
            strip_labels: vec!["x0@5".into(), "final".into()],
            cells: (0..2).map(|r| (0..3).map(|c| vec![picture(r * 3 + c), picture(200)]).collect()).collect(),
        }
        .render()
        .unwrap();
        // labels 7 characters wide (8 px each) + 2 gaps of 4; strips 2 x 64 + 4, + 2 gaps a column
        let (left, top, pitch_x, pitch_y) = (7 * 8 + 8, 4 + 2 * 12, 132 + 8, 64 + 4);
        assert_eq!(sheet.dimensions(), (left + 3 * pitch_x, top + 2 * pitch_y + 4));
        for r in 0..2u32 {
            for c in 0..3u32 {
                let (x, y) = (left + c * pitch_x, top + r * pitch_y);
                assert_eq!(sheet.get_pixel(x + 10, y + 10)[0], (r * 3 + c) as u8, "row {r} column {c}");
                assert_eq!(sheet.get_pixel(x + 68 + 10, y + 10)[0], 200);
            }
        }
        assert!(inked(&sheet, left..left + 40, 4..12) > 20, "column label");
        assert!(inked(&sheet, left..left + 32, 16..24) > 20, "strip label");
        assert!(inked(&sheet, 4..60, top + 28..top + 36) > 20, "row label");
        assert_eq!(inked(&sheet, 0..sheet.width(), sheet.height() - 4..sheet.height()), 0);
    }

    #[test]
    fn ragged_sheets_are_refused() {
        let sheet = Sheet {
            row_labels: vec!["a".into()],
            column_labels: vec!["x".into(), "y".into()],
            strip_labels: vec![],
            cells: vec![vec![vec![picture(0)]]],
        };
        assert!(sheet.render().is_err());
    }
}
