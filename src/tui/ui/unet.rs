//! The denoise screen's `u` view: the latent's path through the UNet at the step on
//! screen, block by block, with the shape each block hands on, as the talk prints it
//! (`conv_in [2, 320, 64, 64]`), and how spread out its values are.
//!
//! The down path goes in, the mid block sits at the bottom, the up path comes back
//! out. Where the terminal is wide enough that is drawn as a U (down on the left,
//! up on the right, read from the bottom); otherwise as one list in the order the
//! blocks run, each indented by how deep in the U it sits.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use super::{block, num, shown_taps, step_label};
use crate::model::unet::BlockTap;
use crate::tui::app::App;

/// Columns a block moves in per level of depth (the U slopes more when it has room).
const INDENT: usize = 2;

/// The shortest std bar the U draws; narrower, it falls back to the list.
const MIN_BAR: usize = 8;

/// Columns between the two arms of the U.
const GAP: usize = 4;

/// A statistic's column: [`num`] writes at most 10 characters, plus a space.
const NUMBER: usize = 11;

/// Both statistics, each after its name: ` mean -0.0011 std 0.9960`, aligned for the
/// usual widths of [`num`].
const LABELLED: usize = " mean ".len() + 9 + " std ".len() + 9;

/// Lines of [`legend`], and the blank one above it.
const LEGEND_ROWS: usize = 4;

pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let area = match app.info.as_ref().map(|i| super::lora_chart::split(&i.loras, area)) {
        Some((u, Some(chart))) => {
            super::lora_chart::draw(frame, &app.info.as_ref().expect("split had it").loras, chart);
            u
        }
        _ => area,
    };
    let (step, taps) = match shown_taps(app) {
        Ok(shown) => shown,
        Err(why) => {
            let why = Paragraph::new(why).wrap(Wrap { trim: true });
            frame.render_widget(why.block(block("the UNet  (u closes)", false)), area);
            return;
        }
    };
    let b = block(format!("the UNet at {}  (u closes)", step_label(app, step)), false);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let rows = rows(&taps.blocks);
    let width = usize::from(inner.width);
    let mut lines = match u_shape(&rows, width, usize::from(inner.height)) {
        Some(u) => u,
        None => list(&rows, width),
    };
    lines.push(Line::default());
    lines.extend(legend(&taps.blocks));
    frame.render_widget(Paragraph::new(lines), inner);
}

/// Where a block sits on the tensor's way: the input and output ends, or one of the
/// U's two arms, or its bottom.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Ends,
    Down,
    Mid,
    Up,
}

impl Path {
    fn style(self) -> Style {
        match self {
            Path::Ends => Style::new().add_modifier(Modifier::BOLD),
            Path::Down => Style::new().fg(Color::LightBlue),
            Path::Mid => Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
            Path::Up => Style::new().fg(Color::Green),
        }
    }
}

struct Row<'a> {
    tap: &'a BlockTap,
    path: Path,
    /// Levels below the ends: `down_blocks.i` is i + 1 deep, the mid block one below
    /// the last of them, and each up block as deep as the down block it mirrors.
    depth: usize,
}

/// The blocks in the order they ran, each placed in the U by its diffusers name.
fn rows(blocks: &[BlockTap]) -> Vec<Row<'_>> {
    let arm = blocks.iter().filter(|b| b.name.starts_with("down_blocks.")).count();
    blocks
        .iter()
        .map(|tap| {
            let index = |prefix: &str| tap.name.strip_prefix(prefix).and_then(|i| i.parse::<usize>().ok());
            let (path, depth) = if let Some(i) = index("down_blocks.") {
                (Path::Down, i + 1)
            } else if let Some(i) = index("up_blocks.") {
                (Path::Up, arm.saturating_sub(i))
            } else if tap.name == "mid_block" {
                (Path::Mid, arm + 1)
            } else {
                (Path::Ends, 0)
            };
            Row { tap, path, depth }
        })
        .collect()
}

/// `[2, 320, 64, 64]`, as the talk and the talk mode print shapes.
fn shape(dims: &[usize]) -> String {
    format!("{dims:?}")
}

/// How wide each column of a block's cell is.
struct Columns {
    name: usize,
    shape: usize,
    /// Whether the numbers say which is which: the U has no header above its cells.
    labelled: bool,
    bar: usize,
    /// The largest std among the blocks: a full bar.
    max_std: f32,
}

impl Columns {
    fn of(rows: &[Row], name: usize, labelled: bool) -> Self {
        Self {
            name,
            shape: rows.iter().map(|r| shape(&r.tap.shape).len()).max().unwrap_or(0),
            labelled,
            bar: 0,
            max_std: rows.iter().map(|r| r.tap.stats.std).fold(0.0, f32::max),
        }
    }

    /// A cell without its bar: name, shape, mean and std.
    fn fixed(&self) -> usize {
        let numbers = if self.labelled { LABELLED } else { 2 * NUMBER };
        self.name + 1 + self.shape + numbers
    }

    /// One block: its name (after `indent` spaces, within the name column), its output's
    /// shape, mean and std, and the std as a bar against the largest.
    fn cell(&self, row: &Row, indent: usize) -> Vec<Span<'static>> {
        let stats = row.tap.stats;
        let name = format!("{}{:<w$}", " ".repeat(indent), row.tap.name, w = self.name.saturating_sub(indent));
        let (mean, std) = (num(f64::from(stats.mean)), num(f64::from(stats.std)));
        let numbers =
            if self.labelled { format!(" mean {mean:>9} std {std:>9}") } else { format!(" {mean:>10} {std:>10}") };
        let mut spans = vec![
            Span::styled(name, row.path.style()),
            Span::raw(format!(" {:<w$}", shape(&row.tap.shape), w = self.shape)),
            Span::raw(numbers),
        ];
        if self.bar > 0 {
            let fraction = if self.max_std > 0.0 { stats.std / self.max_std } else { 0.0 };
            spans.push(Span::styled(format!(" {}", bar(fraction, self.bar)), Style::new().fg(Color::Yellow)));
        }
        spans
    }

    fn header(&self) -> Line<'static> {
        let text = format!(
            "{:<nw$} {:<sw$} {:>10} {:>10}",
            "block",
            "output shape",
            "mean",
            "std",
            nw = self.name,
            sw = self.shape
        );
        Line::from(Span::styled(text, Style::new().add_modifier(Modifier::DIM)))
    }
}

/// The blocks top to bottom in the order they ran, indented by depth: the U on its side.
fn list(rows: &[Row], width: usize) -> Vec<Line<'static>> {
    let name = rows.iter().map(|r| r.depth * INDENT + r.tap.name.len()).max().unwrap_or(0);
    let mut columns = Columns::of(rows, name, false);
    columns.bar = width.saturating_sub(columns.fixed() + 2).min(30);
    let mut lines = vec![columns.header()];
    lines.extend(rows.iter().map(|r| Line::from(columns.cell(r, r.depth * INDENT))));
    lines
}

/// The blocks as a U, when `width` columns hold both arms side by side: down the left
/// arm from the input, across the mid block at the bottom, up the right arm to the
/// output, each block beside the one it mirrors; a blank line between the arms' rows
/// when `height` has room for it. `None` when the arms do not fit side by side.
fn u_shape(rows: &[Row], width: usize, height: usize) -> Option<Vec<Line<'static>>> {
    let split = rows.iter().position(|r| matches!(r.path, Path::Mid | Path::Up)).unwrap_or(rows.len());
    let (left, rest) = rows.split_at(split);
    let (mid, right) = match rest.split_first() {
        Some((mid, right)) if mid.path == Path::Mid => (Some(mid), right),
        _ => (None, rest),
    };
    let depth = left.iter().chain(right).map(|r| r.depth).max().unwrap_or(0);
    let name = rows.iter().map(|r| r.tap.name.len()).max().unwrap_or(0);
    let mut columns = Columns::of(rows, name, true);
    let half = width.saturating_sub(GAP) / 2;
    let room = half.checked_sub(depth * INDENT + columns.fixed() + 1 + MIN_BAR)?;
    // what the bar does not need, the arms spend on sloping: the wider, the more U-like
    let indent = INDENT + (room / depth.max(1)).min(3 * INDENT);
    columns.bar = (half - depth * indent - columns.fixed() - 1).min(24);
    let cell_width = columns.fixed() + 1 + columns.bar;
    let arm_rows = left.len().max(right.len());
    // the header, each row after a blank line, and the legend
    let spaced = height >= 1 + 2 * (arm_rows + usize::from(mid.is_some())) + LEGEND_ROWS;
    // both arms end at the bottom, beside the mid block
    let (left_top, right_top) = (arm_rows - left.len(), arm_rows - right.len());
    let right_x = |r: &Row| half + GAP + (depth - r.depth.min(depth)) * indent;
    let dim = Style::new().add_modifier(Modifier::DIM);
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("{:<w$}", "↓ in, and down: smaller grid, more channels", w = half + GAP), dim),
        Span::styled("↑ up, and out: back to the latent's grid", dim),
    ])];
    for line in 0..arm_rows {
        if spaced {
            lines.push(Line::default());
        }
        let mut placed = Placed::default();
        if let Some(r) = line.checked_sub(left_top).and_then(|i| left.get(i)) {
            placed.put(r.depth * indent, columns.cell(r, 0));
        }
        if let Some(r) = line.checked_sub(right_top).and_then(|i| right.iter().rev().nth(i)) {
            placed.put(right_x(r), columns.cell(r, 0));
        }
        lines.push(Line::from(placed.spans));
    }
    if let Some(mid) = mid {
        if spaced {
            lines.push(Line::default());
        }
        let mut placed = Placed::default();
        placed.put(width.saturating_sub(cell_width) / 2, columns.cell(mid, 0));
        lines.push(Line::from(placed.spans));
    }
    Some(lines)
}

/// Spans laid out left to right at given columns.
#[derive(Default)]
struct Placed {
    spans: Vec<Span<'static>>,
    column: usize,
}

impl Placed {
    fn put(&mut self, x: usize, cell: Vec<Span<'static>>) {
        if x > self.column {
            self.spans.push(Span::raw(" ".repeat(x - self.column)));
            self.column = x;
        }
        self.column += cell.iter().map(Span::width).sum::<usize>();
        self.spans.extend(cell);
    }
}

/// A horizontal bar `fraction` of `width` columns long, in eighths of a column.
fn bar(fraction: f32, width: usize) -> String {
    const PARTIAL: [char; 7] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    // NaN becomes 0 here: the cast saturates
    let eighths = (fraction.clamp(0.0, 1.0) * (width * 8) as f32).round() as usize;
    let mut bar = "█".repeat(eighths / 8);
    if let Some(&partial) = (eighths % 8).checked_sub(1).and_then(|i| PARTIAL.get(i)) {
        bar.push(partial);
    }
    bar
}

/// What the numbers mean, in the talk's words.
fn legend(blocks: &[BlockTap]) -> Vec<Line<'static>> {
    let batch = match blocks.first().and_then(|b| b.shape.first()) {
        Some(2) => "; batch 2 = negative prompt + prompt",
        Some(1) => "; batch 1 = the prompt alone (guidance scale 1)",
        _ => "",
    };
    let dim = Style::new().add_modifier(Modifier::DIM);
    [
        format!("shape: [batch, channels, height, width]{batch}"),
        "the up path also takes the down path's outputs (skip connections)".into(),
        "bar: the block's std, against the largest".into(),
    ]
    .into_iter()
    .map(|text| Line::from(Span::styled(text, dim)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::unet::TensorStats;

    fn tap(name: &str, shape: &[usize], std: f32) -> BlockTap {
        BlockTap { name: name.into(), shape: shape.to_vec(), stats: TensorStats { mean: 0.0, std, min: 0.0, max: 0.0 } }
    }

    fn sd15_like() -> Vec<BlockTap> {
        let mut blocks = vec![tap("sample", &[2, 4, 64, 64], 1.0), tap("conv_in", &[2, 320, 64, 64], 2.0)];
        for (i, (ch, size)) in [(320, 32), (640, 16), (1280, 8), (1280, 8)].into_iter().enumerate() {
            blocks.push(tap(&format!("down_blocks.{i}"), &[2, ch, size, size], 1.0));
        }
        blocks.push(tap("mid_block", &[2, 1280, 8, 8], 4.0));
        for (i, (ch, size)) in [(1280, 16), (1280, 32), (640, 64), (320, 64)].into_iter().enumerate() {
            blocks.push(tap(&format!("up_blocks.{i}"), &[2, ch, size, size], 1.0));
        }
        blocks.push(tap("conv_out", &[2, 4, 64, 64], 1.0));
        blocks
    }

    fn text(line: &Line) -> String {
        line.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn depth_follows_the_u() {
        let blocks = sd15_like();
        let depths: Vec<usize> = rows(&blocks).iter().map(|r| r.depth).collect();
        assert_eq!(depths, [0, 0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0]);
    }

    #[test]
    fn the_u_puts_each_up_block_beside_the_down_block_it_mirrors() {
        let blocks = sd15_like();
        let lines = u_shape(&rows(&blocks), 196, 12).expect("196 columns hold the U");
        let lines: Vec<String> = lines.iter().map(text).collect();
        let beside = |a: &str, b: &str| lines.iter().any(|l| l.contains(a) && l.contains(b) && l.find(a) < l.find(b));
        assert!(beside("conv_in ", "conv_out "), "{lines:#?}");
        assert!(beside("down_blocks.0 ", "up_blocks.3 "), "{lines:#?}");
        assert!(beside("down_blocks.3 ", "up_blocks.0 "), "{lines:#?}");
        let bottom = lines.last().unwrap().trim_start();
        assert!(bottom.starts_with("mid_block ") && bottom.contains(" [2, 1280, 8, 8] "), "{bottom}");
        // the deeper, the further in: the left arm moves right, the right arm left
        let at = |name: &str| lines.iter().find_map(|l| l.find(&format!("{name} "))).unwrap();
        assert!(at("conv_in") < at("down_blocks.0") && at("down_blocks.0") < at("down_blocks.3"));
        assert!(at("conv_out") > at("up_blocks.3") && at("up_blocks.3") > at("up_blocks.0"));
        assert!(u_shape(&rows(&blocks), 78, 20).is_none(), "80 columns take the list");
        // with room to spare, a blank line between the rows
        let tall = u_shape(&rows(&blocks), 196, 40).unwrap();
        assert_eq!(tall.len(), 2 * lines.len() - 1);
    }

    #[test]
    fn the_list_keeps_the_order_and_fits_80_columns() {
        let blocks = sd15_like();
        let lines: Vec<String> = list(&rows(&blocks), 78).iter().map(text).collect();
        assert_eq!(lines.len(), 1 + blocks.len());
        for (line, b) in lines[1..].iter().zip(&blocks) {
            assert!(line.contains(&format!("{} ", b.name)), "{line}");
            assert!(line.contains(&shape(&b.shape)), "{line}");
            assert!(line.chars().count() < 78, "{} columns: {line}", line.chars().count());
        }
        // the mid block has the largest std: the only full bar
        assert!(lines[7].ends_with(&"█".repeat(lines[7].matches('█').count())));
        assert!(lines[7].matches('█').count() > lines[2].matches('█').count());
    }

    #[test]
    fn bars_count_eighths() {
        assert_eq!(bar(1.0, 3), "███");
        assert_eq!(bar(0.5, 3), "█▌");
        assert_eq!(bar(0.25, 1), "▎");
        assert_eq!(bar(0.0, 3), "");
        assert_eq!(bar(f32::NAN, 3), "");
    }
}
