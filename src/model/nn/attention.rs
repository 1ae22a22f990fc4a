//! diffusers' `Attention` (models/attention_processor.py) for the UNet's
//! transformer blocks and the VAE's mid block, computed in query chunks so that no
//! full `(batch x heads x N x N)` score matrix is ever held.
//!
//! At 512x512 the UNet's first self-attention has N = 4096 query and key tokens:
//! its full float32 scores for 2 x 5 heads take 671 MB (and candle-transformers
//! keeps several such temporaries alive). Softmax is per query row, so query rows
//! can be processed in independent chunks with no change to the result; only the
//! chunk's scores exist at a time.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

/// Receives, per attention call, the attention probabilities averaged over heads:
/// `(batch, query tokens, key tokens)`, each row summing to 1.
pub type ProbsTap<'a> = &'a mut dyn FnMut(&Tensor) -> Result<()>;

pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    head_dim: usize,
    /// diffusers' `upcast_attention`: scores and softmax in float32 even when the
    /// model runs in float16 (SD 2.x needs it; its scores overflow float16).
    upcast: bool,
}

/// The tensor names of the projections: diffusers' current ones, or those of VAE
/// checkpoints saved before diffusers 0.14 (`query`, `key`, `value`, `proj_attn`).
const NAMES: [[&str; 4]; 2] = [["to_q", "to_k", "to_v", "to_out.0"], ["query", "key", "value", "proj_attn"]];

pub struct AttentionConfig {
    pub query_dim: usize,
    /// The key/value input width: the text embedding's for cross-attention.
    pub context_dim: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Bias on the q/k/v projections (the VAE's have one, the UNet's do not).
    pub qkv_bias: bool,
    pub upcast: bool,
}

impl Attention {
    pub fn new(vb: VarBuilder, c: &AttentionConfig) -> Result<Self> {
        let names = if vb.contains_tensor("query.weight") { NAMES[1] } else { NAMES[0] };
        let inner = c.heads * c.head_dim;
        Ok(Self {
            to_q: super::linear(vb.pp(names[0]), c.query_dim, inner, c.qkv_bias)?,
            to_k: super::linear(vb.pp(names[1]), c.context_dim, inner, c.qkv_bias)?,
            to_v: super::linear(vb.pp(names[2]), c.context_dim, inner, c.qkv_bias)?,
            to_out: super::linear(vb.pp(names[3]), inner, c.query_dim, true)?,
            heads: c.heads,
            head_dim: c.head_dim,
            upcast: c.upcast,
        })
    }

    /// `x`: `(batch, tokens, query_dim)`; `context`: the text embeddings for
    /// cross-attention, `None` for self-attention.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>, tap: Option<ProbsTap>) -> Result<Tensor> {
        let context = context.unwrap_or(x);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let (q, k, v) = (self.to_q.forward(x)?, self.to_k.forward(context)?, self.to_v.forward(context)?);
        if tap.is_none() && [&q, &k, &v].iter().all(|t| super::kernels::applies(t)) {
            let out = fused_attention(&q, &k, &v, self.heads, scale)?;
            return Ok(self.to_out.forward(&out)?);
        }
        let q = self.split_heads(&(q * scale)?)?;
        let (k, v) = (self.split_heads(&k)?, self.split_heads(&v)?);
        let out = chunked_attention(&q, &k, &v, self.heads, self.upcast, tap)?;
        let (bh, n, d) = out.dims3()?;
        let out = out.reshape((bh / self.heads, self.heads, n, d))?.transpose(1, 2)?.reshape((
            bh / self.heads,
            n,
            self.heads * d,
        ))?;
        Ok(self.to_out.forward(&out)?)
    }

    /// `(batch, tokens, heads*d)` -> `(batch*heads, tokens, d)`, contiguous for the matmuls.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        Ok(x.reshape((b, n, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()?.reshape((
            b * self.heads,
            n,
            self.head_dim,
        ))?)
    }
}

/// The bytes of scores one chunk may hold. On the CPU a chunk that stays around a
/// few tens of MB keeps memory flat at no cost in speed (the matmuls stay large);
/// on a GPU fewer, larger launches are faster and memory is plentiful.
fn chunk_budget(device: &Device) -> usize {
    if device.is_cpu() {
        32 << 20
    } else {
        1 << 30
    }
}

/// softmax(scale q kᵀ) v per head on float32 CPU tensors in the token layout
/// `(batch, tokens, heads * d)`, by the fused kernel: the result of splitting the
/// heads and `chunked_attention` (tested), without the copies.
fn fused_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let op = super::kernels::FusedAttention { heads, scale: scale as f32 };
    Ok(q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?)
}

/// softmax(q kᵀ) v over `(batch*heads, tokens, d)` tensors (q already scaled), one
/// chunk of query rows at a time.
pub fn chunked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    upcast: bool,
    tap: Option<ProbsTap>,
) -> Result<Tensor> {
    let (bh, nq, _) = q.dims3()?;
    let nk = k.dim(1)?;
    let score_dtype = if upcast { DType::F32 } else { q.dtype() };
    let row_bytes = bh * nk * score_dtype.size_in_bytes();
    let chunk = (chunk_budget(q.device()) / row_bytes.max(1)).clamp(1, nq);
    attention_in_chunks(q, k, v, heads, score_dtype, chunk, tap)
}

fn attention_in_chunks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    score_dtype: DType,
    chunk: usize,
    tap: Option<ProbsTap>,
) -> Result<Tensor> {
    let (bh, nq, _) = q.dims3()?;
    let nk = k.dim(1)?;
    let kt = k.to_dtype(score_dtype)?.t()?.contiguous()?;
    let mut outs = Vec::with_capacity(nq.div_ceil(chunk));
    let mut maps = Vec::new();
    for start in (0..nq).step_by(chunk) {
        let len = chunk.min(nq - start);
        let qc = q.narrow(1, start, len)?.to_dtype(score_dtype)?;
        let probs = super::softmax_last_dim(&qc.matmul(&kt)?)?;
        if tap.is_some() {
            maps.push(probs.to_dtype(DType::F32)?.reshape((bh / heads, heads, len, nk))?.mean(1)?);
        }
        outs.push(probs.to_dtype(v.dtype())?.matmul(v)?);
    }
    if let Some(tap) = tap {
        tap(&Tensor::cat(&maps, 1)?)?;
    }
    Ok(if outs.len() == 1 { outs.pop().expect("one chunk") } else { Tensor::cat(&outs, 1)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_give_the_unchunked_result_and_maps() {
        let dev = Device::Cpu;
        let (b, heads, nq, nk, d) = (2, 3, 10, 7, 4);
        let q = Tensor::randn(0f32, 1.0, (b * heads, nq, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b * heads, nk, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b * heads, nk, d), &dev).unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t().unwrap()).unwrap()).unwrap();
        let expected = probs.matmul(&v).unwrap();
        let expected_map = probs.reshape((b, heads, nq, nk)).unwrap().mean(1).unwrap();
        // the fused CPU kernel on the token layout, with more rows than one of its blocks
        let (nq_big, nk_big, dv, scale) = (150, 90, 5, 0.5);
        let tokens = |n: usize, width: usize, seed: f32| {
            (Tensor::randn(0f32, 1.0, (b, n, heads * width), &dev).unwrap() + seed as f64).unwrap()
        };
        let (qt, kt, vt) = (tokens(nq_big, d, 0.0), tokens(nk_big, d, 0.1), tokens(nk_big, dv, -0.1));
        let split = |t: &Tensor, width: usize| {
            let n = t.dim(1).unwrap();
            t.reshape((b, n, heads, width))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((b * heads, n, width))
                .unwrap()
        };
        let fused = fused_attention(&qt, &kt, &vt, heads, scale).unwrap();
        let plain = attention_in_chunks(
            &split(&(&qt * scale).unwrap(), d),
            &split(&kt, d),
            &split(&vt, dv),
            heads,
            DType::F32,
            nq_big,
            None,
        )
        .unwrap();
        let plain = plain
            .reshape((b, heads, nq_big, dv))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, nq_big, heads * dv))
            .unwrap();
        let fused_diff: f32 =
            (fused - plain).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        assert!(fused_diff < 1e-5, "fused kernel: {fused_diff}");
        for chunk in [1, 3, 10] {
            let mut map = None;
            let mut tap = |m: &Tensor| -> Result<()> {
                map = Some(m.clone());
                Ok(())
            };
            let out = attention_in_chunks(&q, &k, &v, heads, DType::F32, chunk, Some(&mut tap)).unwrap();
            let diff = |a: &Tensor, b: &Tensor| -> f32 {
                (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
            };
            assert!(diff(&out, &expected) < 1e-6, "chunk {chunk}");
            assert!(diff(&map.unwrap(), &expected_map) < 1e-6, "chunk {chunk}");
        }
    }
}
