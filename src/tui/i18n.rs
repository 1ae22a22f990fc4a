//! The labels of talk mode in English and Japanese: the talk sdlab grew from is given in
//! Japanese, to an audience that reads Japanese first. Code, variable names and values
//! stay as they are in the source. Every label exists in both languages by construction
//! (one [`Labels`] value per language, all fields required).

use std::fmt;
use std::str::FromStr;

use anyhow::bail;

/// `--lang`: the language of talk mode's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Ja,
}

impl Lang {
    /// The language the locale asks for, POSIX order: `LC_ALL`, then `LC_MESSAGES`, then
    /// `LANG`, the first one set and not empty; Japanese when it starts with `ja`
    /// (`ja_JP.UTF-8`, `ja`), English otherwise. `var` reads the environment (a parameter
    /// so tests need not change the process's).
    pub fn from_locale(var: impl Fn(&str) -> Option<String>) -> Lang {
        let locale = ["LC_ALL", "LC_MESSAGES", "LANG"].into_iter().filter_map(var).find(|v| !v.is_empty());
        match locale {
            Some(l) if l.starts_with("ja") => Lang::Ja,
            _ => Lang::En,
        }
    }

    pub fn labels(self) -> &'static Labels {
        match self {
            Lang::En => &EN,
            Lang::Ja => &JA,
        }
    }

    /// The slide's title: `Step 3: denoise`.
    pub fn slide_title(self, number: usize, stage: &str) -> String {
        match self {
            Lang::En => format!("Step {number}: {stage}"),
            Lang::Ja => format!("ステップ{number}: {stage}"),
        }
    }

    /// Which denoising step the slide is at: `step 3 / 10`.
    pub fn step_of(self, step: usize, total: usize) -> String {
        match self {
            Lang::En => format!("step {step} / {total}"),
            Lang::Ja => format!("{step} / {total} 回目"),
        }
    }

    /// What PageDown does next on this slide: `PageDown: run denoise step 3`.
    pub fn next_runs(self, what: &str) -> String {
        match self {
            Lang::En => format!("PageDown runs {what}"),
            Lang::Ja => format!("PageDown で {what} を実行"),
        }
    }

    /// The prompt's tokens, without the padding: `19 of 77 tokens used, the rest is padding`.
    pub fn tokens_used(self, used: usize, total: usize) -> String {
        match self {
            Lang::En => format!("{used} of {total} tokens used, the rest is padding"),
            Lang::Ja => format!("{total} トークン中 {used} 個を使用（残りはパディング）"),
        }
    }

    /// The decoded picture's origin: `decoded after step 10 / 10`.
    /// The branch slide's title: which run left which, and after which step.
    pub fn forked(self, branch: &str, parent: &str, at: usize) -> String {
        match self {
            Lang::En => format!("{branch} forked from {parent} after step {at}"),
            Lang::Ja => format!("{branch}: {parent} の {at} ステップ後から分岐"),
        }
    }

    pub fn decoded_after(self, step: usize, total: usize) -> String {
        match self {
            Lang::En => format!("decoded after step {step} / {total}"),
            Lang::Ja => format!("{step} / {total} ステップ後にデコード"),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        })
    }
}

impl FromStr for Lang {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "en" => Ok(Lang::En),
            "ja" => Ok(Lang::Ja),
            _ => bail!("--lang {s}: expected en (English) or ja (Japanese)"),
        }
    }
}

/// Every fixed label of talk mode, in one language.
pub struct Labels {
    /// One line under each stage's title: what the stage does, in the talk's words.
    pub encode_prompt_about: &'static str,
    pub get_latent_about: &'static str,
    pub denoise_about: &'static str,
    pub vae_decode_about: &'static str,
    /// The code panel's title, before the file name.
    pub code: &'static str,
    pub tokens: &'static str,
    pub embeddings: &'static str,
    pub latent_colour: &'static str,
    pub channel: &'static str,
    /// The latents going into a denoising step, and coming out of it.
    pub latents_in: &'static str,
    pub latents_out: &'static str,
    pub predicted_x0: &'static str,
    pub image: &'static str,
    /// The three operations of a denoising step, as the walk shows them one at a time.
    pub op_unet: &'static str,
    pub op_guidance: &'static str,
    pub op_scheduler: &'static str,
    pub not_yet: &'static str,
    pub computing: &'static str,
    pub error: &'static str,
    pub last_slide: &'static str,
    /// Key hints: what each key does in talk mode.
    pub key_next: &'static str,
    pub key_back: &'static str,
    pub key_lab: &'static str,
    pub key_contrast: &'static str,
    pub key_keys: &'static str,
    pub key_quit: &'static str,
}

const EN: Labels = Labels {
    encode_prompt_about: "prompt -> 77 token ids -> CLIP text encoder -> prompt_embeds (negative + prompt)",
    get_latent_about: "seeded Gaussian noise, 1/8 of the image size: where the picture starts",
    denoise_about: "each step: UNet twice (negative + prompt) -> guidance -> scheduler.step",
    vae_decode_about: "latents / scaling_factor -> VAE decoder -> pixels",
    code: "code",
    tokens: "tokens",
    embeddings: "prompt_embeds: negative (top), prompt (bottom)",
    latent_colour: "latents as colour",
    channel: "channel",
    latents_in: "latents in",
    latents_out: "latents out",
    predicted_x0: "predicted x0",
    image: "image",
    op_unet: "UNet predicts the noise",
    op_guidance: "guidance mixes the two predictions",
    op_scheduler: "scheduler.step removes one step of noise",
    not_yet: "not computed yet",
    computing: "computing",
    error: "error",
    last_slide: "last slide",
    key_next: "next",
    key_back: "back",
    key_lab: "lab view",
    key_contrast: "contrast",
    key_keys: "keys",
    key_quit: "quit",
};

const JA: Labels = Labels {
    encode_prompt_about:
        "プロンプト → 77個のトークンID → CLIPテキストエンコーダ → prompt_embeds（ネガティブ＋プロンプト）",
    get_latent_about: "シードから作るガウスノイズ（画像の1/8の大きさ）：ここから画像が生まれる",
    denoise_about: "各ステップ：UNetを2回（ネガティブ＋プロンプト）→ ガイダンス → scheduler.step",
    vae_decode_about: "latents / scaling_factor → VAEデコーダ → 画素",
    code: "コード",
    tokens: "トークン",
    embeddings: "prompt_embeds：上がネガティブ、下がプロンプト",
    latent_colour: "潜在変数（カラー表示）",
    channel: "チャンネル",
    latents_in: "潜在変数（入力）",
    latents_out: "潜在変数（出力）",
    predicted_x0: "予測された x0",
    image: "画像",
    op_unet: "UNetがノイズを予測",
    op_guidance: "ガイダンスで2つの予測を混ぜる",
    op_scheduler: "scheduler.stepでノイズを1ステップ分除く",
    not_yet: "まだ計算していません",
    computing: "計算中",
    error: "エラー",
    last_slide: "最後のスライドです",
    key_next: "次へ",
    key_back: "戻る",
    key_lab: "通常画面",
    key_contrast: "コントラスト",
    key_keys: "キー一覧",
    key_quit: "終了",
};

#[cfg(test)]
mod tests {
    use super::*;

    fn locale(vars: &[(&str, &str)]) -> Lang {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Lang::from_locale(|key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    #[test]
    fn the_locale_picks_the_language_in_posix_order() {
        assert_eq!(locale(&[]), Lang::En);
        assert_eq!(locale(&[("LANG", "ja_JP.UTF-8")]), Lang::Ja);
        assert_eq!(locale(&[("LANG", "en_US.UTF-8")]), Lang::En);
        assert_eq!(locale(&[("LANG", "C")]), Lang::En);
        // LC_ALL wins over LANG, LC_MESSAGES over LANG, an empty one is skipped
        assert_eq!(locale(&[("LC_ALL", "en_GB.UTF-8"), ("LANG", "ja_JP.UTF-8")]), Lang::En);
        assert_eq!(locale(&[("LC_MESSAGES", "ja_JP.UTF-8"), ("LANG", "en_US.UTF-8")]), Lang::Ja);
        assert_eq!(locale(&[("LC_ALL", ""), ("LANG", "ja")]), Lang::Ja);
    }

    #[test]
    fn lang_parses_en_and_ja_and_says_what_it_expects_otherwise() {
        assert_eq!("ja".parse::<Lang>().unwrap(), Lang::Ja);
        assert_eq!("EN".parse::<Lang>().unwrap(), Lang::En);
        let err = "xx".parse::<Lang>().unwrap_err().to_string();
        assert_eq!(err, "--lang xx: expected en (English) or ja (Japanese)");
        assert_eq!(Lang::Ja.to_string(), "ja");
    }

    #[test]
    fn titles_name_the_stage_in_both_languages() {
        assert_eq!(Lang::En.slide_title(1, "encode_prompt"), "Step 1: encode_prompt");
        assert_eq!(Lang::Ja.slide_title(4, "vae_decode"), "ステップ4: vae_decode");
        assert_eq!(Lang::Ja.step_of(3, 10), "3 / 10 回目");
    }
}
