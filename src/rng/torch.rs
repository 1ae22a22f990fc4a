//! torch's CPU generator and `torch.randn`, reimplemented so that a seed gives
//! the same starting noise (and the same DDIM eta noise) as diffusers on the CPU.
//!
//! Two paths exist in torch (`aten/src/ATen/native/cpu/DistributionTemplates.h`,
//! `normal_kernel`) and both are mirrored here:
//! - float32 tensors of at least 16 elements go through `normal_fill`: 24-bit
//!   uniforms turned into normals 16 at a time by float32 Box-Muller;
//! - smaller tensors draw each element from `at::normal_distribution<double>`,
//!   which uses 53-bit uniforms and keeps the second Box-Muller value in the
//!   generator for the next call.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

const MT_N: usize = 624;
const MT_M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// torch's CPU generator (MT19937 plus torch's normal cache), so seeds mean the same noise as in diffusers.
///
/// The state is kept as plain numbers so a session file can store it and
/// resume the exact stream later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TorchRngState")]
pub struct TorchRng {
    /// The 624 words of MT19937 state; a `Vec` because serde has no impls for arrays this long.
    state: Vec<u32>,
    /// Position of the next word in `state`; 624 means the block is used up and must be regenerated.
    index: usize,
    /// torch's `next_double_normal_sample`: the sine half of the last double
    /// Box-Muller pair, handed out by the next small (< 16 element) draw.
    /// Kept as the f64's bits because serde_json (without its
    /// `float_roundtrip` feature) may move a parsed f64 by an ulp, and a
    /// resumed session must continue bit-exactly.
    next_double_normal_bits: Option<u64>,
}

/// The serialized form, checked before it becomes a [`TorchRng`]: a state read
/// from a file must not make [`TorchRng::next_u32`] index past the 624 words.
#[derive(Deserialize)]
struct TorchRngState {
    state: Vec<u32>,
    index: usize,
    next_double_normal_bits: Option<u64>,
}

impl TryFrom<TorchRngState> for TorchRng {
    type Error = String;
    fn try_from(raw: TorchRngState) -> Result<Self, String> {
        if raw.state.len() != MT_N {
            return Err(format!("generator state: expected {MT_N} words of MT19937 state, found {}", raw.state.len()));
        }
        if raw.index > MT_N {
            return Err(format!("generator state: index {} is past the {MT_N} words", raw.index));
        }
        Ok(Self { state: raw.state, index: raw.index, next_double_normal_bits: raw.next_double_normal_bits })
    }
}

impl TorchRng {
    /// Seeds like `torch.Generator().manual_seed(seed)`: torch's mt19937 keeps
    /// only the low 32 bits, so `seed` and `seed + 2^32` give the same stream.
    pub fn new(seed: u64) -> Self {
        let mut state = vec![0u32; MT_N];
        state[0] = seed as u32;
        for i in 1..MT_N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        Self { state, index: MT_N, next_double_normal_bits: None }
    }

    /// exactly torch.randn(n, generator=g) in float32 (both paths: n >= 16 and n < 16), advancing the state as torch does
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n >= 16 {
            self.randn_fill(n)
        } else {
            (0..n).map(|_| self.normal_f64() as f32).collect()
        }
    }

    /// torch.randn(shape) as a float32 candle Tensor on the CPU
    pub fn randn_tensor(&mut self, shape: &[usize]) -> candle_core::Result<Tensor> {
        let n = shape.iter().product();
        Tensor::from_vec(self.randn(n), shape, &Device::Cpu)
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= MT_N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn twist(&mut self) {
        for i in 0..MT_N {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % MT_N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + MT_M) % MT_N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// `uniform_real_distribution<float>`: one 32-bit draw, keep 24 bits (float's mantissa).
    fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// `uniform_real_distribution<double>`: `random64()` is two 32-bit draws,
    /// the first one high, of which 53 bits (double's mantissa) are kept.
    fn uniform_f64(&mut self) -> f64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (((hi << 32) | lo) & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `at::normal_distribution<double>`: Box-Muller on two fresh uniforms,
    /// the first giving the angle, the second the radius; the sine half is
    /// cached and consumed by the next call instead of drawing.
    fn normal_f64(&mut self) -> f64 {
        if let Some(bits) = self.next_double_normal_bits.take() {
            return f64::from_bits(bits);
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal_bits = Some((r * theta.sin()).to_bits());
        r * theta.cos()
    }

    /// torch's `normal_fill`: all uniforms first, then Box-Muller over blocks
    /// of 16; a ragged tail is not left short but replaced by a fresh block of
    /// 16 written over the last 16 elements, which is why more words are drawn.
    fn randn_fill(&mut self, n: usize) -> Vec<f32> {
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for x in tail.iter_mut() {
                *x = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        data
    }
}

/// `normal_fill_16` as torch's vectorised (AVX2/AVX-512) kernel computes it:
/// every step in float32, including `theta = float(2 pi) * u2`. The
/// transcendental functions are evaluated in double and rounded, which is
/// within an ulp of torch's SLEEF float versions.
fn box_muller_16(data: &mut [f32]) {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0f32 - data[j];
        let u2 = data[j + 8];
        let ln_u1 = f64::from(u1).ln() as f32;
        let radius = (-2.0f32 * ln_u1).sqrt();
        let theta = f64::from(two_pi * u2);
        data[j] = radius * theta.cos() as f32;
        data[j + 8] = radius * theta.sin() as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

    const TOLERANCE: f32 = 1e-6;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    /// The `cases` JSON list that the fixture scripts put in the safetensors metadata.
    fn cases<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Vec<T> {
        let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
        let json = meta.metadata().as_ref().and_then(|m| m.get("cases")).expect("metadata key `cases`");
        serde_json::from_str(json).unwrap()
    }

    fn reference(st: &SafeTensors, name: &str, shape: &[usize]) -> Vec<f32> {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        assert_eq!(view.shape(), shape, "{name}");
        view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        seed: u64,
        shape: Vec<usize>,
    }

    /// A case of `randn_extra.safetensors`: `draws` are shapes drawn one after
    /// another from one generator; draw `i` is stored as tensor `{name}.{i}`.
    #[derive(serde::Deserialize)]
    struct SequenceCase {
        name: String,
        seed: u64,
        draws: Vec<Vec<usize>>,
    }

    #[test]
    fn mt19937_matches_reference_stream() {
        // Reference values of std::mt19937 with its default seed 5489: the
        // first output, and the 10000th that the C++ standard specifies.
        let mut rng = TorchRng::new(5489);
        assert_eq!(rng.next_u32(), 3_499_211_612);
        let last = (1..10_000).map(|_| rng.next_u32()).last().unwrap();
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn matches_torch_randn_fixture() {
        let bytes = fixture("randn.safetensors");
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let cases: Vec<Case> = cases(&bytes);
        assert!(!cases.is_empty());
        for case in cases {
            let expected = reference(&st, &case.name, &case.shape);
            let mut rng = TorchRng::new(case.seed);
            let got = rng.randn_tensor(&case.shape).unwrap();
            assert_eq!(got.dims(), case.shape.as_slice());
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let diff = max_abs_diff(&got, &expected);
            println!("{} seed {} shape {:?}: max abs diff {diff:e}", case.name, case.seed, case.shape);
            assert!(diff <= TOLERANCE, "{}: max abs diff {diff:e}", case.name);
        }
    }

    #[test]
    fn matches_torch_randn_extra_fixture() {
        let bytes = fixture("randn_extra.safetensors");
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let cases: Vec<SequenceCase> = cases(&bytes);
        assert!(!cases.is_empty());
        for case in cases {
            let mut rng = TorchRng::new(case.seed);
            for (i, shape) in case.draws.iter().enumerate() {
                let name = format!("{}.{i}", case.name);
                let expected = reference(&st, &name, shape);
                let got = rng.randn(shape.iter().product());
                let diff = max_abs_diff(&got, &expected);
                println!("{name} seed {} shape {shape:?}: max abs diff {diff:e}", case.seed);
                assert!(diff <= TOLERANCE, "{name}: max abs diff {diff:e}");
            }
        }
    }

    #[test]
    fn seed_uses_low_32_bits() {
        let a = TorchRng::new(5).randn(40);
        let b = TorchRng::new((1u64 << 32) + 5).randn(40);
        assert_eq!(a, b);
        assert_ne!(a, TorchRng::new(6).randn(40));
    }

    #[test]
    fn serde_round_trip_resumes_mid_sequence() {
        let mut rng = TorchRng::new(1234);
        rng.randn(64);
        // An odd small draw leaves a cached normal, which must survive too.
        rng.randn(3);
        assert!(rng.next_double_normal_bits.is_some());
        let json = serde_json::to_string(&rng).unwrap();
        let mut resumed: TorchRng = serde_json::from_str(&json).unwrap();
        assert_eq!(resumed, rng);
        for n in [5, 20, 1, 700] {
            let expected = rng.randn(n);
            let got = resumed.randn(n);
            assert_eq!(got, expected, "draw of {n} after resuming");
        }
        assert_eq!(resumed, rng);
    }

    #[test]
    fn a_state_of_the_wrong_length_is_an_error_not_a_panic() {
        let mut json: serde_json::Value = serde_json::to_value(TorchRng::new(1)).unwrap();
        json["state"].as_array_mut().unwrap().truncate(10);
        let msg = serde_json::from_value::<TorchRng>(json).unwrap_err().to_string();
        assert!(msg.contains("expected 624 words of MT19937 state, found 10"), "{msg}");
        let mut json: serde_json::Value = serde_json::to_value(TorchRng::new(1)).unwrap();
        json["index"] = 625.into();
        let msg = serde_json::from_value::<TorchRng>(json).unwrap_err().to_string();
        assert!(msg.contains("index 625 is past the 624 words"), "{msg}");
    }
}
