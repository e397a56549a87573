"""Painters of the classic image macros (the first templates of the catalog)."""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

from memes.painters.shapes import (
    face,
    flame,
    stick_figure,
    vertical_gradient,
)
from memes.templates import BASE_SIZE


def paint_distracted() -> Image.Image:
    image = vertical_gradient((120, 180, 235), (225, 240, 250))
    draw = ImageDraw.Draw(image)
    for i, shade in enumerate((170, 150, 185, 160, 175)):
        x = i * 104
        draw.rectangle([x, 150 + (i % 2) * 40, x + 96, 330], fill=(shade, shade - 10, shade - 25))
        for wy in range(170 + (i % 2) * 40, 320, 30):
            draw.rectangle([x + 14, wy, x + 34, wy + 16], fill=(250, 235, 170))
            draw.rectangle([x + 60, wy, x + 80, wy + 16], fill=(250, 235, 170))
    draw.rectangle([0, 330, BASE_SIZE, BASE_SIZE], fill=(120, 120, 128))
    draw.line([(0, 430), (BASE_SIZE, 430)], fill=(235, 235, 235), width=4)
    stick_figure(draw, 110, 400, shirt=(210, 40, 50), head_dx=-6)
    stick_figure(draw, 270, 410, shirt=(70, 110, 200), head_dx=-14)
    stick_figure(draw, 410, 405, shirt=(40, 160, 170), head_dx=-4)
    # The angry eyebrow sells "girlfriend is not amused".
    draw.line([(398, 176), (414, 182)], fill=(20, 20, 20), width=3)
    return image


def paint_drake() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (250, 248, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 255, 255], fill=(245, 170, 60))
    draw.rectangle([0, 256, 255, BASE_SIZE], fill=(250, 200, 80))
    face(draw, 130, 120, 58, "no")
    draw.rounded_rectangle(
        [40, 60, 100, 160], radius=20, fill=(176, 120, 84), outline=(60, 40, 30), width=3
    )
    draw.polygon([(60, 170), (200, 170), (230, 255), (40, 255)], fill=(230, 110, 30))
    face(draw, 120, 376, 58, "yes")
    draw.line([(170, 430), (235, 380)], fill=(176, 120, 84), width=16)
    draw.polygon([(50, 426), (190, 426), (220, 512), (30, 512)], fill=(230, 110, 30))
    draw.line([(256, 0), (256, BASE_SIZE)], fill=(40, 40, 40), width=4)
    draw.line([(0, 256), (BASE_SIZE, 256)], fill=(40, 40, 40), width=4)
    return image


def paint_brain() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for row in range(4):
        y0 = row * 128
        glow = 40 + row * 60
        draw.rectangle([256, y0, BASE_SIZE, y0 + 127], fill=(glow // 3, glow // 3, glow))
        cx, cy = 384, y0 + 64
        # The head stays the same; the brain and its halo grow with each panel.
        for ring in range(row + 1):
            radius = 20 + row * 10 + ring * 10
            shade = min(255, 120 + row * 40 + ring * 20)
            draw.ellipse(
                [cx - radius, cy - radius, cx + radius, cy + radius],
                outline=(shade, shade, 255),
                width=3,
            )
        draw.ellipse([cx - 40, cy - 46, cx + 40, cy + 46], fill=(220, 180, 150))
        brain_r = 10 + row * 9
        draw.ellipse(
            [cx - brain_r, cy - 30 - brain_r // 2, cx + brain_r, cy - 30 + brain_r // 2 + 6],
            fill=(255, 150 + row * 25, 190),
        )
        draw.line([(0, y0 + 127), (BASE_SIZE, y0 + 127)], fill=(30, 30, 30), width=3)
    draw.line([(256, 0), (256, BASE_SIZE)], fill=(30, 30, 30), width=3)
    return image


def paint_this_is_fine() -> Image.Image:
    image = vertical_gradient((250, 180, 90), (200, 90, 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 360, BASE_SIZE, BASE_SIZE], fill=(150, 80, 50))
    draw.ellipse([40, 0, 260, 80], fill=(90, 80, 80))
    draw.ellipse([220, 10, 470, 100], fill=(110, 95, 95))
    draw.rectangle([290, 300, 470, 320], fill=(120, 70, 40))
    draw.line([(310, 320), (310, 380)], fill=(120, 70, 40), width=8)
    draw.line([(450, 320), (450, 380)], fill=(120, 70, 40), width=8)
    draw.rounded_rectangle([380, 270, 406, 300], radius=4, fill=(250, 250, 250))
    draw.arc([398, 276, 416, 294], 270, 90, fill=(250, 250, 250), width=4)
    draw.rounded_rectangle([210, 250, 300, 370], radius=28, fill=(215, 160, 60))
    draw.ellipse([200, 170, 300, 262], fill=(225, 170, 70), outline=(120, 80, 30), width=3)
    draw.rectangle([215, 140, 285, 185], fill=(60, 40, 30))
    draw.rectangle([195, 180, 305, 190], fill=(60, 40, 30))
    for ex in (232, 270):
        draw.ellipse([ex - 8, 200, ex + 8, 216], fill=(255, 255, 255))
        draw.ellipse([ex - 3, 205, ex + 3, 212], fill=(20, 20, 20))
    draw.arc([230, 215, 275, 240], 20, 160, fill=(60, 30, 20), width=3)
    # Fixed seed: jagged flames must look identical on every render.
    rng = random.Random(1337)
    for x in range(0, BASE_SIZE + 40, 46):
        flame(draw, x, BASE_SIZE, rng.randint(90, 170), 70, rng)
    for y in range(140, 380, 60):
        flame(draw, 20, y + 60, 90, 50, rng)
    return image


def paint_success_kid() -> Image.Image:
    image = vertical_gradient((110, 190, 240), (250, 245, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 300, BASE_SIZE, BASE_SIZE], fill=(235, 210, 150))
    draw.polygon([(0, 300), (BASE_SIZE, 280), (BASE_SIZE, 300)], fill=(70, 140, 200))
    draw.rounded_rectangle([170, 330, 350, BASE_SIZE], radius=40, fill=(80, 140, 90))
    draw.ellipse([150, 140, 370, 360], fill=(245, 205, 170), outline=(150, 100, 70), width=3)
    draw.line([(350, 380), (420, 250)], fill=(245, 205, 170), width=34)
    draw.ellipse([395, 200, 455, 262], fill=(245, 205, 170), outline=(150, 100, 70), width=3)
    for sx, sy in ((410, 230), (428, 215), (436, 240), (215, 300), (300, 310)):
        draw.ellipse([sx - 3, sy - 3, sx + 3, sy + 3], fill=(200, 170, 110))
    draw.line([(200, 220), (240, 232)], fill=(60, 40, 30), width=5)
    draw.line([(320, 220), (280, 232)], fill=(60, 40, 30), width=5)
    draw.ellipse([215, 238, 235, 256], fill=(40, 30, 20))
    draw.ellipse([285, 238, 305, 256], fill=(40, 30, 20))
    draw.chord([225, 275, 300, 320], 0, 180, fill=(120, 40, 40))
    return image


def paint_stonks() -> Image.Image:
    image = vertical_gradient((10, 20, 60), (20, 60, 120))
    draw = ImageDraw.Draw(image)
    for g in range(0, BASE_SIZE, 32):
        draw.line([(g, 0), (g, BASE_SIZE)], fill=(40, 80, 140), width=1)
        draw.line([(0, g), (BASE_SIZE, g)], fill=(40, 80, 140), width=1)
    rng = random.Random(4242)
    price = 360
    for x in range(40, 480, 28):
        move = rng.randint(-30, 18)
        colour = (40, 200, 90) if move < 0 else (220, 60, 60)
        top, bottom = sorted((price, price + move))
        draw.line([(x + 8, top - 12), (x + 8, bottom + 12)], fill=colour, width=2)
        draw.rectangle([x, top, x + 16, max(bottom, top + 3)], fill=colour)
        price += move
    draw.line([(40, 360), (200, 300), (260, 330), (440, 170)], fill=(60, 240, 110), width=12)
    draw.polygon([(470, 140), (420, 160), (455, 200)], fill=(60, 240, 110))
    draw.ellipse([60, 230, 150, 320], fill=(240, 240, 240))
    draw.rectangle([50, 320, 160, 400], fill=(30, 30, 40))
    draw.polygon([(95, 320), (115, 320), (105, 360)], fill=(200, 30, 30))
    return image


def paint_two_buttons() -> Image.Image:
    image = vertical_gradient((230, 230, 235), (170, 170, 185))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle(
        [60, 140, 452, 330], radius=24, fill=(90, 90, 100), outline=(40, 40, 50), width=4
    )
    for cx in (160, 352):
        draw.ellipse([cx - 70, 185, cx + 70, 295], fill=(120, 10, 10))
        draw.ellipse([cx - 62, 172, cx + 62, 270], fill=(230, 40, 40))
        draw.ellipse([cx - 35, 190, cx + 5, 215], fill=(250, 120, 120))
    draw.ellipse([216, 320, 296, 400], fill=(245, 205, 170), outline=(120, 80, 60), width=3)
    for drop_x, drop_y in ((205, 330), (300, 345), (214, 370)):
        draw.polygon(
            [(drop_x, drop_y - 14), (drop_x - 7, drop_y), (drop_x + 7, drop_y)],
            fill=(120, 190, 250),
        )
        draw.ellipse([drop_x - 7, drop_y - 6, drop_x + 7, drop_y + 8], fill=(120, 190, 250))
    draw.line([(236, 350), (248, 354)], fill=(30, 30, 30), width=3)
    draw.line([(276, 350), (264, 354)], fill=(30, 30, 30), width=3)
    draw.arc([236, 365, 276, 392], 200, 340, fill=(80, 30, 30), width=3)
    return image


def paint_surprised() -> Image.Image:
    image = vertical_gradient((250, 230, 120), (240, 180, 60))
    draw = ImageDraw.Draw(image)
    draw.polygon([(130, 240), (60, 70), (190, 170)], fill=(250, 215, 40))
    draw.polygon([(60, 70), (85, 130), (105, 100)], fill=(30, 30, 30))
    draw.polygon([(382, 240), (452, 70), (322, 170)], fill=(250, 215, 40))
    draw.polygon([(452, 70), (427, 130), (407, 100)], fill=(30, 30, 30))
    draw.ellipse([106, 130, 406, 430], fill=(252, 222, 50), outline=(150, 110, 20), width=4)
    for ex in (196, 316):
        draw.ellipse([ex - 28, 220, ex + 28, 276], fill=(25, 25, 25))
        draw.ellipse([ex - 14, 228, ex + 2, 244], fill=(255, 255, 255))
    draw.ellipse([130, 300, 190, 350], fill=(230, 60, 50))
    draw.ellipse([322, 300, 382, 350], fill=(230, 60, 50))
    draw.ellipse([236, 300, 276, 352], fill=(120, 30, 30))
    return image


def paint_change_my_mind() -> Image.Image:
    image = vertical_gradient((150, 200, 240), (100, 170, 90))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 260, BASE_SIZE, BASE_SIZE], fill=(95, 160, 80))
    draw.rectangle([370, 80, 470, 270], fill=(180, 150, 120))
    stick_figure(draw, 420, 300, shirt=(60, 90, 140))
    draw.ellipse([393, 36, 447, 60], fill=(40, 30, 30))
    draw.polygon([(110, 260), (470, 260), (500, 300), (80, 300)], fill=(140, 90, 50))
    draw.rectangle([100, 300, 112, 420], fill=(110, 70, 40))
    draw.rectangle([468, 300, 480, 420], fill=(110, 70, 40))
    draw.rounded_rectangle(
        [40, 290, 472, 400], radius=6, fill=(245, 245, 240), outline=(90, 90, 90), width=3
    )
    draw.rectangle([300, 240, 330, 262], fill=(200, 120, 60))
    return image


def paint_crying_cat() -> Image.Image:
    image = vertical_gradient((90, 80, 140), (40, 30, 70))
    draw = ImageDraw.Draw(image)
    draw.polygon([(140, 210), (150, 90), (230, 160)], fill=(200, 200, 205))
    draw.polygon([(372, 210), (362, 90), (282, 160)], fill=(200, 200, 205))
    draw.ellipse([116, 140, 396, 400], fill=(215, 215, 220), outline=(120, 120, 130), width=3)
    for ex in (200, 312):
        draw.ellipse([ex - 38, 210, ex + 38, 286], fill=(40, 40, 60))
        draw.ellipse([ex - 26, 218, ex + 8, 252], fill=(250, 250, 255))
        draw.ellipse([ex + 10, 256, ex + 24, 270], fill=(250, 250, 255))
        draw.line([(ex, 286), (ex - 6, 390)], fill=(140, 200, 250), width=10)
    draw.polygon([(246, 300), (266, 300), (256, 312)], fill=(230, 140, 160))
    draw.arc([226, 312, 286, 342], 200, 340, fill=(60, 60, 70), width=3)
    for side in (-1, 1):
        for dy in (-10, 4, 18):
            draw.line(
                [(256 + side * 40, 312 + dy // 2), (256 + side * 130, 300 + dy)],
                fill=(80, 80, 90),
                width=2,
            )
    return image


def paint_galaxy_think() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (8, 6, 30))
    draw = ImageDraw.Draw(image)
    rng = random.Random(9001)
    for _ in range(160):
        x, y, r = rng.randrange(BASE_SIZE), rng.randrange(BASE_SIZE), rng.choice((1, 1, 2))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 230))
    for step in range(10):
        angle = step * 0.6
        x = 256 + int(math.cos(angle) * (20 + step * 14))
        y = 256 + int(math.sin(angle) * (12 + step * 8))
        r = 40 - step * 3
        draw.ellipse(
            [x - r, y - r // 2, x + r, y + r // 2], fill=(120 + step * 12, 60, 200 - step * 8)
        )
    draw.ellipse([226, 236, 286, 276], fill=(255, 240, 200))
    return image
