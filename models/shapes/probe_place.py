"""A quick look, for a checkpoint, at whether the words choose the place: the
x0 a model predicts at the first DDIM step (guided, whatever its prediction
type), decoded and averaged over several noises, and the share of the shape
colour that lies in the named half.

    python probe_place.py MODEL_DIR [--noises 8] [--guidance 4] [--steps 20]

Each prompt of evaluate.py is asked with its own place and with the opposite
one. A model that follows places gives shares near 1 for its own place and near
0 for the opposite; one whose layout the noise chooses gives the same share for
both. It takes seconds, where evaluate.py takes minutes.
"""

import argparse

import torch
from diffusers import DDIMScheduler

import data
from evaluate import CASES, load, prompt_of

OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def share(images, colour, place):
    """The share of `colour` (a soft nearest-colour weight per pixel, averaged over the pictures) in the
    named half of `images` (N, 3, H, W)."""
    target = torch.tensor(data.COLOURS[colour], dtype=torch.float32).view(1, 3, 1, 1) / 255
    weight = (-(images - target).pow(2).sum(1) * 20).exp().mean(0)
    h, w = weight.shape
    half = {"left": weight[:, : w // 2], "right": weight[:, w // 2:], "top": weight[: h // 2],
            "bottom": weight[h // 2:]}[place]
    return float(half.sum() / weight.sum().clamp(min=1e-6))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--noises", type=int, default=8)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(2)
    pipe = load(a.model)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(a.steps)
    t = scheduler.timesteps[0]
    latent = data.SIZE // pipe.vae_scale_factor

    def embed(prompt):
        ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        return pipe.text_encoder(ids.input_ids)[0].expand(a.noises, -1, -1)

    own, opposite = [], []
    with torch.no_grad():
        x = torch.randn(a.noises, 4, latent, latent, generator=torch.Generator("cpu").manual_seed(0))
        unconditional = pipe.unet(x, t, encoder_hidden_states=embed("")).sample
        for colour, shape, place, background in CASES:
            shares = []
            for asked in (place, OPPOSITE[place]):
                prompt = prompt_of(colour, shape, asked, background)
                conditional = pipe.unet(x, t, encoder_hidden_states=embed(prompt)).sample
                guided = unconditional + a.guidance * (conditional - unconditional)
                x0 = scheduler.step(guided, t, x).pred_original_sample
                image = (pipe.vae.decode(x0 / pipe.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
                shares.append(share(image, colour, place))
            own.append(shares[0])
            opposite.append(shares[1])
            print(f"{colour:6s} {shape:8s} {place:6s}: share in that half {shares[0]:.2f} when asked there, "
                  f"{shares[1]:.2f} when asked for the opposite")
    print(f"all: {sum(own) / len(own):.2f} asked there, {sum(opposite) / len(opposite):.2f} asked opposite")


if __name__ == "__main__":
    main()
