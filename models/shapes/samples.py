"""Draws `samples.png`: what `shapes` draws, by sdlab itself (its suggested 20
DDIM steps and guidance 2), one prompt a row, one seed a column, each picture
scaled 3x. Standard library and Pillow only.

    python samples.py [--sdlab ../../target/release/sdlab] [--out samples.png]
"""

import argparse
import os
import subprocess
import tempfile

from PIL import Image, ImageDraw

PROMPTS = [
    "a big red circle on the left, on a blue background",
    "a big yellow star on the right, on a purple background",
    "a small blue square at the top, on a white background",
    "a big green triangle at the bottom, on an orange background",
    "a big white circle in the centre, on a black background",
    "a small red star on the left and a small yellow circle on the right, on green",
]
SEEDS = range(6)
SCALE = 3

p = argparse.ArgumentParser()
here = os.path.dirname(os.path.abspath(__file__))
p.add_argument("--sdlab", default=os.path.join(here, "..", "..", "target", "release", "sdlab"))
p.add_argument("--out", default=os.path.join(here, "samples.png"))
a = p.parse_args()

side = 64 * SCALE
label = 18
sheet = Image.new("RGB", (side * len(SEEDS), (side + label) * len(PROMPTS)), "white")
draw = ImageDraw.Draw(sheet)
with tempfile.TemporaryDirectory() as tmp:
    for row, prompt in enumerate(PROMPTS):
        top = row * (side + label)
        draw.text((4, top + 3), prompt, fill="black")
        for col, seed in enumerate(SEEDS):
            out = os.path.join(tmp, f"{row}-{seed}.png")
            subprocess.run([a.sdlab, "generate", "--prompt", prompt, "--seed", str(seed), "--out", out],
                           check=True, capture_output=True)
            picture = Image.open(out).convert("RGB").resize((side, side), Image.NEAREST)
            sheet.paste(picture, (col * side, top + label))
sheet.save(a.out)
print(f"wrote {a.out}")
