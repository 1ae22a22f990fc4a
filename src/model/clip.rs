//! The CLIP text transformer (transformers' `CLIPTextModel`): token ids in, the per-token
//! embeddings Stable Diffusion's UNet cross-attends to out.
//!
//! sdlab has its own instead of candle-transformers' because that one's config has private
//! fields and fixed presets, while a diffusers folder describes its text encoder in
//! `text_encoder/config.json`; every size here comes from that file, so any CLIP text
//! encoder size loads. Module paths are the checkpoint's tensor names.

use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::bounds::{check_eps, first_out_of_range};
use super::json::parse_json;
use crate::fsutil::{limits, read_text};

/// Bounds on the sizes, far above any CLIP text encoder (SD's largest, OpenCLIP
/// ViT-bigG, has hidden_size 1280, 32 layers, 77 positions), so that nothing sized
/// by them overflows: the causal mask alone is `positions^2` floats.
const MAX_VOCAB: usize = 1 << 20;
const MAX_HIDDEN: usize = 65536;
const MAX_INTERMEDIATE: usize = 4 * MAX_HIDDEN;
const MAX_LAYERS: usize = 256;
const MAX_POSITIONS: usize = 4096;

/// The MLP non-linearity, named as transformers names it in `hidden_act`.
///
/// transformers' CLIP looks `hidden_act` up in its generic activation table, so more names
/// would load there; these are the ones CLIP text encoders use (`quick_gelu`: OpenAI CLIP,
/// SD 1.x; `gelu`: OpenCLIP, SD 2.x and SDXL's second encoder) plus `gelu_new`, the tanh
/// approximation, which candle computes natively. Anything else is rejected at load time
/// rather than silently computed differently.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClipActivation {
    /// Exact erf-based GELU, as `torch.nn.functional.gelu`.
    Gelu,
    /// `x * sigmoid(1.702 x)`, the approximation OpenAI trained CLIP with.
    QuickGelu,
    /// The tanh approximation of GELU.
    GeluNew,
}

impl Module for ClipActivation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Gelu => super::nn::gelu_erf(xs),
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::GeluNew => xs.gelu(),
        }
    }
}

/// transformers' `CLIPTextConfig` as stored in `text_encoder/config.json`; every size of the
/// model comes from here. Keys the transformer does not need (`projection_dim`, token ids,
/// dropout, ...) are ignored.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Longest input the learned position embeddings cover (77 for every SD text encoder).
    pub max_position_embeddings: usize,
    pub hidden_act: ClipActivation,
    /// Optional because transformers' own default (1e-5) applies when a config omits it.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}

impl ClipTextConfig {
    /// Reads a config and checks that its sizes fit together. Errors start with the file and
    /// the offending field (`.../config.json: hidden_act: unknown variant ...`), because serde
    /// alone does not say which field had the wrong type or value.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        Self::parse(&read_text(path, limits::CONFIG)?, path)
    }

    /// [`Self::from_file`] on text already read; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let config: Self = parse_json(text, path)?;
        config.check().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// What transformers itself refuses, and sizes past the bounds above, checked before
    /// any tensor is built so that a bad config fails with its field name instead of a
    /// reshape error deep in `forward` or an allocation that cannot succeed.
    fn check(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            ("intermediate_size", self.intermediate_size, MAX_INTERMEDIATE),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_HIDDEN),
            ("max_position_embeddings", self.max_position_embeddings, MAX_POSITIONS),
        ];
        first_out_of_range(&sizes)?;
        let heads = self.num_attention_heads;
        if !self.hidden_size.is_multiple_of(heads) {
            return Err(format!(
                "hidden_size: {} is not a multiple of num_attention_heads ({heads})",
                self.hidden_size
            ));
        }
        check_eps("layer_norm_eps", self.layer_norm_eps)
    }
}

/// LayerNorm computed in two passes (mean, then variance of the centred values) in f32, as
/// torch does. candle-nn's fused kernel uses E[x^2] - mean^2, which loses digits when a token's
/// hidden state has a large mean, and CLIP's residual stream has such outliers.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn new(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get(size, "weight")?, bias: vb.get(size, "bias")?, eps: eps as f32 })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm_slow(xs, &self.weight, &self.bias, self.eps)
    }
}

struct ClipTextEmbeddings {
    token_embedding: Embedding,
    position_embedding: Embedding,
}

impl ClipTextEmbeddings {
    fn new(vb: VarBuilder, c: &ClipTextConfig) -> Result<Self> {
        Ok(Self {
            token_embedding: candle_nn::embedding(c.vocab_size, c.hidden_size, vb.pp("token_embedding"))?,
            position_embedding: candle_nn::embedding(
                c.max_position_embeddings,
                c.hidden_size,
                vb.pp("position_embedding"),
            )?,
        })
    }

    fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (_batch, seq_len) = input_ids.dims2()?;
        let max = self.position_embedding.embeddings().dim(0)?;
        if seq_len > max {
            candle_core::bail!("{seq_len} tokens, but max_position_embeddings is {max}");
        }
        // Tokenizers hand out i64 (torch's dtype) or u32; candle's index_select wants one kind.
        let ids = input_ids.to_dtype(DType::U32)?;
        let positions = self.position_embedding.embeddings().narrow(0, 0, seq_len)?;
        self.token_embedding.forward(&ids)?.broadcast_add(&positions)
    }
}

struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl ClipAttention {
    fn new(vb: VarBuilder, c: &ClipTextConfig) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Self {
            q_proj: candle_nn::linear(h, h, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(h, h, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(h, h, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(h, h, vb.pp("out_proj"))?,
            num_heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
        })
    }

    /// `causal_mask` is f32 (seq, seq): 0 on and below the diagonal, -inf above.
    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let (batch, seq_len, hidden) = xs.dims3()?;
        let split_heads =
            |t: Tensor| t.reshape((batch, seq_len, self.num_heads, self.head_dim))?.transpose(1, 2)?.contiguous();
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = split_heads((self.q_proj.forward(xs)? * scale)?)?;
        let k = split_heads(self.k_proj.forward(xs)?)?;
        let v = split_heads(self.v_proj.forward(xs)?)?;
        // Mask and softmax in f32 whatever the model dtype, as transformers' eager attention
        // does: an f16 softmax over 77 scores loses precision, and -inf needs no f16 stand-in.
        let scores = q.matmul(&k.t()?)?.to_dtype(DType::F32)?.broadcast_add(causal_mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(xs.dtype())?;
        probs.matmul(&v)?.transpose(1, 2)?.reshape((batch, seq_len, hidden))?.apply(&self.out_proj)
    }
}

struct ClipMlp {
    fc1: Linear,
    activation: ClipActivation,
    fc2: Linear,
}

impl ClipMlp {
    fn new(vb: VarBuilder, c: &ClipTextConfig) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(c.hidden_size, c.intermediate_size, vb.pp("fc1"))?,
            activation: c.hidden_act,
            fc2: candle_nn::linear(c.intermediate_size, c.hidden_size, vb.pp("fc2"))?,
        })
    }
}

impl Module for ClipMlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.apply(&self.fc1)?.apply(&self.activation)?.apply(&self.fc2)
    }
}

/// Pre-LN: each sub-block sees a normalised copy and adds its result to the residual stream.
struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    mlp: ClipMlp,
}

impl ClipEncoderLayer {
    fn new(vb: VarBuilder, c: &ClipTextConfig) -> Result<Self> {
        Ok(Self {
            layer_norm1: LayerNorm::new(vb.pp("layer_norm1"), c.hidden_size, c.layer_norm_eps)?,
            self_attn: ClipAttention::new(vb.pp("self_attn"), c)?,
            layer_norm2: LayerNorm::new(vb.pp("layer_norm2"), c.hidden_size, c.layer_norm_eps)?,
            mlp: ClipMlp::new(vb.pp("mlp"), c)?,
        })
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let attn = self.self_attn.forward(&xs.apply(&self.layer_norm1)?, causal_mask)?;
        let xs = (xs + attn)?;
        let mlp = xs.apply(&self.layer_norm2)?.apply(&self.mlp)?;
        xs + mlp
    }
}

/// transformers' `CLIPTextTransformer` without the pooled output, which SD does not use.
pub struct ClipTextTransformer {
    embeddings: ClipTextEmbeddings,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
}

impl ClipTextTransformer {
    /// `vb` is rooted at the checkpoint's root. Hub SD checkpoints (and transformers before
    /// 5.0) name tensors `text_model.embeddings...`; transformers 5 saves `CLIPTextModel`
    /// without that prefix (the test fixtures do), so both layouts load.
    pub fn new(vb: VarBuilder, config: &ClipTextConfig) -> Result<Self> {
        config.check().map_err(candle_core::Error::msg)?;
        let vb =
            if vb.contains_tensor("text_model.embeddings.token_embedding.weight") { vb.pp("text_model") } else { vb };
        let layers_vb = vb.pp("encoder").pp("layers");
        let layers = (0..config.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(layers_vb.pp(i), config))
            .collect::<Result<_>>()?;
        Ok(Self {
            embeddings: ClipTextEmbeddings::new(vb.pp("embeddings"), config)?,
            layers,
            final_layer_norm: LayerNorm::new(vb.pp("final_layer_norm"), config.hidden_size, config.layer_norm_eps)?,
        })
    }

    /// last_hidden_state after final_layer_norm, (batch, seq, hidden): what SD conditions on.
    /// `input_ids` is (batch, seq) of U32 or I64, seq at most `max_position_embeddings`.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.run(input_ids, None)
    }

    /// Also every hidden state as transformers' `output_hidden_states=True` returns them: the
    /// embeddings output, then each layer's output (num_hidden_layers + 1 tensors, before the
    /// final layer norm). Clip-skip and layer-by-layer inspection read these.
    pub fn forward_with_hidden_states(&self, input_ids: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut hidden_states = Vec::with_capacity(self.layers.len() + 1);
        let last = self.run(input_ids, Some(&mut hidden_states))?;
        Ok((last, hidden_states))
    }

    /// The one forward pass; keeping hidden states only costs a reference-counted clone each.
    fn run(&self, input_ids: &Tensor, mut hidden_states: Option<&mut Vec<Tensor>>) -> Result<Tensor> {
        let mut xs = self.embeddings.forward(input_ids)?;
        let causal_mask = causal_mask(xs.dim(1)?, xs.device())?;
        for layer in &self.layers {
            if let Some(states) = hidden_states.as_mut() {
                states.push(xs.clone());
            }
            xs = layer.forward(&xs, &causal_mask)?;
        }
        if let Some(states) = hidden_states {
            states.push(xs.clone());
        }
        xs.apply(&self.final_layer_norm)
    }
}

/// Each token attends to itself and earlier tokens only, as CLIP was trained; this is why the
/// padding after the end token does not change the prompt tokens' embeddings.
fn causal_mask(seq_len: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> =
        (0..seq_len).flat_map(|i| (0..seq_len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(mask, (seq_len, seq_len), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    /// Loose on purpose: a forward pass in f32 differs from torch's only by summation order.
    const F32_TOLERANCE: f32 = 1e-4;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn text_encoder_dir(fixture: &str) -> PathBuf {
        fixtures().join(fixture).join("model/text_encoder")
    }

    fn config(fixture: &str) -> ClipTextConfig {
        ClipTextConfig::from_file(&text_encoder_dir(fixture).join("config.json")).unwrap()
    }

    fn load_with(fixture: &str, config: &ClipTextConfig, dtype: DType) -> ClipTextTransformer {
        let bytes = std::fs::read(text_encoder_dir(fixture).join("model.safetensors")).unwrap();
        let vb = VarBuilder::from_buffered_safetensors(bytes, dtype, &Device::Cpu).unwrap();
        ClipTextTransformer::new(vb, config).unwrap()
    }

    fn load(fixture: &str, dtype: DType) -> ClipTextTransformer {
        load_with(fixture, &config(fixture), dtype)
    }

    fn tensors(path: &Path) -> HashMap<String, Tensor> {
        candle_core::safetensors::load(path, &Device::Cpu).unwrap()
    }

    fn reference(fixture: &str) -> HashMap<String, Tensor> {
        tensors(&fixtures().join(fixture).join("reference.safetensors"))
    }

    fn hidden_states_reference() -> HashMap<String, Tensor> {
        tensors(&fixtures().join("clip/hidden_states.safetensors"))
    }

    /// diffusers' batch order: row 0 unconditional (negative prompt), row 1 the prompt.
    fn prompt_pair(reference: &HashMap<String, Tensor>) -> Tensor {
        Tensor::stack(&[&reference["negative_input_ids"], &reference["input_ids"]], 0).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let a = a.to_dtype(DType::F32).unwrap();
        let b = b.to_dtype(DType::F32).unwrap();
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn prompt_embeds_match_diffusers() {
        for fixture in ["sd2-tiny", "sd15-tiny"] {
            let reference = reference(fixture);
            let embeds = load(fixture, DType::F32).forward(&prompt_pair(&reference)).unwrap();
            let diff = max_abs_diff(&embeds, &reference["prompt_embeds"]);
            println!("{fixture}: prompt_embeds max abs diff {diff:e}");
            assert!(diff <= F32_TOLERANCE, "{fixture}: {diff}");
        }
    }

    #[test]
    fn hidden_states_match_transformers() {
        let expected = hidden_states_reference();
        for fixture in ["sd2-tiny", "sd15-tiny"] {
            let model = load(fixture, DType::F32);
            let ids = &expected[&format!("{fixture}.input_ids")];
            let (last, hidden) = model.forward_with_hidden_states(ids).unwrap();
            assert_eq!(hidden.len(), config(fixture).num_hidden_layers + 1);
            for (i, state) in hidden.iter().enumerate() {
                let diff = max_abs_diff(state, &expected[&format!("{fixture}.hidden_states.{i}")]);
                println!("{fixture}: hidden_states[{i}] max abs diff {diff:e}");
                assert!(diff <= F32_TOLERANCE, "{fixture} hidden_states[{i}]: {diff}");
            }
            let diff = max_abs_diff(&last, &expected[&format!("{fixture}.last_hidden_state")]);
            println!("{fixture}: last_hidden_state max abs diff {diff:e}");
            assert!(diff <= F32_TOLERANCE, "{fixture} last_hidden_state: {diff}");
            // Both entry points run the same loop, so they agree bit for bit.
            assert_eq!(max_abs_diff(&model.forward(ids).unwrap(), &last), 0.0);
        }
    }

    #[test]
    fn fewer_tokens_than_max_positions_match_transformers() {
        let expected = hidden_states_reference();
        let ids = &expected["sd15-tiny-short.input_ids"];
        assert_eq!(ids.dims(), [1, 10]);
        let last = load("sd15-tiny", DType::F32).forward(ids).unwrap();
        let diff = max_abs_diff(&last, &expected["sd15-tiny-short.last_hidden_state"]);
        println!("sd15-tiny, 10 tokens: last_hidden_state max abs diff {diff:e}");
        assert!(diff <= F32_TOLERANCE, "{diff}");
    }

    #[test]
    fn gelu_new_matches_transformers() {
        let expected = hidden_states_reference();
        let config = ClipTextConfig { hidden_act: ClipActivation::GeluNew, ..config("sd2-tiny") };
        let ids = &expected["sd2-tiny-gelu_new.input_ids"];
        let last = load_with("sd2-tiny", &config, DType::F32).forward(ids).unwrap();
        let diff = max_abs_diff(&last, &expected["sd2-tiny-gelu_new.last_hidden_state"]);
        println!("sd2-tiny as gelu_new: last_hidden_state max abs diff {diff:e}");
        // gelu and gelu_new outputs differ by only ~5e-4 on this model, so the bound is tighter
        // than F32_TOLERANCE to tell them apart.
        assert!(diff <= 2e-5, "{diff}");
    }

    /// f16 keeps 11 significant bits: on outputs up to ~3 in magnitude one rounding step is
    /// ~2e-3, and ~4e-3 was measured; 2e-2 allows ~10 steps, while a lost mask, an overflow or
    /// a wrong activation shows up as errors of order 1.
    #[test]
    fn f16_stays_close_to_f32_reference() {
        const F16_TOLERANCE: f32 = 2e-2;
        for fixture in ["sd2-tiny", "sd15-tiny"] {
            let reference = reference(fixture);
            let embeds = load(fixture, DType::F16).forward(&prompt_pair(&reference)).unwrap();
            assert_eq!(embeds.dtype(), DType::F16);
            let embeds = embeds.to_dtype(DType::F32).unwrap();
            let finite = embeds.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite());
            assert!(finite, "{fixture}: f16 output has inf or NaN");
            let diff = max_abs_diff(&embeds, &reference["prompt_embeds"]);
            println!("{fixture}: f16 vs f32 reference max abs diff {diff:e} (bound {F16_TOLERANCE:e})");
            assert!(diff <= F16_TOLERANCE, "{fixture}: {diff}");
        }
    }

    #[test]
    fn u32_and_i64_ids_give_the_same_result() {
        let reference = reference("sd2-tiny");
        let model = load("sd2-tiny", DType::F32);
        let ids = prompt_pair(&reference);
        assert_eq!(ids.dtype(), DType::I64);
        let from_i64 = model.forward(&ids).unwrap();
        let from_u32 = model.forward(&ids.to_dtype(DType::U32).unwrap()).unwrap();
        assert_eq!(max_abs_diff(&from_i64, &from_u32), 0.0);
    }

    #[test]
    fn more_tokens_than_positions_is_an_error() {
        let ids = Tensor::zeros((1, 78), DType::U32, &Device::Cpu).unwrap();
        let err = load("sd2-tiny", DType::F32).forward(&ids).unwrap_err();
        assert!(err.to_string().contains("max_position_embeddings is 77"), "{err}");
    }

    /// Hub checkpoints name tensors `text_model.…`; the fixtures (transformers 5) do not.
    #[test]
    fn text_model_prefixed_checkpoint_loads_the_same() {
        let path = text_encoder_dir("sd15-tiny").join("model.safetensors");
        let prefixed: HashMap<String, Tensor> =
            tensors(&path).into_iter().map(|(name, t)| (format!("text_model.{name}"), t)).collect();
        let vb = VarBuilder::from_tensors(prefixed, DType::F32, &Device::Cpu);
        let model = ClipTextTransformer::new(vb, &config("sd15-tiny")).unwrap();
        let reference = reference("sd15-tiny");
        let embeds = model.forward(&prompt_pair(&reference)).unwrap();
        let unprefixed = load("sd15-tiny", DType::F32).forward(&prompt_pair(&reference)).unwrap();
        assert_eq!(max_abs_diff(&embeds, &unprefixed), 0.0);
    }

    #[test]
    fn fixture_configs_parse() {
        let sd2 = config("sd2-tiny");
        assert_eq!(
            sd2,
            ClipTextConfig {
                vocab_size: 49408,
                hidden_size: 32,
                intermediate_size: 37,
                num_hidden_layers: 3,
                num_attention_heads: 4,
                max_position_embeddings: 77,
                hidden_act: ClipActivation::Gelu,
                layer_norm_eps: 1e-5,
            }
        );
        assert_eq!(config("sd15-tiny").hidden_act, ClipActivation::QuickGelu);
        let json = serde_json::to_string(&sd2).unwrap();
        assert!(json.contains(r#""hidden_act":"gelu""#), "{json}");
        assert_eq!(serde_json::from_str::<ClipTextConfig>(&json).unwrap(), sd2);
    }

    /// Writes the sd2-tiny config edited by `edit` to `<tmp>/text_encoder/config.json`, loads it.
    fn load_edited(
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> anyhow::Result<ClipTextConfig> {
        let text = std::fs::read_to_string(text_encoder_dir("sd2-tiny").join("config.json")).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        edit(json.as_object_mut().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("text_encoder/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, json.to_string()).unwrap();
        ClipTextConfig::from_file(&path)
    }

    fn error_of(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
        let message = load_edited(edit).unwrap_err().to_string();
        println!("{message}");
        assert!(message.contains("text_encoder/config.json: "), "{message}");
        message
    }

    #[test]
    fn config_errors_name_file_and_field() {
        let missing = error_of(|c| {
            c.remove("num_hidden_layers");
        });
        assert!(missing.contains("missing field `num_hidden_layers`"), "{missing}");

        let wrong_type = error_of(|c| {
            c.insert("hidden_size".into(), "32".into());
        });
        assert!(wrong_type.contains("config.json: field `hidden_size`: invalid type"), "{wrong_type}");

        let unknown_act = error_of(|c| {
            c.insert("hidden_act".into(), "relu".into());
        });
        assert!(unknown_act.contains("config.json: field `hidden_act`: unknown variant `relu`"), "{unknown_act}");
        assert!(unknown_act.contains("quick_gelu"), "{unknown_act}");

        let heads = error_of(|c| {
            c.insert("num_attention_heads".into(), 5.into());
        });
        assert!(heads.contains("config.json: hidden_size: 32 is not a multiple of num_attention_heads (5)"), "{heads}");

        let not_object = ClipTextConfig::from_file(&fixtures().join("README.md")).unwrap_err();
        assert!(not_object.to_string().contains("README.md: "), "{not_object}");
    }

    /// Zero heads used to be refused only as "not a multiple"; sizes past the bounds were not
    /// refused at all, and the causal mask of a huge `max_position_embeddings` cannot be built.
    #[test]
    fn refuses_sizes_past_their_bounds() {
        let path = Path::new("text_encoder/config.json");
        let text = std::fs::read_to_string(text_encoder_dir("sd2-tiny").join("config.json")).unwrap();
        assert_eq!(ClipTextConfig::parse(&text, path).unwrap(), config("sd2-tiny"));
        let cases = [
            ("num_attention_heads", "0", "num_attention_heads: expected 1 to 65536, found 0"),
            (
                "max_position_embeddings",
                "1000000000000",
                "max_position_embeddings: expected 1 to 4096, found 1000000000000",
            ),
            ("vocab_size", "0", "vocab_size: expected 1 to 1048576, found 0"),
            ("num_hidden_layers", "100000", "num_hidden_layers: expected 1 to 256, found 100000"),
            (
                "layer_norm_eps",
                "0",
                "layer_norm_eps: expected a positive number float32 can hold (1.2e-38 or more), found 0.0",
            ),
            (
                "layer_norm_eps",
                "1e-300",
                "layer_norm_eps: expected a positive number float32 can hold (1.2e-38 or more), found 1e-300",
            ),
        ];
        for (field, value, expected) in cases {
            let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
            json[field] = serde_json::from_str(value).unwrap();
            let msg = ClipTextConfig::parse(&json.to_string(), path).unwrap_err().to_string();
            assert_eq!(msg, format!("text_encoder/config.json: {expected}"));
        }
    }

    #[test]
    fn layer_norm_eps_defaults_like_transformers() {
        let config = load_edited(|c| {
            c.remove("layer_norm_eps");
        })
        .unwrap();
        assert_eq!(config.layer_norm_eps, 1e-5);
    }
}
