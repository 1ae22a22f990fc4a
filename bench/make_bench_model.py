"""A random-weight Stable Diffusion 2-base-shaped pipeline (real sizes, diffusers layout),
for speed comparisons where the weights' values don't matter.

Copied from /work/shared/bench/make_bench_model.py (the project's shared bench folder) so that
this repository is self-contained.

Usage: make_bench_model.py OUT_DIR TOKENIZER_DIR [cpu|cuda]
  TOKENIZER_DIR holds vocab.json and merges.txt, e.g. tests/fixtures/sd2-tiny/model/tokenizer.
  cuda (added here, not in the shared copy) draws the random weights on the GPU: the same shapes,
  configs and files, other random values, and seconds instead of a minute or more of CPU work.
  The default, cpu, makes exactly the shared script's model."""
import sys, os, json, torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
out, vocab = sys.argv[1], sys.argv[2]
device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
torch.manual_seed(0)
torch.set_default_device(device)
te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
     num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
     bos_token_id=49406, eos_token_id=49407, pad_token_id=1))
unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
     use_linear_projection=True, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
     down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
     up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2, sample_size=512)
sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
     set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
tok = CLIPTokenizer(os.path.join(vocab, "vocab.json"), os.path.join(vocab, "merges.txt"), pad_token="!", model_max_length=77)
pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
     safety_checker=None, feature_extractor=None, requires_safety_checker=False)
pipe.to(torch.float16).to("cpu").save_pretrained(out, safe_serialization=True)
print("params unet", sum(p.numel() for p in unet.parameters()))
