"""Shapes that several painters share: gradients, figures, faces, flames, houses."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw, ImageOps

from memes.templates import BASE_SIZE, RGB


def vertical_gradient(top: RGB, bottom: RGB, size: int = BASE_SIZE) -> Image.Image:
    # colorize on Pillow's built-in ramp is C code: far faster than per-row drawing.
    ramp = Image.linear_gradient("L").resize((size, size), Image.Resampling.BILINEAR)
    return ImageOps.colorize(ramp, top, bottom).convert("RGB")


def stick_figure(
    draw: ImageDraw.ImageDraw,
    x: int,
    y: int,
    shirt: RGB,
    skin: RGB = (241, 194, 150),
    head_dx: int = 0,
) -> None:
    """Cartoon person standing with feet at (x, y); head_dx turns the head sideways."""
    draw.line([(x - 18, y), (x - 8, y - 90)], fill=(40, 40, 60), width=12)
    draw.line([(x + 18, y), (x + 8, y - 90)], fill=(40, 40, 60), width=12)
    draw.rounded_rectangle([x - 30, y - 190, x + 30, y - 85], radius=18, fill=shirt)
    draw.line([(x - 28, y - 180), (x - 45, y - 110)], fill=shirt, width=14)
    draw.line([(x + 28, y - 180), (x + 45, y - 110)], fill=shirt, width=14)
    hx = x + head_dx
    draw.ellipse([hx - 26, y - 250, hx + 26, y - 196], fill=skin, outline=(90, 60, 40), width=2)
    eye_x = hx + (10 if head_dx >= 0 else -10)
    draw.ellipse([eye_x - 4, y - 230, eye_x + 4, y - 222], fill=(20, 20, 20))


def face(draw: ImageDraw.ImageDraw, cx: int, cy: int, r: int, mood: str) -> None:
    draw.ellipse(
        [cx - r, cy - r, cx + r, cy + r], fill=(176, 120, 84), outline=(60, 40, 30), width=3
    )
    draw.arc([cx - r, cy - r - 6, cx + r, cy + r // 2], 180, 360, fill=(30, 25, 20), width=10)
    for ex in (cx - r // 3, cx + r // 3):
        draw.ellipse([ex - 6, cy - 14, ex + 6, cy - 2], fill=(25, 20, 15))
    if mood == "no":
        draw.arc([cx - 22, cy + 18, cx + 22, cy + 44], 200, 340, fill=(60, 20, 20), width=5)
    else:
        draw.arc([cx - 26, cy + 4, cx + 26, cy + 36], 20, 160, fill=(60, 20, 20), width=5)


def flame(
    draw: ImageDraw.ImageDraw, x: int, base: int, height: int, width: int, rng: random.Random
) -> None:
    for scale, colour in ((1.0, (220, 40, 20)), (0.7, (250, 130, 20)), (0.4, (255, 220, 60))):
        h, w = int(height * scale), int(width * scale)
        tip = x + rng.randint(-w // 3, w // 3)
        draw.polygon([(x - w // 2, base), (tip, base - h), (x + w // 2, base)], fill=colour)


def cartoon_head(
    draw: ImageDraw.ImageDraw,
    cx: int,
    cy: int,
    r: int,
    skin: RGB = (241, 194, 150),
    hair: RGB | None = (70, 50, 35),
    eyes: str = "open",
    mouth: str = "smile",
) -> None:
    """A round cartoon face; `eyes` and `mouth` pick the expression."""
    if hair is not None:
        draw.ellipse([cx - r - 4, cy - r - 8, cx + r + 4, cy + r // 3], fill=hair)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=skin, outline=(90, 60, 40), width=3)
    ex, ey, er = r // 3, cy - r // 6, max(3, r // 9)
    for x in (cx - ex, cx + ex):
        if eyes == "closed":
            draw.arc(
                [x - er * 2, ey - er, x + er * 2, ey + er * 2], 200, 340, fill=(30, 20, 20), width=3
            )
        elif eyes == "side":
            draw.ellipse([x - er * 2, ey - er, x + er * 2, ey + er], fill=(255, 255, 255))
            draw.ellipse([x + er // 2, ey - er, x + er * 2, ey + er], fill=(25, 20, 15))
        else:
            draw.ellipse([x - er, ey - er, x + er, ey + er], fill=(25, 20, 15))
    my, mw = cy + r // 3, r // 2
    if mouth == "smile":
        draw.arc(
            [cx - mw, my - mw // 2, cx + mw, my + mw // 2], 20, 160, fill=(90, 30, 30), width=4
        )
    elif mouth == "frown":
        draw.arc([cx - mw, my, cx + mw, my + mw], 200, 340, fill=(90, 30, 30), width=4)
    elif mouth == "open":
        draw.ellipse([cx - mw // 2, my - mw // 3, cx + mw // 2, my + mw // 2], fill=(110, 30, 30))
    elif mouth == "flat":
        draw.line([(cx - mw // 2, my + 4), (cx + mw // 2, my + 4)], fill=(90, 30, 30), width=4)
    elif mouth == "smirk":
        draw.arc(
            [cx - mw // 3, my - mw // 3, cx + mw, my + mw // 3], 10, 120, fill=(90, 30, 30), width=4
        )


def dog_face(draw: ImageDraw.ImageDraw, cx: int, cy: int, r: int, fur: RGB, eyes: str) -> None:
    """Shiba-style head: pointed ears, pale muzzle, small nose."""
    pale = (250, 240, 220)
    draw.polygon(
        [(cx - r, cy - r // 3), (cx - r + r // 5, cy - r - r // 2), (cx - r // 4, cy - r + 4)],
        fill=fur,
    )
    draw.polygon(
        [(cx + r, cy - r // 3), (cx + r - r // 5, cy - r - r // 2), (cx + r // 4, cy - r + 4)],
        fill=fur,
    )
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur, outline=(120, 80, 40), width=3)
    draw.ellipse([cx - r * 2 // 3, cy, cx + r * 2 // 3, cy + r - 4], fill=pale)
    for x in (cx - r // 3, cx + r // 3):
        if eyes == "side":
            draw.ellipse([x - 12, cy - r // 4 - 8, x + 12, cy - r // 4 + 8], fill=(255, 255, 255))
            draw.ellipse([x - 10, cy - r // 4 - 6, x, cy - r // 4 + 6], fill=(20, 20, 20))
        else:
            draw.ellipse([x - 7, cy - r // 4 - 7, x + 7, cy - r // 4 + 7], fill=(20, 20, 20))
    draw.ellipse([cx - 12, cy + r // 5, cx + 12, cy + r // 5 + 16], fill=(30, 25, 25))
    draw.arc(
        [cx - 22, cy + r // 5 + 10, cx + 22, cy + r // 2 + 10], 20, 160, fill=(60, 30, 30), width=3
    )


def cat_face(draw: ImageDraw.ImageDraw, cx: int, cy: int, r: int, fur: RGB, mood: str) -> None:
    draw.polygon(
        [(cx - r, cy - r // 4), (cx - r + 10, cy - r - 40), (cx - r // 3, cy - r + 10)], fill=fur
    )
    draw.polygon(
        [(cx + r, cy - r // 4), (cx + r - 10, cy - r - 40), (cx + r // 3, cy - r + 10)], fill=fur
    )
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur, outline=(90, 80, 70), width=3)
    for side in (-1, 1):
        x = cx + side * r // 3
        if mood == "grumpy":
            draw.ellipse([x - 14, cy - 18, x + 14, cy + 8], fill=(110, 160, 220))
            draw.ellipse([x - 5, cy - 12, x + 5, cy + 4], fill=(20, 20, 20))
            draw.line(
                [(x - 20, cy - 30 + side * 6), (x + 20, cy - 30 - side * 6)],
                fill=(60, 50, 40),
                width=6,
            )
        else:
            draw.ellipse([x - 16, cy - 22, x + 16, cy + 10], fill=(200, 210, 90))
            draw.ellipse([x - 5, cy - 20, x + 5, cy + 8], fill=(20, 20, 20))
        for dy in (-6, 6):
            draw.line(
                [(cx + side * 30, cy + 30 + dy), (cx + side * (r + 30), cy + 24 + dy * 2)],
                fill=(70, 60, 60),
                width=2,
            )
    draw.polygon([(cx - 10, cy + 20), (cx + 10, cy + 20), (cx, cy + 32)], fill=(220, 140, 150))
    if mood == "grumpy":
        draw.arc([cx - 30, cy + 40, cx + 30, cy + 70], 200, 340, fill=(50, 40, 40), width=4)
    else:
        draw.arc([cx - 30, cy + 26, cx + 30, cy + 50], 20, 160, fill=(50, 40, 40), width=3)


def house(draw: ImageDraw.ImageDraw, x0: int, y0: int, w: int, h: int, wall: RGB) -> None:
    draw.rectangle([x0, y0, x0 + w, y0 + h], fill=wall)
    draw.polygon([(x0 - 20, y0), (x0 + w // 2, y0 - h // 2), (x0 + w + 20, y0)], fill=(110, 50, 40))
    draw.rectangle([x0 + w // 2 - 20, y0 + h - 60, x0 + w // 2 + 20, y0 + h], fill=(90, 60, 40))
    for wx in (x0 + 20, x0 + w - 60):
        draw.rectangle([wx, y0 + 30, wx + 40, y0 + 70], fill=(255, 200, 80))
