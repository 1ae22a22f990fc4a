//! Stage 1, `encode_prompt`: text to the embeddings the UNet attends to.

use anyhow::Result;
use candle_core::{Device, Tensor};

use crate::model::clip::ClipTextTransformer;
use crate::model::tokenizer::{ClipTokenizer, TokenizedPrompt};

/// Both prompts as token ids and as the text encoder's last hidden state.
#[derive(Clone)]
pub struct PromptEncoding {
    pub prompt: TokenizedPrompt,
    pub negative: TokenizedPrompt,
    /// `(2, 77, D)`: row 0 the negative (unconditional) prompt, row 1 the prompt,
    /// the order diffusers concatenates them in for classifier-free guidance.
    pub prompt_embeds: Tensor,
}

/// Tokenizes both prompts to 77 ids and encodes them in one batch. The negative
/// prompt is always encoded (an empty one when none is given), as diffusers does
/// whenever guidance is on.
pub fn encode_prompt(
    tokenizer: &ClipTokenizer,
    text_encoder: &ClipTextTransformer,
    prompt: &str,
    negative_prompt: &str,
    device: &Device,
) -> Result<PromptEncoding> {
    let prompt = tokenizer.encode(prompt)?;
    let negative = tokenizer.encode(negative_prompt)?;
    let input_ids = Tensor::new(vec![negative.ids.clone(), prompt.ids.clone()], device)?;
    let prompt_embeds = text_encoder.forward(&input_ids)?;
    Ok(PromptEncoding { prompt, negative, prompt_embeds })
}
