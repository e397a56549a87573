"""Painters of the character memes: animals, cartoon heads, scenes."""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

from memes.painters.shapes import (
    cartoon_head,
    cat_face,
    dog_face,
    flame,
    house,
    stick_figure,
    vertical_gradient,
)
from memes.templates import BASE_SIZE


def paint_doge() -> Image.Image:
    image = vertical_gradient((250, 220, 150), (230, 170, 90))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 380, BASE_SIZE, BASE_SIZE], fill=(170, 110, 60))
    draw.rounded_rectangle([150, 300, 362, 470], radius=60, fill=(220, 150, 70))
    dog_face(draw, 256, 250, 120, (225, 160, 80), "side")
    return image


def paint_grumpy_cat() -> Image.Image:
    image = vertical_gradient((200, 200, 210), (120, 120, 140))
    draw = ImageDraw.Draw(image)
    draw.ellipse([116, 300, 396, 560], fill=(235, 225, 210))
    cat_face(draw, 256, 250, 130, (240, 230, 215), "grumpy")
    draw.ellipse([190, 240, 322, 330], fill=(150, 120, 100))
    draw.polygon([(246, 290), (266, 290), (256, 302)], fill=(90, 60, 60))
    draw.arc([216, 305, 296, 345], 200, 340, fill=(40, 30, 30), width=5)
    return image


def paint_one_does_not_simply() -> Image.Image:
    image = vertical_gradient((90, 80, 70), (40, 35, 30))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 150, BASE_SIZE], fill=(60, 55, 50))
    draw.rectangle([370, 0, BASE_SIZE, BASE_SIZE], fill=(70, 62, 55))
    draw.rounded_rectangle([150, 300, 362, BASE_SIZE], radius=50, fill=(90, 60, 40))
    draw.polygon([(200, 300), (312, 300), (256, 390)], fill=(150, 40, 40))
    cartoon_head(draw, 256, 220, 85, hair=(60, 40, 25), eyes="open", mouth="flat")
    draw.polygon([(185, 250), (327, 250), (300, 330), (212, 330)], fill=(70, 45, 25))
    draw.line([(218, 195), (240, 200)], fill=(40, 30, 20), width=5)
    draw.line([(294, 195), (272, 200)], fill=(40, 30, 20), width=5)
    # The circle he makes with his hand: the gesture everyone remembers.
    draw.ellipse([330, 300, 400, 370], outline=(241, 194, 150), width=14)
    draw.line([(340, 380), (300, 440)], fill=(241, 194, 150), width=18)
    return image


def paint_roll_safe() -> Image.Image:
    image = vertical_gradient((70, 70, 90), (30, 30, 45))
    draw = ImageDraw.Draw(image)
    for x in range(0, BASE_SIZE, 64):
        draw.rectangle([x + 8, 40, x + 40, 100], fill=(240, 200, 90))
    draw.rounded_rectangle([140, 330, 372, BASE_SIZE], radius=60, fill=(60, 100, 70))
    cartoon_head(
        draw, 256, 250, 95, skin=(150, 100, 70), hair=(25, 20, 20), eyes="open", mouth="smirk"
    )
    draw.line([(330, 470), (350, 330), (330, 215)], fill=(150, 100, 70), width=22)
    draw.ellipse([318, 200, 342, 224], fill=(150, 100, 70))
    return image


def paint_disaster_girl() -> Image.Image:
    image = vertical_gradient((60, 40, 50), (200, 100, 60))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 380, BASE_SIZE, BASE_SIZE], fill=(60, 90, 50))
    house(draw, 60, 200, 240, 180, (200, 190, 170))
    rng = random.Random(777)
    for x in range(40, 340, 40):
        flame(draw, x, 260, rng.randint(80, 150), 60, rng)
    draw.rounded_rectangle([340, 380, 470, BASE_SIZE], radius=40, fill=(230, 230, 240))
    cartoon_head(draw, 405, 330, 60, hair=(120, 80, 40), eyes="side", mouth="smirk")
    return image


def paint_hide_the_pain() -> Image.Image:
    image = vertical_gradient((230, 235, 240), (190, 200, 210))
    draw = ImageDraw.Draw(image)
    draw.rectangle([330, 150, 470, 330], fill=(120, 140, 160), outline=(60, 60, 70), width=4)
    draw.rounded_rectangle([140, 330, 372, BASE_SIZE], radius=60, fill=(200, 200, 205))
    draw.rectangle([236, 330, 276, 420], fill=(80, 90, 140))
    cartoon_head(draw, 256, 240, 95, hair=(235, 235, 235), eyes="closed", mouth="smile")
    draw.ellipse([170, 210, 200, 240], outline=(200, 200, 200), width=3)
    draw.arc([200, 225, 312, 270], 200, 340, fill=(160, 110, 90), width=2)
    draw.rectangle([330, 390, 420, 410], fill=(250, 250, 250))
    draw.ellipse([385, 380, 430, 420], fill=(250, 250, 250), outline=(120, 120, 120), width=2)
    return image


def paint_woman_yelling_at_cat() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 255, BASE_SIZE], fill=(170, 200, 220))
    draw.rectangle([257, 0, BASE_SIZE, BASE_SIZE], fill=(235, 230, 220))
    draw.rounded_rectangle([50, 300, 210, BASE_SIZE], radius=50, fill=(250, 250, 250))
    cartoon_head(draw, 130, 230, 75, hair=(235, 200, 120), eyes="open", mouth="open")
    draw.line([(200, 330), (240, 260)], fill=(241, 194, 150), width=16)
    draw.rectangle([257, 380, BASE_SIZE, BASE_SIZE], fill=(200, 200, 205))
    draw.ellipse([300, 395, 420, 430], fill=(250, 250, 250), outline=(150, 150, 150), width=2)
    draw.ellipse([325, 395, 395, 420], fill=(120, 180, 80))
    draw.rounded_rectangle([320, 300, 450, 390], radius=30, fill=(250, 250, 250))
    cat_face(draw, 385, 260, 70, (250, 250, 250), "grumpy")
    draw.line([(256, 0), (256, BASE_SIZE)], fill=(40, 40, 40), width=4)
    return image


def paint_is_this_a_pigeon() -> Image.Image:
    image = vertical_gradient((130, 170, 120), (70, 110, 80))
    draw = ImageDraw.Draw(image)
    # Butterfly upper left, the man looking at it, his hand held out.
    for dx in (-1, 1):
        draw.ellipse(
            [130 + dx * 36 - 30, 130, 130 + dx * 36 + 30, 190],
            fill=(250, 190, 60),
            outline=(80, 50, 20),
            width=3,
        )
        draw.ellipse(
            [130 + dx * 26 - 20, 180, 130 + dx * 26 + 20, 220],
            fill=(240, 150, 50),
            outline=(80, 50, 20),
            width=3,
        )
    draw.line([(130, 130), (130, 215)], fill=(40, 30, 20), width=5)
    draw.rounded_rectangle([290, 310, 470, BASE_SIZE], radius=50, fill=(230, 150, 60))
    cartoon_head(
        draw, 380, 250, 75, skin=(170, 200, 230), hair=(50, 40, 40), eyes="open", mouth="open"
    )
    draw.rectangle([345, 225, 415, 240], fill=(250, 250, 250), outline=(40, 40, 40), width=3)
    draw.line([(300, 360), (200, 280)], fill=(170, 200, 230), width=18)
    return image


def paint_uno_draw_25() -> Image.Image:
    image = vertical_gradient((250, 250, 245), (220, 220, 215))
    draw = ImageDraw.Draw(image)
    # The card whose text is the top caption, and the player holding his pile.
    draw.rounded_rectangle(
        [60, 50, 300, 360], radius=24, fill=(210, 30, 40), outline=(40, 40, 40), width=4
    )
    draw.ellipse([80, 90, 280, 320], fill=(250, 250, 250))
    draw.rounded_rectangle([330, 380, 490, BASE_SIZE], radius=40, fill=(40, 60, 120))
    cartoon_head(draw, 410, 320, 60, hair=(30, 25, 20), eyes="open", mouth="flat")
    for i in range(6):
        draw.rounded_rectangle(
            [330 + i * 6, 420 - i * 6, 400 + i * 6, 500 - i * 6],
            radius=6,
            fill=(230, 40, 40) if i % 2 else (240, 200, 40),
            outline=(30, 30, 30),
            width=2,
        )
    return image


def paint_gru_plan() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    for i, (x0, y0) in enumerate(((0, 0), (256, 0), (0, 256), (256, 256))):
        draw.rectangle(
            [x0 + 6, y0 + 6, x0 + 250, y0 + 250], fill=(60, 100, 80), outline=(120, 80, 40), width=6
        )
        draw.rectangle([x0 + 24, y0 + 24, x0 + 232, y0 + 150], fill=(250, 250, 245))
        worried = i == 3
        cartoon_head(
            draw,
            x0 + 128,
            y0 + 210,
            36,
            skin=(220, 200, 170),
            hair=None,
            eyes="open",
            mouth="frown" if worried else "smile",
        )
        draw.ellipse([x0 + 106, y0 + 192, x0 + 124, y0 + 206], outline=(40, 40, 40), width=2)
    return image


def paint_always_has_been() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (5, 5, 20))
    draw = ImageDraw.Draw(image)
    rng = random.Random(2020)
    for _ in range(120):
        x, y = rng.randrange(BASE_SIZE), rng.randrange(BASE_SIZE)
        draw.point((x, y), fill=(255, 255, 255))
    draw.ellipse([-120, 260, 360, 740], fill=(40, 100, 200))
    draw.polygon([(20, 320), (120, 300), (160, 380), (80, 420)], fill=(70, 150, 80))
    draw.polygon([(200, 340), (280, 330), (300, 420), (230, 430)], fill=(70, 150, 80))
    for cx, cy in ((250, 250), (420, 200)):
        draw.rounded_rectangle(
            [cx - 40, cy - 10, cx + 40, cy + 110], radius=20, fill=(235, 235, 235)
        )
        draw.ellipse(
            [cx - 45, cy - 85, cx + 45, cy + 5],
            fill=(235, 235, 235),
            outline=(150, 150, 150),
            width=3,
        )
        draw.ellipse([cx - 30, cy - 65, cx + 30, cy - 15], fill=(40, 50, 80))
        draw.arc([cx - 25, cy - 60, cx + 5, cy - 35], 180, 270, fill=(200, 220, 255), width=3)
    # The second astronaut's gun, pointed at the first.
    draw.rectangle([340, 235, 380, 250], fill=(60, 60, 60))
    draw.rectangle([370, 245, 382, 265], fill=(60, 60, 60))
    return image


def paint_bernie_asking() -> Image.Image:
    image = vertical_gradient((200, 210, 220), (150, 160, 175))
    draw = ImageDraw.Draw(image)
    draw.polygon([(120, BASE_SIZE), (150, 330), (362, 330), (392, BASE_SIZE)], fill=(110, 90, 60))
    draw.polygon([(190, 330), (322, 330), (256, 420)], fill=(240, 240, 240))
    cartoon_head(draw, 256, 240, 85, hair=(240, 240, 240), eyes="open", mouth="flat")
    draw.ellipse([200, 225, 240, 255], outline=(40, 40, 40), width=3)
    draw.ellipse([272, 225, 312, 255], outline=(40, 40, 40), width=3)
    draw.ellipse([150, 330, 200, 380], fill=(120, 170, 220))
    draw.ellipse([312, 330, 362, 380], fill=(120, 170, 220))
    return image


def paint_buff_doge_vs_cheems() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 255, BASE_SIZE], fill=(120, 170, 230))
    draw.rectangle([257, 0, BASE_SIZE, BASE_SIZE], fill=(200, 190, 180))
    # Buff: huge torso. Cheems: small and slumped.
    draw.polygon([(30, BASE_SIZE), (40, 260), (216, 260), (226, BASE_SIZE)], fill=(225, 160, 80))
    draw.ellipse([10, 250, 90, 340], fill=(225, 160, 80))
    draw.ellipse([166, 250, 246, 340], fill=(225, 160, 80))
    dog_face(draw, 128, 200, 70, (225, 160, 80), "open")
    draw.rounded_rectangle([320, 400, 450, BASE_SIZE], radius=40, fill=(230, 190, 120))
    dog_face(draw, 385, 350, 55, (230, 190, 120), "side")
    draw.line([(256, 0), (256, BASE_SIZE)], fill=(40, 40, 40), width=4)
    return image


def paint_trade_offer() -> Image.Image:
    image = vertical_gradient((70, 60, 90), (30, 25, 40))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([156, 300, 356, BASE_SIZE], radius=60, fill=(30, 30, 35))
    draw.polygon([(226, 300), (286, 300), (256, 380)], fill=(240, 240, 240))
    draw.polygon([(246, 310), (266, 310), (256, 400)], fill=(150, 30, 40))
    cartoon_head(
        draw, 256, 220, 80, skin=(160, 110, 80), hair=(20, 20, 20), eyes="open", mouth="smile"
    )
    draw.line([(160, 330), (90, 250)], fill=(30, 30, 35), width=26)
    draw.line([(352, 330), (422, 250)], fill=(30, 30, 35), width=26)
    draw.ellipse([70, 225, 110, 265], fill=(160, 110, 80))
    draw.ellipse([402, 225, 442, 265], fill=(160, 110, 80))
    return image


def paint_mocking_spongebob() -> Image.Image:
    image = vertical_gradient((120, 200, 230), (60, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 400, BASE_SIZE, BASE_SIZE], fill=(230, 210, 150))
    # A yellow sponge bent forward like a chicken: the pose carries the joke.
    draw.polygon(
        [(150, 360), (200, 150), (360, 180), (330, 380)],
        fill=(250, 235, 80),
        outline=(150, 140, 40),
    )
    for x, y in ((220, 200), (300, 230), (250, 300), (310, 330)):
        draw.ellipse([x - 10, y - 8, x + 10, y + 8], fill=(200, 190, 50))
    draw.ellipse([230, 210, 270, 250], fill=(255, 255, 255), outline=(40, 40, 40), width=2)
    draw.ellipse([280, 220, 320, 260], fill=(255, 255, 255), outline=(40, 40, 40), width=2)
    draw.ellipse([248, 228, 262, 242], fill=(60, 120, 200))
    draw.ellipse([298, 238, 312, 252], fill=(60, 120, 200))
    draw.arc([240, 260, 320, 300], 10, 170, fill=(120, 40, 40), width=4)
    draw.rectangle([180, 360, 330, 390], fill=(140, 90, 50))
    draw.line([(200, 390), (190, 440)], fill=(250, 235, 80), width=8)
    draw.line([(300, 390), (310, 440)], fill=(250, 235, 80), width=8)
    return image


def paint_left_exit() -> Image.Image:
    image = vertical_gradient((140, 200, 240), (200, 230, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 250, BASE_SIZE, BASE_SIZE], fill=(90, 150, 70))
    draw.polygon([(120, BASE_SIZE), (240, 250), (290, 250), (400, BASE_SIZE)], fill=(80, 80, 85))
    draw.polygon([(180, BASE_SIZE), (250, 250), (262, 250), (20, 380)], fill=(80, 80, 85))
    for y in range(270, BASE_SIZE, 40):
        x = 265 + (y - 250) // 6
        draw.line([(x, y), (x + 2, y + 18)], fill=(250, 250, 250), width=4)
    draw.rectangle([260, 120, 470, 200], fill=(30, 110, 60), outline=(250, 250, 250), width=4)
    draw.line([(300, 200), (300, 250)], fill=(120, 120, 120), width=6)
    draw.line([(430, 200), (430, 250)], fill=(120, 120, 120), width=6)
    draw.line([(290, 160), (330, 140), (330, 180)], fill=(250, 250, 250), width=5)
    # The car swerving across the lanes towards the exit.
    draw.polygon([(200, 410), (290, 380), (320, 440), (230, 470)], fill=(200, 40, 40))
    draw.polygon([(225, 400), (275, 385), (285, 410), (235, 425)], fill=(160, 210, 240))
    for wx, wy in ((222, 470), (310, 442)):
        draw.ellipse([wx - 12, wy - 12, wx + 12, wy + 12], fill=(20, 20, 20))
    return image


def paint_panik_kalm() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for row, mood in enumerate(("open", "smile", "open")):
        y0 = row * 171
        background = (240, 190, 190) if mood == "open" else (200, 230, 200)
        draw.rectangle([300, y0, BASE_SIZE, y0 + 170], fill=background)
        cartoon_head(
            draw, 406, y0 + 85, 58, skin=(245, 230, 200), hair=None, eyes="open", mouth=mood
        )
        draw.line([(0, y0 + 170), (BASE_SIZE, y0 + 170)], fill=(40, 40, 40), width=3)
    draw.line([(300, 0), (300, BASE_SIZE)], fill=(40, 40, 40), width=3)
    return image


def paint_who_would_win() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 130, 250, BASE_SIZE], fill=(220, 230, 250), outline=(40, 40, 40), width=3)
    draw.rectangle(
        [262, 130, BASE_SIZE, BASE_SIZE], fill=(250, 225, 215), outline=(40, 40, 40), width=3
    )
    draw.polygon([(230, 300), (282, 300), (256, 250)], fill=(230, 40, 40))
    draw.polygon([(230, 300), (282, 300), (256, 350)], fill=(40, 40, 230))
    for x in (80, 170):
        stick_figure(draw, x, 480, shirt=(80, 90, 160))
    draw.ellipse([360, 380, 400, 420], fill=(250, 200, 60), outline=(60, 40, 20), width=3)
    return image


def paint_coffin_dance() -> Image.Image:
    image = vertical_gradient((250, 200, 120), (200, 120, 70))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 400, BASE_SIZE, BASE_SIZE], fill=(120, 90, 60))
    draw.polygon(
        [(60, 250), (100, 220), (420, 220), (460, 250), (420, 280), (100, 280)],
        fill=(90, 50, 30),
        outline=(40, 20, 10),
    )
    for i, x in enumerate((100, 200, 310, 410)):
        skin = (110, 70, 45) if i % 2 else (140, 95, 60)
        draw.rounded_rectangle([x - 30, 290, x + 30, 400], radius=14, fill=(30, 30, 35))
        draw.ellipse([x - 25, 250, x + 25, 300], fill=skin)
        draw.rectangle([x - 28, 235, x + 28, 255], fill=(20, 20, 20))
        draw.rectangle([x - 16, 255, x + 16, 262], fill=(20, 20, 20))
        draw.line([(x - 8, 400), (x - 16, 440)], fill=(30, 30, 35), width=10)
        draw.line([(x + 8, 400), (x + 16, 440)], fill=(30, 30, 35), width=10)
    return image


def paint_skeleton_waiting() -> Image.Image:
    image = vertical_gradient((140, 170, 120), (90, 120, 80))
    draw = ImageDraw.Draw(image)
    draw.rectangle([60, 330, 452, 350], fill=(140, 90, 50))
    draw.rectangle([80, 350, 95, 430], fill=(110, 70, 40))
    draw.rectangle([417, 350, 432, 430], fill=(110, 70, 40))
    draw.rectangle([60, 250, 452, 265], fill=(140, 90, 50))
    bone = (240, 235, 220)
    draw.ellipse([210, 130, 290, 215], fill=bone)
    draw.ellipse([228, 160, 248, 182], fill=(30, 30, 30))
    draw.ellipse([254, 160, 274, 182], fill=(30, 30, 30))
    draw.line([(250, 215), (250, 330)], fill=bone, width=10)
    for y in range(235, 320, 18):
        draw.arc([215, y - 10, 285, y + 14], 200, 340, fill=bone, width=6)
    draw.line([(250, 330), (320, 330), (320, 420)], fill=bone, width=10)
    draw.line([(250, 330), (190, 335), (185, 420)], fill=bone, width=10)
    draw.line([(225, 240), (180, 300), (170, 330)], fill=bone, width=8)
    for x, y in ((120, 120), (380, 90), (330, 200)):
        draw.line([(x, y), (x + 40, y + 40)], fill=(220, 220, 220), width=2)
        draw.line([(x + 40, y), (x, y + 40)], fill=(220, 220, 220), width=2)
    return image


def paint_monkey_puppet() -> Image.Image:
    image = vertical_gradient((190, 150, 110), (140, 100, 70))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([150, 330, 362, BASE_SIZE], radius=60, fill=(230, 120, 40))
    draw.ellipse([136, 140, 376, 370], fill=(110, 70, 40), outline=(60, 40, 20), width=3)
    draw.ellipse([116, 210, 166, 270], fill=(110, 70, 40))
    draw.ellipse([346, 210, 396, 270], fill=(110, 70, 40))
    draw.ellipse([176, 200, 336, 350], fill=(230, 190, 150))
    for x in (220, 292):
        draw.ellipse([x - 24, 220, x + 24, 262], fill=(255, 255, 255))
        draw.ellipse([x + 2, 228, x + 20, 254], fill=(20, 20, 20))  # eyes to the side
    draw.line([(226, 310), (286, 305)], fill=(90, 40, 30), width=4)
    return image


def paint_brace_yourselves() -> Image.Image:
    image = vertical_gradient((170, 180, 200), (230, 235, 245))
    draw = ImageDraw.Draw(image)
    rng = random.Random(1996)
    for _ in range(80):
        x, y, r = rng.randrange(BASE_SIZE), rng.randrange(BASE_SIZE), rng.randint(2, 4)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255))
    draw.polygon([(130, BASE_SIZE), (170, 320), (342, 320), (382, BASE_SIZE)], fill=(70, 55, 45))
    draw.polygon([(130, 330), (382, 330), (400, 380), (112, 380)], fill=(180, 170, 160))
    cartoon_head(draw, 256, 240, 80, hair=(40, 30, 25), eyes="open", mouth="flat")
    draw.chord([196, 255, 316, 340], 0, 180, fill=(60, 45, 35))
    return image


def paint_take_my_money() -> Image.Image:
    image = vertical_gradient((120, 190, 120), (60, 130, 70))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([170, 330, 342, BASE_SIZE], radius=40, fill=(200, 60, 40))
    draw.ellipse([176, 150, 336, 330], fill=(250, 200, 160), outline=(120, 80, 50), width=3)
    draw.rectangle([186, 140, 326, 180], fill=(250, 150, 40))
    draw.ellipse([220, 215, 240, 235], fill=(20, 20, 20))
    draw.ellipse([272, 215, 292, 235], fill=(20, 20, 20))
    draw.ellipse([236, 270, 276, 310], fill=(120, 30, 30))
    # A fan of banknotes held out.
    for i, angle in enumerate(range(-30, 31, 15)):
        rad = math.radians(angle - 90)
        tip = (400 + int(math.cos(rad) * 90), 400 + int(math.sin(rad) * 90))
        draw.line([(400, 400), tip], fill=(120, 200, 120) if i % 2 else (90, 170, 90), width=34)
    draw.ellipse([380, 380, 420, 420], fill=(250, 200, 160))
    return image
