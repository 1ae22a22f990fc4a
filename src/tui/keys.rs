//! The key map as data: the footer shows the keys of the current screen, `?` shows
//! them all, and the README lists the same table. Tests and users rely on these keys.

use super::app::Screen;
use super::i18n::Labels;

/// One binding, for display.
pub struct KeyHint {
    pub keys: &'static str,
    pub action: &'static str,
    /// Where it works; `None` means on every screen.
    pub screen: Option<Screen>,
}

const fn global(keys: &'static str, action: &'static str) -> KeyHint {
    KeyHint { keys, action, screen: None }
}

const fn on(screen: Screen, keys: &'static str, action: &'static str) -> KeyHint {
    KeyHint { keys, action, screen: Some(screen) }
}

/// The attention view's keys: they choose the token whose map is shown.
pub const PICK_TOKEN: &str = "Up/Down";

/// Every key sdlab's terminal lab answers to (outside a text field).
pub const KEYMAP: &[KeyHint] = &[
    on(Screen::EncodePrompt, "e", "edit the prompt"),
    on(Screen::EncodePrompt, "E", "edit the negative prompt"),
    on(Screen::EncodePrompt, "Enter", "encode the prompts"),
    on(Screen::GetLatent, "e", "edit the seed"),
    on(Screen::GetLatent, "r", "random seed"),
    on(Screen::GetLatent, "Enter", "draw the latent"),
    on(Screen::GetLatent, "i", "image to image: a picture to start from"),
    on(Screen::GetLatent, "+ -", "image to image strength"),
    on(Screen::Denoise, "Space", "run / pause"),
    on(Screen::Denoise, "n", "one step"),
    on(Screen::Denoise, "u", "the UNet: each block's output shape"),
    on(Screen::Denoise, "a", "attention to each prompt token, over x0"),
    on(Screen::Denoise, "g", "go to step (type it, Enter)"),
    on(Screen::Denoise, "+/-", "guidance scale"),
    on(Screen::Denoise, "S", "next sampler (from the start)"),
    on(Screen::Denoise, "Left/Right", "browse the steps taken"),
    on(Screen::Denoise, PICK_TOKEN, "pick a token (in the a view)"),
    on(Screen::Denoise, "v", "decode this x0 with the VAE"),
    on(Screen::Denoise, "b", "branch: fork the run at this step (its prompt, its guidance)"),
    on(Screen::Denoise, "[ ]", "switch between the session's runs"),
    on(Screen::Denoise, "c", "compare with the parent run, x0 beside x0"),
    on(Screen::VaeDecode, "d", "decode the latent"),
    on(Screen::VaeDecode, "s", "save as PNG"),
    global("1-4 Tab", "stages"),
    global("t", "talk mode: the stages as slides, with their code"),
    global("w", "write the session"),
    global("o", "open a session"),
    global("L", "LoRAs: add, remove, scale; Enter fuses them and restarts from the latent"),
    global("?", "all keys"),
    global("q Ctrl-C", "quit"),
];

/// Talk mode's own keys (the lab's keys work there too). A presenter's clicker sends
/// PageDown / PageUp, some send Right / Left.
pub const TALK_KEYMAP: &[(&str, &str)] = &[
    ("PageDown Right", "next: run the stage / next operation / next slide"),
    ("PageUp Left", "back (keeps everything computed)"),
    ("c", "high-contrast theme on / off"),
    ("t", "back to the lab view"),
];

/// The hints on a slide, in the talk's language.
pub fn talk_hints(labels: &Labels) -> [(&'static str, &'static str); 6] {
    [
        ("PageDown", labels.key_next),
        ("PageUp", labels.key_back),
        ("t", labels.key_lab),
        ("c", labels.key_contrast),
        ("?", labels.key_keys),
        ("q", labels.key_quit),
    ]
}

/// In a text field: what editing keys do.
pub const FIELD_KEYS: &[(&str, &str)] = &[
    ("Enter", "submit"),
    ("Esc", "leave the field"),
    ("Ctrl-Left/Right", "word jump"),
    ("Ctrl-W", "delete word"),
    ("Home/End", "start / end"),
];

/// The bindings that work on `screen`, its own first.
pub fn hints_for(screen: Screen) -> impl Iterator<Item = &'static KeyHint> {
    let own = KEYMAP.iter().filter(move |k| k.screen == Some(screen));
    own.chain(KEYMAP.iter().filter(|k| k.screen.is_none()))
}
