//! How slides look. Every theme paints its own background and names every colour from
//! the xterm 256-colour cube and grey ramp (indexes 16 to 255), whose values are the same
//! in every terminal, unlike the 16 basic colours each terminal (and each user) picks.
//! That is what lets a test check each colour pair against WCAG's 4.5:1 for text: the
//! colours on screen are the colours tested.
//!
//! `--theme auto` (the default) picks light or dark by the terminal's background (asked
//! with OSC 11 at startup); high contrast is black and white with saturated highlights,
//! for a projector in a lit room. Colour only repeats what a mark already says: the
//! highlighted lines also carry `>` in the gutter, values carry `<-`, errors say `error`.

use std::fmt;
use std::str::FromStr;

use anyhow::bail;
use ratatui::style::{Color, Modifier, Style};

use super::source::Class;

/// `--theme`: the look asked for on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ThemeChoice {
    /// Light on a light terminal, dark on a dark one (or one that does not tell).
    #[default]
    Auto,
    Light,
    Dark,
    HighContrast,
}

/// The look of talk mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Theme {
    /// Near-black text on white.
    Light,
    /// Light grey text on near-black.
    #[default]
    Dark,
    /// Black background, white text, bold highlights: for a projector in a lit room.
    HighContrast,
}

impl ThemeChoice {
    /// The theme to start with, given the terminal's background colour if it told one.
    pub fn resolve(self, background: Option<[u8; 3]>) -> Theme {
        match self {
            ThemeChoice::Auto => Theme::matching(background),
            ThemeChoice::Light => Theme::Light,
            ThemeChoice::Dark => Theme::Dark,
            ThemeChoice::HighContrast => Theme::HighContrast,
        }
    }
}

impl Theme {
    /// Light on a background that black text reads better on than white text, else dark.
    pub fn matching(background: Option<[u8; 3]>) -> Theme {
        match background {
            Some(bg) if contrast(bg, [0, 0, 0]) > contrast(bg, [255, 255, 255]) => Theme::Light,
            _ => Theme::Dark,
        }
    }

    /// `c` switches high contrast on, and off again to `plain` (the light or dark theme
    /// the terminal's background calls for).
    pub fn toggled(self, plain: Theme) -> Theme {
        match (self, plain) {
            (Theme::HighContrast, Theme::HighContrast) => Theme::Dark,
            (Theme::HighContrast, plain) => plain,
            _ => Theme::HighContrast,
        }
    }

    pub fn palette(self) -> Palette {
        // xterm's 256-colour indexes; the comments give their values
        let c = Color::Indexed;
        let (bold, italic) = (Modifier::BOLD, Modifier::ITALIC);
        match self {
            Theme::Light => Palette {
                base: Style::new().fg(c(16)).bg(c(231)),                     // #000000 on #ffffff
                title: Style::new().fg(c(231)).bg(c(25)).add_modifier(bold), // on #005faf
                subtitle: Style::new().fg(c(16)).add_modifier(bold),
                key: Style::new().fg(c(231)).bg(c(238)).add_modifier(bold), // on #444444
                border: Style::new().fg(c(240)),                            // #585858
                gutter: Style::new().fg(c(242)),                            // #6c6c6c
                highlight: Style::new().fg(c(16)).bg(c(229)).add_modifier(bold), // on #ffffaf
                highlight_gutter: Style::new().fg(c(16)).bg(c(220)).add_modifier(bold), // on #ffd700
                value: Style::new().fg(c(24)).add_modifier(italic),         // #005f87
                busy: Style::new().fg(c(130)).add_modifier(bold),           // #af5f00
                error: Style::new().fg(c(160)).add_modifier(bold),          // #d70000
                keyword: Style::new().fg(c(90)).add_modifier(bold),         // #870087
                type_name: Style::new().fg(c(94)),                          // #875f00
                macro_name: Style::new().fg(c(25)),                         // #005faf
                literal: Style::new().fg(c(22)),                            // #005f00
                number: Style::new().fg(c(24)),                             // #005f87
                comment: Style::new().fg(c(242)).add_modifier(italic),      // #6c6c6c
                lifetime: Style::new().fg(c(124)),                          // #af0000
            },
            Theme::Dark => Palette {
                base: Style::new().fg(c(252)).bg(c(234)), // #d0d0d0 on #1c1c1c
                title: Style::new().fg(c(231)).bg(c(25)).add_modifier(bold), // on #005faf
                subtitle: Style::new().fg(c(231)).add_modifier(bold),
                key: Style::new().fg(c(16)).bg(c(250)).add_modifier(bold), // on #bcbcbc
                border: Style::new().fg(c(246)),                           // #949494
                gutter: Style::new().fg(c(245)),                           // #8a8a8a
                highlight: Style::new().fg(c(231)).bg(c(24)).add_modifier(bold), // on #005f87
                highlight_gutter: Style::new().fg(c(16)).bg(c(220)).add_modifier(bold), // on #ffd700
                value: Style::new().fg(c(159)).add_modifier(italic),       // #afffff
                busy: Style::new().fg(c(220)).add_modifier(bold),          // #ffd700
                error: Style::new().fg(c(210)).add_modifier(bold),         // #ff8787
                keyword: Style::new().fg(c(213)).add_modifier(bold),       // #ff87ff
                type_name: Style::new().fg(c(222)),                        // #ffd787
                macro_name: Style::new().fg(c(117)),                       // #87d7ff
                literal: Style::new().fg(c(150)),                          // #afd787
                number: Style::new().fg(c(116)),                           // #87d7d7
                comment: Style::new().fg(c(245)).add_modifier(italic),     // #8a8a8a
                lifetime: Style::new().fg(c(210)),                         // #ff8787
            },
            Theme::HighContrast => Palette {
                base: Style::new().fg(c(231)).bg(c(16)), // #ffffff on #000000
                title: Style::new().fg(c(16)).bg(c(231)).add_modifier(bold),
                subtitle: Style::new().fg(c(231)).add_modifier(bold),
                key: Style::new().fg(c(16)).bg(c(231)).add_modifier(bold),
                border: Style::new().fg(c(231)),
                gutter: Style::new().fg(c(231)),
                highlight: Style::new().fg(c(16)).bg(c(226)).add_modifier(bold), // on #ffff00
                highlight_gutter: Style::new().fg(c(16)).bg(c(226)).add_modifier(bold),
                value: Style::new().fg(c(16)).bg(c(123)).add_modifier(bold), // on #87ffff
                busy: Style::new().fg(c(16)).bg(c(226)).add_modifier(bold),
                error: Style::new().fg(c(231)).bg(c(124)).add_modifier(bold), // on #af0000
                keyword: Style::new().fg(c(226)).add_modifier(bold),
                type_name: Style::new().fg(c(123)).add_modifier(bold),
                macro_name: Style::new().fg(c(120)).add_modifier(bold), // #87ff87
                literal: Style::new().fg(c(120)),
                number: Style::new().fg(c(123)),
                comment: Style::new().fg(c(231)).add_modifier(italic),
                lifetime: Style::new().fg(c(213)), // #ff87ff
            },
        }
    }
}

/// The styles a slide is drawn with.
#[derive(Clone, Copy, Debug)]
pub struct Palette {
    /// The page: every other style is laid over it.
    pub base: Style,
    pub title: Style,
    pub subtitle: Style,
    pub key: Style,
    pub border: Style,
    pub gutter: Style,
    /// The lines of the current operation (laid over the syntax colours).
    pub highlight: Style,
    pub highlight_gutter: Style,
    /// A live value beside the code.
    pub value: Style,
    pub busy: Style,
    pub error: Style,
    keyword: Style,
    type_name: Style,
    macro_name: Style,
    literal: Style,
    number: Style,
    comment: Style,
    lifetime: Style,
}

impl Palette {
    /// A value on a highlighted line: its own colour on the highlight's band, which stays
    /// unbroken.
    pub fn value_highlighted(&self) -> Style {
        Style { bg: self.highlight.bg.or(self.value.bg), ..self.value }
    }

    pub fn code(&self, class: Class) -> Style {
        match class {
            Class::Plain => Style::new(),
            Class::Keyword => self.keyword,
            Class::Type => self.type_name,
            Class::Macro => self.macro_name,
            Class::Literal => self.literal,
            Class::Number => self.number,
            Class::Comment => self.comment,
            Class::Lifetime => self.lifetime,
        }
    }
}

/// WCAG 2's contrast ratio of two sRGB colours: 1 (the same) to 21 (black on white).
pub fn contrast(a: [u8; 3], b: [u8; 3]) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// WCAG 2's relative luminance.
fn luminance(rgb: [u8; 3]) -> f64 {
    let linear = |v: u8| {
        let v = f64::from(v) / 255.0;
        if v <= 0.03928 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * linear(rgb[0]) + 0.7152 * linear(rgb[1]) + 0.0722 * linear(rgb[2])
}

/// The colour xterm's 256-colour palette gives index 16 to 255 (the cube and the grey
/// ramp, the same in every terminal that has them); `None` for the 16 basic colours.
pub fn indexed_rgb(index: u8) -> Option<[u8; 3]> {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    match index {
        0..=15 => None,
        16..=231 => {
            let i = index - 16;
            Some([LEVELS[usize::from(i / 36)], LEVELS[usize::from(i / 6 % 6)], LEVELS[usize::from(i % 6)]])
        }
        232..=255 => {
            let v = 8 + 10 * (index - 232);
            Some([v, v, v])
        }
    }
}

const NAMES: [(ThemeChoice, &str); 4] = [
    (ThemeChoice::Auto, "auto"),
    (ThemeChoice::Light, "light"),
    (ThemeChoice::Dark, "dark"),
    (ThemeChoice::HighContrast, "high-contrast"),
];

impl fmt::Display for ThemeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NAMES.iter().find(|(t, _)| t == self).map_or("", |(_, name)| name))
    }
}

impl FromStr for ThemeChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match NAMES.iter().find(|(_, name)| name.eq_ignore_ascii_case(s)) {
            Some((theme, _)) => Ok(*theme),
            None => bail!("--theme {s}: expected auto, light, dark or high-contrast"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THEMES: [Theme; 3] = [Theme::Light, Theme::Dark, Theme::HighContrast];
    const CLASSES: [Class; 8] = [
        Class::Plain,
        Class::Keyword,
        Class::Type,
        Class::Macro,
        Class::Literal,
        Class::Number,
        Class::Comment,
        Class::Lifetime,
    ];

    fn rgb(color: Option<Color>) -> [u8; 3] {
        match color {
            Some(Color::Indexed(i)) => {
                indexed_rgb(i).unwrap_or_else(|| panic!("basic colour {i} differs per terminal"))
            }
            Some(Color::Rgb(r, g, b)) => [r, g, b],
            other => panic!("{other:?} is not a fixed colour"),
        }
    }

    #[test]
    fn themes_parse_print_and_resolve() {
        for name in ["auto", "light", "dark", "high-contrast"] {
            assert_eq!(name.parse::<ThemeChoice>().unwrap().to_string(), name);
        }
        let err = "neon".parse::<ThemeChoice>().unwrap_err().to_string();
        assert_eq!(err, "--theme neon: expected auto, light, dark or high-contrast");
        assert_eq!(ThemeChoice::Auto.resolve(Some([255, 255, 255])), Theme::Light);
        assert_eq!(ThemeChoice::Auto.resolve(Some([253, 246, 227])), Theme::Light, "solarized light");
        assert_eq!(ThemeChoice::Auto.resolve(Some([0, 43, 54])), Theme::Dark, "solarized dark");
        assert_eq!(ThemeChoice::Auto.resolve(None), Theme::Dark);
        assert_eq!(ThemeChoice::HighContrast.resolve(Some([255, 255, 255])), Theme::HighContrast);
        assert_eq!(Theme::Light.toggled(Theme::Light), Theme::HighContrast);
        assert_eq!(Theme::HighContrast.toggled(Theme::Light), Theme::Light);
        assert_eq!(Theme::HighContrast.toggled(Theme::HighContrast), Theme::Dark);
    }

    #[test]
    fn themes_contrast_is_wcag_s() {
        assert!((contrast([0, 0, 0], [255, 255, 255]) - 21.0).abs() < 1e-9);
        assert!((contrast([119, 119, 119], [255, 255, 255]) - 4.48).abs() < 0.01);
        assert_eq!(indexed_rgb(16), Some([0, 0, 0]));
        assert_eq!(indexed_rgb(25), Some([0, 95, 175]));
        assert_eq!(indexed_rgb(231), Some([255, 255, 255]));
        assert_eq!(indexed_rgb(244), Some([128, 128, 128]));
        assert_eq!(indexed_rgb(7), None);
    }

    /// Every text colour of every theme against the background it is drawn on: its own, or
    /// the page's; code both plain and under the highlight band, as the code panel lays it.
    #[test]
    fn themes_keep_every_text_colour_at_wcag_aa_against_its_background() {
        for theme in THEMES {
            let p = theme.palette();
            let on_page = |style: Style| p.base.patch(style);
            let mut pairs: Vec<(String, Style)> = [
                ("base", p.base),
                ("title", p.title),
                ("subtitle", p.subtitle),
                ("key", p.key),
                ("border", p.border),
                ("gutter", p.gutter),
                ("highlight", p.highlight),
                ("highlight_gutter", p.highlight_gutter),
                ("value", p.value),
                ("value highlighted", p.value_highlighted()),
                ("busy", p.busy),
                ("error", p.error),
            ]
            .into_iter()
            .map(|(name, style)| (name.to_string(), on_page(style)))
            .collect();
            for class in CLASSES {
                let code = on_page(p.code(class));
                pairs.push((format!("{class:?}"), code));
                pairs.push((format!("{class:?} highlighted"), code.patch(p.highlight)));
            }
            for (name, style) in pairs {
                let ratio = contrast(rgb(style.fg), rgb(style.bg));
                assert!(ratio >= 4.5, "{theme:?} {name}: {ratio:.2}:1 is below 4.5:1");
                assert!(!style.add_modifier.contains(Modifier::DIM), "{theme:?} {name} dims");
            }
        }
    }
}
