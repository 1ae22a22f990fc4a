"""Draws the loss curves of a training run (`training.json`) as a PNG, with PIL
alone: `python loss_curve.py RUN/training.json loss.png`."""

import json
import math
import sys

from PIL import Image, ImageDraw

W, H, PAD = 640, 360, 48
run = json.load(open(sys.argv[1]))
image = Image.new("RGB", (W, H), "white")
draw = ImageDraw.Draw(image)
draw.rectangle([PAD, PAD // 2, W - PAD // 2, H - PAD], outline="black")
curves = {"vae": (40, 90, 200), "unet": (200, 60, 40)}
values = [v for k in curves for v in run["losses"][k] if v > 0]
lo, hi = math.log10(min(values)), math.log10(max(values))
for name, colour in curves.items():
    losses = run["losses"][name]
    if len(losses) < 2:
        continue
    points = [
        (PAD + i * (W - 1.5 * PAD) / (len(losses) - 1),
         H - PAD - (math.log10(v) - lo) / (hi - lo or 1) * (H - 1.5 * PAD))
        for i, v in enumerate(losses)
    ]
    draw.line(points, fill=colour, width=2)
    draw.text((points[-1][0] - 120, points[-1][1] - 14), f"{name}: {losses[-1]:.4f}", fill=colour)
draw.text((PAD, H - PAD + 8), "training steps (each curve its own phase, 50 steps a point)", fill="black")
draw.text((4, PAD // 2), f"{10 ** hi:.3g}", fill="black")
draw.text((4, H - PAD - 10), f"{10 ** lo:.3g}", fill="black")
draw.text((PAD + 8, PAD // 2 + 6), "MSE loss (the UNet's min-SNR weighted), log scale", fill="black")
image.save(sys.argv[2])
