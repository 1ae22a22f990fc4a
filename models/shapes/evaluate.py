"""Measures what a `shapes` model draws, with the judgements sdlab's tests make
(tests/shapes_semantics.rs): for prompts naming one shape's colour and place on a
named background, over several seeds, how often

- the background (the picture's border) is the named colour,
- the largest region of another colour is the named shape colour,
- that region's centre lies in the named half ("left", "right", "top", "bottom"),
- the colour word's cross-attention peaks inside that region: each layer's map
  from the prompt's half of the guided batch, averaged over heads, brought to the
  latent grid (nearest), averaged over layers (DAAM) and summed over the steps.

    python evaluate.py MODEL_DIR [--seeds 10] [--guidance 2] [--steps 20]

Each pixel is given the nearest of data.COLOURS; the border is the outer two
pixels; regions are 4-connected pixels of one colour.
"""

import argparse
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor

import data

NAMES = list(data.COLOURS)
PALETTE = np.array([data.COLOURS[n] for n in NAMES], dtype=np.float32)


def classes(image):
    """The index of the nearest named colour, per pixel."""
    d = ((image[:, :, None, :].astype(np.float32) - PALETTE[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


def border_colour(c):
    ring = np.concatenate([c[:2].ravel(), c[-2:].ravel(), c[2:-2, :2].ravel(), c[2:-2, -2:].ravel()])
    return Counter(ring.tolist()).most_common(1)[0][0]


def largest_region(c, background):
    """(colour index, centre x, centre y, size, its (y, x) pixels) of the largest 4-connected region not of the
    background's colour."""
    h, w = c.shape
    seen = np.zeros_like(c, dtype=bool)
    best = None
    for y in range(h):
        for x in range(w):
            if seen[y, x] or c[y, x] == background:
                continue
            colour, stack, pixels = c[y, x], [(y, x)], []
            seen[y, x] = True
            while stack:
                py, px = stack.pop()
                pixels.append((py, px))
                for ny, nx in ((py + 1, px), (py - 1, px), (py, px + 1), (py, px - 1)):
                    if 0 <= ny < h and 0 <= nx < w and not seen[ny, nx] and c[ny, nx] == colour:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
            if best is None or len(pixels) > best[3]:
                ys, xs = zip(*pixels)
                best = (colour, float(np.mean(xs)), float(np.mean(ys)), len(pixels), set(pixels))
    return best


CASES = [
    # (shape colour, shape, place, background)
    ("red", "circle", "left", "blue"),
    ("yellow", "star", "right", "purple"),
    ("blue", "square", "top", "white"),
    ("green", "triangle", "bottom", "orange"),
    ("white", "circle", "right", "black"),
    ("orange", "square", "left", "green"),
    ("purple", "circle", "top", "yellow"),
    ("black", "star", "bottom", "red"),
]


class AttentionSum:
    """The colour word's DAAM map, summed over the steps of one picture."""

    def __init__(self, latent):
        self.latent, self.token, self.sum = latent, None, None

    def start(self, token):
        self.token, self.sum = token, torch.zeros(self.latent, self.latent)

    def peak(self):
        """(x, y) of the peak's latent pixel."""
        i = int(self.sum.argmax())
        return i % self.latent, i // self.latent


class Capture:
    """A cross-attention processor that adds the prompt's map of one token to an
    AttentionSum, then runs the attention as diffusers does."""

    def __init__(self, into, layers):
        self.into, self.layers, self.attention = into, layers, AttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        probs = attn.get_attention_scores(q, k, None)
        batch = hidden_states.shape[0]
        prompt = probs.view(batch, attn.heads, *probs.shape[1:]).mean(1)[-1, :, self.into.token]
        side = int(round(prompt.shape[0] ** 0.5))
        grid = F.interpolate(prompt.view(1, 1, side, side), size=self.into.latent, mode="nearest")[0, 0]
        # The mean over the layers, summed over the steps.
        self.into.sum += grid / self.layers
        return self.attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


JUDGEMENTS = ("background", "colour", "place", "attention")


def prompt_of(colour, shape, place, background):
    """A case's prompt, with data.py's first wording of its place."""
    return f"a big {colour} {shape} {data.PLACE_WORDS[place][0]}, on {data.article(background)} {background} background"


def load(model):
    pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def in_place(place, x, y, size):
    half = size / 2
    return {"left": x < half, "right": x >= half, "top": y < half, "bottom": y >= half}[place]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(2)
    pipe = load(a.model)
    latent = data.SIZE // pipe.vae_scale_factor
    scale = data.SIZE // latent
    attention = AttentionSum(latent)
    names = list(pipe.unet.attn_processors)
    cross = [n for n in names if "attn2" in n]
    pipe.unet.set_attn_processor({n: Capture(attention, len(cross)) if n in cross else AttnProcessor() for n in names})
    totals = Counter()
    for colour, shape, place, background in CASES:
        prompt = prompt_of(colour, shape, place, background)
        hits = Counter()
        word = pipe.tokenizer.convert_tokens_to_ids(colour + "</w>")
        token = pipe.tokenizer(prompt).input_ids.index(word)
        for seed in range(a.seeds):
            attention.start(token)
            image = pipe(prompt, num_inference_steps=a.steps, guidance_scale=a.guidance, width=data.SIZE,
                         height=data.SIZE, generator=torch.Generator("cpu").manual_seed(seed),
                         output_type="np").images[0]
            c = classes((image * 255).round())
            bg = border_colour(c)
            region = largest_region(c, bg)
            hits["background"] += NAMES[bg] == background
            if region is not None:
                hits["colour"] += NAMES[region[0]] == colour
                hits["place"] += in_place(place, region[1], region[2], data.SIZE)
                x, y = attention.peak()
                # The centre of the peak's latent pixel, in image pixels.
                hits["attention"] += (y * scale + scale // 2, x * scale + scale // 2) in region[4]
        totals.update(hits)
        print(f"{prompt:70s} " + " ".join(f"{k} {hits[k]}/{a.seeds}" for k in JUDGEMENTS))
    n = a.seeds * len(CASES)
    print("all: " + " ".join(f"{k} {totals[k] / n:.0%}" for k in JUDGEMENTS))


if __name__ == "__main__":
    main()
