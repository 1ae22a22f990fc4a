//! How slides look. Projectors wash out dark greys and dim text, so the high-contrast
//! theme draws on pure black with white and saturated colours and never dims. In both
//! themes colour only repeats what a mark already says: the highlighted lines also
//! carry `>` in the gutter, values carry `<-`, errors say `error`.

use std::fmt;
use std::str::FromStr;

use anyhow::bail;
use ratatui::style::{Color, Modifier, Style};

use super::source::Class;

/// `--theme`: the look of talk mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Theme {
    /// The terminal's own colours, with syntax colours on top.
    #[default]
    Default,
    /// Black background, white text, bold highlights: for a projector in a lit room.
    HighContrast,
}

impl Theme {
    /// `c` switches between the two, for when the room turns out brighter than planned.
    pub fn toggled(self) -> Theme {
        match self {
            Theme::Default => Theme::HighContrast,
            Theme::HighContrast => Theme::Default,
        }
    }

    pub fn palette(self) -> Palette {
        match self {
            Theme::Default => Palette {
                base: Style::new(),
                title: Style::new().fg(Color::White).bg(Color::Blue).add_modifier(Modifier::BOLD),
                subtitle: Style::new().add_modifier(Modifier::BOLD),
                key: Style::new().fg(Color::Black).bg(Color::Gray).add_modifier(Modifier::BOLD),
                border: Style::new(),
                gutter: Style::new().fg(Color::DarkGray),
                highlight: Style::new().bg(Color::Indexed(237)).add_modifier(Modifier::BOLD),
                highlight_gutter: Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                value: Style::new().fg(Color::LightCyan).add_modifier(Modifier::ITALIC),
                busy: Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                error: Style::new().fg(Color::LightRed).add_modifier(Modifier::BOLD),
                keyword: Style::new().fg(Color::LightMagenta).add_modifier(Modifier::BOLD),
                type_name: Style::new().fg(Color::LightYellow),
                macro_name: Style::new().fg(Color::LightBlue),
                literal: Style::new().fg(Color::LightGreen),
                number: Style::new().fg(Color::LightCyan),
                comment: Style::new().fg(Color::DarkGray).add_modifier(Modifier::ITALIC),
                lifetime: Style::new().fg(Color::LightRed),
            },
            Theme::HighContrast => Palette {
                base: Style::new().fg(Color::White).bg(Color::Black),
                title: Style::new().fg(Color::Black).bg(Color::White).add_modifier(Modifier::BOLD),
                subtitle: Style::new().fg(Color::White).add_modifier(Modifier::BOLD),
                key: Style::new().fg(Color::Black).bg(Color::White).add_modifier(Modifier::BOLD),
                border: Style::new().fg(Color::White),
                gutter: Style::new().fg(Color::White),
                highlight: Style::new().fg(Color::Black).bg(Color::Yellow).add_modifier(Modifier::BOLD),
                highlight_gutter: Style::new().fg(Color::Black).bg(Color::Yellow).add_modifier(Modifier::BOLD),
                value: Style::new().fg(Color::Black).bg(Color::LightCyan).add_modifier(Modifier::BOLD),
                busy: Style::new().fg(Color::Black).bg(Color::Yellow).add_modifier(Modifier::BOLD),
                error: Style::new().fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD),
                keyword: Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                type_name: Style::new().fg(Color::LightCyan).add_modifier(Modifier::BOLD),
                macro_name: Style::new().fg(Color::LightGreen).add_modifier(Modifier::BOLD),
                literal: Style::new().fg(Color::LightGreen),
                number: Style::new().fg(Color::LightCyan),
                comment: Style::new().fg(Color::White).add_modifier(Modifier::ITALIC),
                lifetime: Style::new().fg(Color::LightMagenta),
            },
        }
    }
}

/// The styles a slide is drawn with.
#[derive(Clone, Copy, Debug)]
pub struct Palette {
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

const NAMES: [(Theme, &str); 2] = [(Theme::Default, "default"), (Theme::HighContrast, "high-contrast")];

impl fmt::Display for Theme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NAMES.iter().find(|(t, _)| t == self).map_or("", |(_, name)| name))
    }
}

impl FromStr for Theme {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match NAMES.iter().find(|(_, name)| name.eq_ignore_ascii_case(s)) {
            Some((theme, _)) => Ok(*theme),
            None => bail!("--theme {s}: expected default or high-contrast"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn themes_parse_print_and_toggle() {
        assert_eq!("high-contrast".parse::<Theme>().unwrap(), Theme::HighContrast);
        assert_eq!(Theme::HighContrast.to_string(), "high-contrast");
        assert_eq!(Theme::Default.toggled(), Theme::HighContrast);
        let err = "neon".parse::<Theme>().unwrap_err().to_string();
        assert_eq!(err, "--theme neon: expected default or high-contrast");
    }

    #[test]
    fn high_contrast_never_dims_and_sets_both_colours_of_the_page() {
        let p = Theme::HighContrast.palette();
        assert_eq!((p.base.fg, p.base.bg), (Some(Color::White), Some(Color::Black)));
        let all = [p.title, p.subtitle, p.key, p.border, p.gutter, p.highlight, p.value, p.busy, p.error];
        for style in all.into_iter().chain([Class::Comment, Class::Keyword].map(|c| p.code(c))) {
            assert!(!style.add_modifier.contains(Modifier::DIM), "{style:?}");
            assert_ne!(style.fg, Some(Color::DarkGray), "{style:?}");
        }
    }
}
