"""Measures what a `shapes` model draws, with the judgements sdlab's tests make
(tests/shapes_semantics.rs): for prompts naming one shape's colour and place on a
named background, over several seeds, how often

- the background (the picture's border) is the named colour,
- the largest region of another colour is the named shape colour,
- that region's centre lies in the named half ("left", "right", "top", "bottom").

    python evaluate.py MODEL_DIR [--seeds 10] [--guidance 4] [--steps 20]

Each pixel is given the nearest of data.COLOURS; the border is the outer two
pixels; regions are 4-connected pixels of one colour.
"""

import argparse
from collections import Counter

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

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
    """(colour index, centre x, centre y, size) of the largest 4-connected region not of the background's colour."""
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
                best = (colour, float(np.mean(xs)), float(np.mean(ys)), len(pixels))
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


def in_place(place, x, y, size):
    half = size / 2
    return {"left": x < half, "right": x >= half, "top": y < half, "bottom": y >= half}[place]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(2)
    pipe = StableDiffusionPipeline.from_pretrained(a.model, torch_dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    totals = Counter()
    for colour, shape, place, background in CASES:
        prompt = f"a big {colour} {shape} {data.PLACE_WORDS[place][0]}, on {data.article(background)} {background} background"
        hits = Counter()
        for seed in range(a.seeds):
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
        totals.update(hits)
        print(f"{prompt:70s} " + " ".join(f"{k} {hits[k]}/{a.seeds}" for k in ("background", "colour", "place")))
    n = a.seeds * len(CASES)
    print("all: " + " ".join(f"{k} {totals[k] / n:.0%}" for k in ("background", "colour", "place")))


if __name__ == "__main__":
    main()
