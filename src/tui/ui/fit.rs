//! Text that must fit a width: titles lose their least important parts first (the
//! parts after ` · `), then end in an ellipsis, rather than being cut mid-word by the
//! panel's corner or the screen's edge.

use unicode_width::UnicodeWidthStr;

/// The separator between a title's parts, most important first.
pub const PARTS: &str = " · ";

/// `text` in at most `width` columns: whole trailing parts dropped, then an ellipsis.
pub fn fit(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_string();
    }
    let mut parts: Vec<&str> = text.split(PARTS).collect();
    while parts.len() > 1 {
        parts.pop();
        let shorter = parts.join(PARTS);
        if shorter.width() <= width {
            return shorter;
        }
    }
    ellipsis(parts[0], width)
}

/// `text` cut to `width` columns with `…` as its last, never splitting a wide character.
pub fn ellipsis(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.to_string().width();
        if used + w > width - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// The items (each `width` columns wide) that fit in `width` columns, taking them in
/// order of `priority` (indexes into `widths`) and keeping their original order.
pub fn keep_fitting(widths: &[usize], priority: &[usize], width: usize) -> Vec<usize> {
    let mut kept = Vec::new();
    let mut used = 0;
    for &i in priority {
        if used + widths[i] <= width {
            used += widths[i];
            kept.push(i);
        }
    }
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_drops_trailing_parts_then_adds_an_ellipsis() {
        let title = "latent as colour · seed 42 · [1, 4, 32, 32]";
        assert_eq!(fit(title, 60), title);
        assert_eq!(fit(title, 30), "latent as colour · seed 42");
        assert_eq!(fit(title, 20), "latent as colour");
        assert_eq!(fit(title, 10), "latent as…");
        assert_eq!(fit(title, 0), "");
    }

    #[test]
    fn fit_counts_wide_characters_as_two_columns() {
        let title = "潜在変数（カラー表示） · seed 42";
        assert_eq!(fit(title, 23), "潜在変数（カラー表示）");
        // 9 columns: four wide characters and the ellipsis, never half of a fifth
        assert_eq!(ellipsis("潜在変数（カラー表示）", 10), "潜在変数…");
        assert!(ellipsis("潜在変数（カラー表示）", 10).width() <= 10);
    }

    #[test]
    fn keep_fitting_takes_the_important_items_first_in_their_order() {
        let widths = [10, 8, 12, 6];
        assert_eq!(keep_fitting(&widths, &[0, 1, 2, 3], 40), vec![0, 1, 2, 3]);
        assert_eq!(keep_fitting(&widths, &[0, 3, 1, 2], 25), vec![0, 1, 3]);
        assert_eq!(keep_fitting(&widths, &[2, 0, 1, 3], 5), Vec::<usize>::new());
    }
}
