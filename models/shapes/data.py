"""The `shapes` data set: flat shapes in named colours, sizes and places on a
coloured background, each with a caption written the way people write prompts.

Drawn on the fly from a seed (no download, no files): `sample(rng)` returns a
64x64 RGB image as a uint8 array and its caption. `python data.py N DIR` writes
N examples as PNGs with their captions, to look at.
"""

import math
import random
import sys

from PIL import Image, ImageDraw

SIZE = 64

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ["circle", "square", "triangle", "star"]
# Radius in pixels of the circle a shape fits in.
SIZES = {"small": 9, "big": 17}
# Centre of each place, in pixels.
PLACES = {
    "left": (16, 32),
    "right": (48, 32),
    "top": (32, 16),
    "bottom": (32, 48),
    "centre": (32, 32),
}
PLACE_WORDS = {
    "left": ["on the left", "at the left", "to the left"],
    "right": ["on the right", "at the right", "to the right"],
    "top": ["at the top", "on top", "in the top half"],
    "bottom": ["at the bottom", "in the bottom half", "below"],
    "centre": ["in the centre", "in the center", "in the middle"],
}


def polygon(kind, cx, cy, r):
    """The outline of a shape as points, or None for a circle."""
    if kind == "square":
        s = r * 0.8
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if kind == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if kind == "star":
        points = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            radius = r if i % 2 == 0 else r * 0.45
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        return points
    return None


def draw_shape(draw, kind, colour, cx, cy, r):
    points = polygon(kind, cx, cy, r)
    fill = COLOURS[colour]
    if points is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(points, fill=fill)


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def describe(shape):
    """One shape's words, some left out now and then so the model learns defaults."""
    kind, colour, size, place, rng = shape
    words = []
    if rng.random() < 0.85:
        words.append(size)
    words += [colour, kind]
    text = article(words[0]) + " " + " ".join(words)
    if place is not None:
        text += " " + rng.choice(PLACE_WORDS[place])
    return text


def sample(rng, lone=False):
    """One (image, caption): 1 to 3 shapes at distinct places, distinct colours.
    With lone=True, one big shape whose place is always said: pictures in which
    only the place words tell where the shape goes."""
    background = rng.choice(list(COLOURS))
    count = 1 if lone else rng.choices([1, 2, 3], weights=[6, 3, 1])[0]
    places = rng.sample(list(PLACES), count) if count > 1 else [rng.choice(list(PLACES))]
    colours = rng.sample([c for c in COLOURS if c != background], count)
    image = Image.new("RGB", (SIZE, SIZE), COLOURS[background])
    draw = ImageDraw.Draw(image)
    shapes = []
    for place, colour in zip(places, colours):
        kind = rng.choice(SHAPES)
        size = "big" if lone else rng.choice(list(SIZES)) if count == 1 else "small"
        cx, cy = PLACES[place]
        # A little jitter, so a place is a region and not a pixel.
        cx += rng.uniform(-3, 3)
        cy += rng.uniform(-3, 3)
        draw_shape(draw, kind, colour, cx, cy, SIZES[size])
        # A lone centred shape is often described without its place.
        said_place = None if (not lone and count == 1 and place == "centre" and rng.random() < 0.5) else place
        shapes.append((kind, colour, size, said_place, rng))
    parts = [describe(s) for s in shapes]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    style = rng.random()
    if style < 0.5:
        caption = f"{body}, on {article(background)} {background} background"
    elif style < 0.8:
        caption = f"{body} on {background}"
    else:
        caption = f"{background} background, {body}"
    return image, caption


if __name__ == "__main__":
    n, out = int(sys.argv[1]), sys.argv[2]
    import os

    os.makedirs(out, exist_ok=True)
    rng = random.Random(0)
    with open(os.path.join(out, "captions.txt"), "w") as f:
        for i in range(n):
            image, caption = sample(rng)
            image.save(os.path.join(out, f"{i:03d}.png"))
            f.write(f"{i:03d}.png\t{caption}\n")
