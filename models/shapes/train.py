"""Trains `shapes`, a small but real text-to-image latent diffusion model, with
Stable Diffusion's own architecture types (CLIPTextModel, AutoencoderKL,
UNet2DConditionModel with cross-attention, DDIMScheduler), on pictures drawn by
data.py. Seeded; writes a diffusers pipeline folder (fp16 safetensors), its loss
curve, and a diffusers reference run of every intermediate for sdlab's parity test.

    pip install torch diffusers transformers safetensors pillow
    python train.py --out model              # the full run (CPU: see README.md)
    python train.py --out /tmp/smoke --smoke # a few iterations, to check a setup

Two phases: the VAE learns to reconstruct the pictures, then the UNet and the
text encoder learn together to denoise the VAE's latents given the caption (one
caption in ten is dropped, so classifier-free guidance works).
"""

import argparse
import json
import os
import random
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

import data

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = os.path.join(HERE, "..", "..", "tests", "fixtures", "sd2-tiny", "model", "tokenizer")

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--images", type=int, default=20000, help="pictures drawn for training")
p.add_argument("--vae-steps", type=int, default=2000)
p.add_argument("--vae-batch", type=int, default=16)
p.add_argument("--vae-mid-attention", action=argparse.BooleanOptionalAction, default=True,
               help="self-attention in the VAE's mid blocks (without it a shape's latent depends less on the background)")
p.add_argument("--vae", help="reuse this trained VAE folder and skip phase 1 (to iterate on the UNet)")
p.add_argument("--unet-steps", type=int, default=13000)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate of the UNet phase")
p.add_argument("--offset-noise", type=float, default=0.1,
               help="std of a per-channel constant added to the training noise")
p.add_argument("--min-snr", type=float, default=5.0, help="gamma of min-SNR loss weighting")
p.add_argument("--snr-floor", type=float, default=0.0,
               help="the least weight, in x0 terms, of a noisy step (0: plain min-SNR)")
p.add_argument("--v-prediction", action="store_true",
               help="predict v on a schedule rescaled to zero terminal SNR, with trailing timesteps")
p.add_argument("--place-share", type=float, default=0.0,
               help="share of each UNet batch drawn from lone big shapes whose place is always said")
p.add_argument("--place-images", type=int, default=4000, help="pictures drawn for --place-share")
p.add_argument("--save-every", type=int, default=0, help="save the pipeline every N UNet steps, to watch it learn")
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--smoke", action="store_true", help="a few iterations on a handful of images")
a = p.parse_args()
if a.smoke:
    a.images, a.place_images, a.vae_steps, a.unet_steps, a.batch, a.vae_batch = 64, 16, 3, 3, 8, 8
lone = round(a.batch * a.place_share)  # lone shapes per UNet batch
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
rng = random.Random(a.seed)
started = time.time()


def log(text):
    print(f"[{time.time() - started:7.1f}s] {text}", flush=True)


# --- data -------------------------------------------------------------------
def draw(count, rng, lone=False):
    pictures, captions = [], []
    for _ in range(count):
        image, caption = data.sample(rng, lone)
        pictures.append(np.asarray(image))
        captions.append(caption)
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1, captions


pixels, captions = draw(a.images, rng)
# Their own generator, so that the main pictures and phase 1 stay as without them.
place_pixels, place_captions = draw(a.place_images, random.Random(a.seed + 1), lone=True) if lone else (None, [])
log(f"{a.images} pictures drawn, and {len(place_captions)} lone shapes")

tokenizer = CLIPTokenizer(os.path.join(VOCAB, "vocab.json"), os.path.join(VOCAB, "merges.txt"), pad_token="!",
                          model_max_length=77)
tokenize = lambda texts: tokenizer(texts, padding="max_length", max_length=77, truncation=True,
                                   return_tensors="pt").input_ids
ids = tokenize(captions)
empty = tokenize([""])

# --- models -----------------------------------------------------------------
text_config = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
    num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=0, projection_dim=64)
text_encoder = CLIPTextModel(text_config)
vae = AutoencoderKL(block_out_channels=(16, 32, 32), in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
    latent_channels=4, layers_per_block=1, norm_num_groups=8, sample_size=data.SIZE,
    mid_block_add_attention=a.vae_mid_attention)
unet = UNet2DConditionModel(sample_size=data.SIZE // 4, in_channels=4, out_channels=4,
    block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64, attention_head_dim=4, use_linear_projection=True)
# With --v-prediction the last timestep's input is pure noise and its target is
# -x0, so the words alone must place the shape; with epsilon on SD's schedule a
# place error at the noisiest steps costs almost nothing, and places stay unlearned.
objective = (dict(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")
             if a.v_prediction else dict(prediction_type="epsilon"))
scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
    set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000, **objective)
sizes = {n: sum(p.numel() for p in m.parameters()) for n, m in [("text", text_encoder), ("vae", vae), ("unet", unet)]}
log(f"parameters: {sizes} ({2 * sum(sizes.values()) / 1e6:.1f} MB in fp16)")
losses = {"vae": [], "unet": []}

# --- phase 1: the VAE --------------------------------------------------------
if a.vae:
    vae = AutoencoderKL.from_pretrained(a.vae, torch_dtype=torch.float32)
    a.vae_steps = 0
opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
# Cosine decay and clipping: at a constant 1e-3 a run diverged late (loss 0.007 -> 0.06).
vae_sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(1, s / max(1, a.vae_steps)))))
vae.train()
for step in range(a.vae_steps):
    batch = pixels[torch.randint(0, len(pixels), (a.vae_batch,))]
    posterior = vae.encode(batch).latent_dist
    recon = vae.decode(posterior.sample()).sample
    kl = posterior.kl().mean() / batch[0].numel()
    loss = F.mse_loss(recon, batch) + 1e-4 * kl
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
    opt.step()
    vae_sched.step()
    losses["vae"].append(loss.item())
    if step % 100 == 0 or step == a.vae_steps - 1:
        log(f"vae {step}/{a.vae_steps} loss {np.mean(losses['vae'][-100:]):.5f}")
vae.eval().requires_grad_(False)

with torch.no_grad():
    encode = lambda px: torch.cat([vae.encode(px[i:i + 256]).latent_dist.mean for i in range(0, len(px), 256)])
    latents = encode(pixels)
    # SD's own recipe: scale latents to unit variance.
    scaling = float(1 / latents.std())
    latents = latents * scaling
    if lone:
        place_latents, place_ids = encode(place_pixels) * scaling, tokenize(place_captions)
vae.register_to_config(scaling_factor=scaling)
log(f"latents {tuple(latents.shape)}, scaling_factor {scaling:.5f}")


def save_pipeline(model_dir, half=False):
    """The diffusers folder, with the tokenizer folder of SD 2 (CLIP's real
    vocabulary, pad "!") as the fixtures have it."""
    shutil.rmtree(model_dir, ignore_errors=True)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    for m in (text_encoder, unet, vae):
        m.to(torch.float16 if half else torch.float32)
    pipe.save_pretrained(model_dir, safe_serialization=True)
    for m in (text_encoder, unet, vae):
        m.to(torch.float32)
    tokdir = os.path.join(model_dir, "tokenizer")
    shutil.rmtree(tokdir)
    shutil.copytree(VOCAB, tokdir)
    return pipe


# --- phase 2: UNet and text encoder together ---------------------------------
params = list(unet.parameters()) + list(text_encoder.parameters())
opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=1e-2)
warmup = max(1, a.unet_steps // 20)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: min(1, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1, s / a.unet_steps))))
unet.train()
text_encoder.train()
alphas = scheduler.alphas_cumprod
for step in range(a.unet_steps):
    pick = torch.randint(0, len(latents), (a.batch - lone,))
    x0, batch_ids = latents[pick], ids[pick]
    if lone:
        # Pictures where only the words can place the shape, in every batch: a
        # warm-up on them alone was forgotten within 250 steps of the full set.
        pick = torch.randint(0, len(place_latents), (lone,))
        x0, batch_ids = torch.cat([x0, place_latents[pick]]), torch.cat([batch_ids, place_ids[pick]])
    batch_ids[torch.rand(a.batch) < 0.1] = empty[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (a.batch,))
    # Offset noise: the latents are small (16x16), so the mean of pure noise would
    # otherwise carry the colour at t=999 and the seed, not the prompt, would
    # choose the background.
    noise = torch.randn_like(x0) + a.offset_noise * torch.randn(a.batch, x0.shape[1], 1, 1)
    ab = alphas[t].view(-1, 1, 1, 1)
    noisy = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    pred = unet(noisy, t, encoder_hidden_states=text_encoder(batch_ids)[0]).sample
    # Min-SNR weighting (Hang et al. 2023), with a floor: in x0 terms each
    # step's weight is its SNR clamped to [floor, gamma] (an epsilon loss weighs
    # x0 by SNR, a v loss by SNR + 1). Without a floor the noisiest steps, where
    # the layout is chosen, are hardly asked to place anything, and with zero
    # terminal SNR the last one is not asked at all.
    snr = alphas[t] / (1 - alphas[t])
    x0_weight = snr.clamp(min=a.snr_floor, max=a.min_snr)
    if a.v_prediction:
        target, weight = ab.sqrt() * noise - (1 - ab).sqrt() * x0, x0_weight / (snr + 1)
    else:
        target, weight = noise, x0_weight / snr
    loss = (weight * F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    losses["unet"].append(loss.item())
    if step % 100 == 0 or step == a.unet_steps - 1:
        log(f"unet {step}/{a.unet_steps} loss {np.mean(losses['unet'][-100:]):.5f}")
    if a.save_every and (step + 1) % a.save_every == 0:
        save_pipeline(os.path.join(a.out, "checkpoints", f"step-{step + 1}"))
unet.eval()
text_encoder.eval()
minutes = (time.time() - started) / 60
log(f"trained in {minutes:.1f} min")

# --- save: weights as fp16, and what the README states ------------------------
for m in (text_encoder, unet, vae):
    m.requires_grad_(False)
    for prm in m.parameters():
        prm.copy_(prm.half().float())
pipe = save_pipeline(os.path.join(a.out, "model"), half=True)
json.dump({"seed": a.seed, "images": a.images, "vae_steps": a.vae_steps, "vae_batch": a.vae_batch, "vae_mid_attention": a.vae_mid_attention,
           "unet_steps": a.unet_steps, "batch": a.batch, "lr": a.lr, "offset_noise": a.offset_noise, "min_snr": a.min_snr, "snr_floor": a.snr_floor, "v_prediction": a.v_prediction,
           "place_share": a.place_share, "place_images": a.place_images,
           "threads": a.threads, "minutes": round(minutes, 1), "parameters": sizes,
           "losses": {k: [round(float(np.mean(v[i:i + 50])), 5) for i in range(0, len(v), 50)]
                      for k, v in losses.items()}},
          open(os.path.join(a.out, "training.json"), "w"), indent=1)

# --- a reference run for sdlab's parity test, as tests/fixtures' runs ---------
run = {"prompt": "a big red circle on the left, on a blue background", "negative_prompt": "", "seed": 1,
       "steps": 20, "guidance_scale": 4.0, "width": data.SIZE, "height": data.SIZE}
ref = {}
with torch.no_grad():
    pids, nids = tokenize(run["prompt"]), tokenize(run["negative_prompt"])
    embeds = torch.cat([text_encoder(nids)[0], text_encoder(pids)[0]])
    sched = DDIMScheduler.from_config(scheduler.config)
    x = torch.randn((1, 4, data.SIZE // 4, data.SIZE // 4), generator=torch.Generator("cpu").manual_seed(run["seed"]))
    ref.update(input_ids=pids[0], negative_input_ids=nids[0], prompt_embeds=embeds, init_latents=x.clone())
    sched.set_timesteps(run["steps"])
    ref["timesteps"] = sched.timesteps.clone().to(torch.int64)
    alpha, x0s, xs, eps = [], [], [], []
    for t in sched.timesteps:
        out = unet(torch.cat([x] * 2), t, encoder_hidden_states=embeds).sample
        u, c = out.chunk(2)
        guided = u + run["guidance_scale"] * (c - u)
        step = sched.step(guided, t, x)
        x = step.prev_sample
        alpha.append(float(sched.alphas_cumprod[t]))
        x0s.append(step.pred_original_sample[0]); xs.append(x[0].clone()); eps.append(guided[0])
    ref["alpha_prod_t"] = torch.tensor(alpha, dtype=torch.float64)
    ref["pred_original_sample"], ref["latents"] = torch.stack(x0s), torch.stack(xs)
    ref["guided_model_output"] = torch.stack(eps)
    image = (vae.decode(x / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    ref["image"] = image[0].permute(1, 2, 0)
    piped = pipe(run["prompt"], num_inference_steps=run["steps"], guidance_scale=run["guidance_scale"],
                 width=data.SIZE, height=data.SIZE, generator=torch.Generator("cpu").manual_seed(run["seed"]),
                 output_type="np").images[0]
    diff = float(np.abs(piped - ref["image"].numpy()).max())
    assert diff < 1e-5, f"the recorded loop and StableDiffusionPipeline differ by {diff}"
save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(a.out, "reference.safetensors"))
run.update(scheduler="ddim", prediction_type=scheduler.config.prediction_type,
           made_with={"diffusers": __import__("diffusers").__version__, "torch": torch.__version__})
json.dump(run, open(os.path.join(a.out, "run.json"), "w"), indent=2)
from PIL import Image

Image.fromarray((ref["image"].numpy() * 255).round().astype("uint8")).save(os.path.join(a.out, "image.png"))
log(f"saved {a.out}")
