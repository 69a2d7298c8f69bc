"""Five procedurally drawn demo domains standing in for the paper's five image domains.

Each domain has its own look (so domain-specific neurons can exist) and a few question types
whose answers come from small closed sets and are readable from the pixels. For every sample
the question type and answer are drawn first, then a scene that shows that answer; every other
attribute of the scene is random, so only the asked-about part tells the answer.

Scenes are laid out in a 64-unit frame and scaled to ``image_size``. Target objects are drawn
last, in exact palette colours and without antialiasing, so tests can find them in the pixels;
backgrounds are textured with noise that can never reach a palette colour.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from mmneuron.data.samples import Sample, encode_png
from mmneuron.defaults import DEMO_DOMAINS
from mmneuron.errors import MmneuronError

DOMAINS = DEMO_DOMAINS
DOMAIN_NAMES = {
    "ad": "autonomous driving",
    "med": "medical",
    "rs": "remote sensing",
    "com": "common scenes",
    "doc": "documents",
}
MIN_IMAGE_SIZE = 32
UNIT = 64  # layout coordinates are in a UNIT x UNIT frame

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (40, 70, 220),
    "yellow": (245, 205, 20),
    "orange": (245, 130, 20),
    "purple": (140, 50, 170),
    "white": (250, 250, 250),
}
COUNTS = ("1", "2", "3")
YES_NO = ("yes", "no")
SIDES = ("left", "right")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in layout units, x1/y1 exclusive


class SyntheticError(MmneuronError):
    """Arguments the synthetic domains cannot be drawn with; the message names the argument."""


class LayoutError(RuntimeError):
    """A scene's fixed parts leave no room for the objects it must show."""


@dataclass(frozen=True)
class QuestionType:
    name: str
    question: str
    answers: tuple[str, ...]


# Colour sets are chosen per domain so no other element of that domain's scenes shares them.
LIGHT_COLOURS = ("red", "yellow", "green")
CAR_COLOURS = ("blue", "purple", "white")
ROOF_COLOURS = ("red", "white", "yellow", "purple")
RIVER = (50, 105, 185)
OBJECT_COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
OBJECT_SIZE = 14.0  # balls, in colour and counting scenes
SHAPE_SIZE = 20.0  # the one object of a shape scene
BUILDING_SIZE = 13.0  # one size, so a count shows as roof area
HEADING_COLOURS = ("blue", "green", "orange", "purple")
STAMP_COLOUR = "red"
LESION = COLOURS["white"]
TEXT = (45, 45, 50)

QUESTIONS: dict[str, tuple[QuestionType, ...]] = {
    "ad": (
        QuestionType("light_colour", "what colour is the traffic light?", LIGHT_COLOURS),
        QuestionType("car_count", "how many cars are there?", COUNTS),
        QuestionType("car_lane", "which lane is the car in?", SIDES),
    ),
    "med": (
        QuestionType("lesion_count", "how many lesions are there?", COUNTS),
        QuestionType("lesion_present", "is there a lesion?", YES_NO),
        QuestionType("lesion_side", "what side is the lesion on?", SIDES),
    ),
    "rs": (
        QuestionType("building_count", "how many buildings are there?", COUNTS),
        QuestionType("river_present", "is there a river?", YES_NO),
        QuestionType("roof_colour", "what colour are the roofs?", ROOF_COLOURS),
    ),
    "com": (
        QuestionType("ball_colour", "what colour is the ball?", OBJECT_COLOURS),
        QuestionType("object_shape", "what shape is the object?", SHAPES),
        QuestionType("object_count", "how many objects are there?", COUNTS),
    ),
    "doc": (
        QuestionType("paragraph_count", "how many paragraphs are there?", COUNTS),
        QuestionType("heading_colour", "what colour is the heading?", HEADING_COLOURS),
        QuestionType("stamp_present", "is there a stamp?", YES_NO),
    ),
}


def _check_domain(domain: str) -> None:
    if domain not in QUESTIONS:
        raise SyntheticError(f"unknown synthetic domain {domain!r}; known domains: {', '.join(DOMAINS)}")


def question_types(domain: str) -> tuple[str, ...]:
    _check_domain(domain)
    return tuple(qtype.name for qtype in QUESTIONS[domain])


def answer_set(domain: str, question_type: str) -> tuple[str, ...]:
    """The closed set of answers of one question type."""
    _check_domain(domain)
    for qtype in QUESTIONS[domain]:
        if qtype.name == question_type:
            return qtype.answers
    raise SyntheticError(f"unknown question type {question_type!r} for {domain}; known: {question_types(domain)}")


def vocabulary() -> list[str]:
    """Every word and punctuation token of any question or answer, sorted and unique."""
    words = set()
    for qtypes in QUESTIONS.values():
        for qtype in qtypes:
            for text in (qtype.question, *qtype.answers):
                # Same split as the word-level tokenizer: whitespace, then punctuation apart.
                for chunk in text.split():
                    words.update(token for token in _split_punctuation(chunk) if token)
    return sorted(words)


def _split_punctuation(chunk: str) -> list[str]:
    tokens, word = [], ""
    for char in chunk:
        if char.isalnum() or char == "_":
            word += char
        else:
            tokens += [word, char]
            word = ""
    return [*tokens, word]


# ---------------------------------------------------------------------------------------------
# Sampling


def generate(domain: str, split: str, n: int, seed: int = 0, image_size: int = 64) -> list[Sample]:
    """``n`` samples of ``domain``; deterministic in all arguments, and ``n`` only truncates.

    Each sample has its own random stream from (seed, domain, split, index); question types and
    answers come from shuffled blocks holding every (type, answer) pair equally often, so both
    are balanced exactly over every whole block.
    """
    _check_domain(domain)
    if not isinstance(n, int) or n < 0:
        raise SyntheticError(f"n must be a non-negative integer, got {n!r}")
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise SyntheticError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise SyntheticError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(split, str) or not split:
        raise SyntheticError(f"split must be a non-empty string, got {split!r}")

    key = (seed, DOMAINS.index(domain), _stable_hash(split))
    deck = _deck(domain)
    qtypes = {qtype.name: qtype for qtype in QUESTIONS[domain]}
    order: np.ndarray | None = None
    samples = []
    for i in range(n):
        block, position = divmod(i, len(deck))
        if position == 0:
            order = np.random.default_rng(np.random.SeedSequence([*key, 0, block])).permutation(len(deck))
        name, answer = deck[order[position]]
        rng = np.random.default_rng(np.random.SeedSequence([*key, 1, i]))
        sample_id = f"{domain}-{split}-{i:05d}"
        image = _draw(domain, rng, image_size, name, answer, sample_id)
        samples.append(
            Sample(
                sample_id=sample_id,
                domain=domain,
                question=qtypes[name].question,
                answers=[answer],
                image=encode_png(image),
                meta={"question_type": name, "source": "synthetic", "seed": seed, "split": split},
            )
        )
    return samples


SCENE_ATTEMPTS = 20


def _draw(domain: str, rng: np.random.Generator, size: int, qtype: str, answer: str, sample_id: str) -> Image.Image:
    """One scene; a random layout with no room left for the objects (about 1 in 20,000 rs scenes:
    a road and a river crossing mid-field) is drawn again from the same stream, so every other
    scene keeps its bytes."""
    for _ in range(SCENE_ATTEMPTS):
        try:
            return DRAWERS[domain](rng, size, qtype, answer)
        except LayoutError:
            continue
    raise LayoutError(f"{sample_id}: no layout found in {SCENE_ATTEMPTS} scenes")


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; a digest is the same everywhere.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _deck(domain: str) -> list[tuple[str, str]]:
    """One block: every type equally often, and within a type every answer equally often."""
    qtypes = QUESTIONS[domain]
    per_type = math.lcm(*(len(qtype.answers) for qtype in qtypes))
    return [(qtype.name, answer) for qtype in qtypes for answer in qtype.answers * (per_type // len(qtype.answers))]


# ---------------------------------------------------------------------------------------------
# Drawing helpers


class Canvas:
    """PIL drawing in layout units, scaled to the real image size; no antialiasing."""

    def __init__(self, size: int, background: tuple[int, int, int]):
        self.size = size
        self.scale = size / UNIT
        self.image = Image.new("RGB", (size, size), background)
        self.draw = ImageDraw.Draw(self.image)

    def _px(self, value: float) -> int:
        return round(value * self.scale)

    def _box(self, box: Box) -> list[int]:
        x0, y0, x1, y1 = box
        # PIL boxes include their far edge; ours exclude it.
        return [self._px(x0), self._px(y0), max(self._px(x1) - 1, self._px(x0)), max(self._px(y1) - 1, self._px(y0))]

    def rect(self, box: Box, fill, outline=None) -> None:
        self.draw.rectangle(self._box(box), fill=fill, outline=outline)

    def ellipse(self, box: Box, fill=None, outline=None, width: float = 1) -> None:
        self.draw.ellipse(self._box(box), fill=fill, outline=outline, width=max(1, self._px(width)))

    def polygon(self, points: Sequence[tuple[float, float]], fill, outline=None) -> None:
        self.draw.polygon([(self._px(x), self._px(y)) for x, y in points], fill=fill, outline=outline)

    def line(self, points: Sequence[tuple[float, float]], fill, width: float = 1) -> None:
        self.draw.line([(self._px(x), self._px(y)) for x, y in points], fill=fill, width=max(1, self._px(width)))

    def gradient(self, y0: float, y1: float, top, bottom) -> None:
        start, stop = self._px(y0), self._px(y1)
        for row in range(start, stop):
            t = (row - start) / max(stop - start - 1, 1)
            colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom))
            self.draw.line([(0, row), (self.size - 1, row)], fill=colour)

    def add_noise(self, rng: np.random.Generator, amplitude: int) -> None:
        """Texture everything drawn so far (call before drawing the exact-colour objects)."""
        pixels = np.asarray(self.image, dtype=np.int16)
        grain = rng.integers(-amplitude, amplitude + 1, size=(*pixels.shape[:2], 1), dtype=np.int16)
        self.image = Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))
        self.draw = ImageDraw.Draw(self.image)


def _jitter(rng: np.random.Generator, colour, amount: int) -> tuple[int, ...]:
    return tuple(min(max(c + int(rng.integers(-amount, amount + 1)), 0), 255) for c in colour)


def _grey(rng: np.random.Generator, level: int, amount: int) -> tuple[int, int, int]:
    value = level + int(rng.integers(-amount, amount + 1))
    return (value, value, value)


def _darker(colour, factor: float = 0.55) -> tuple[int, ...]:
    return tuple(round(c * factor) for c in colour)


def _apart(a: Box, b: Box, gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _place(
    propose: Callable[[int], Box], n: int, gap: float, blocked: Sequence[Box] = (), rounds: int = 100
) -> list[Box]:
    """``n`` boxes from ``propose(k)`` that keep ``gap`` from each other and from ``blocked``.

    Restarts from scratch when a layout gets stuck, so a crowded first choice cannot fail it.
    """
    for _ in range(rounds):
        boxes: list[Box] = []
        for _ in range(50 * n):
            box = propose(len(boxes))
            if all(_apart(box, other, gap) for other in (*blocked, *boxes)):
                boxes.append(box)
                if len(boxes) == n:
                    return boxes
    raise LayoutError(f"could not place {n} non-overlapping objects")


def _count(rng: np.random.Generator, qtype: str, answer: str, count_type: str) -> int:
    return int(answer) if qtype == count_type else int(rng.integers(1, 4))


def _sides(rng: np.random.Generator, n: int) -> list[str]:
    """Left/right for up to three objects, at most two per side (three do not fit on one)."""
    return [str(side) for side in rng.permutation([*SIDES, rng.choice(SIDES)])[:n]]


# ---------------------------------------------------------------------------------------------
# Domains


HORIZON = 24.0


def _road_half_width(y: float) -> float:
    return 1 + (y - HORIZON) * 33 / (UNIT - HORIZON)


def _draw_ad(rng: np.random.Generator, size: int, qtype: str, answer: str) -> Image.Image:
    """Driver's view: sky, grass, a road to the horizon, cars in two lanes, a traffic light."""
    canvas = Canvas(size, (0, 0, 0))
    canvas.gradient(0, HORIZON, _jitter(rng, (120, 170, 230), 15), _jitter(rng, (200, 220, 240), 10))
    canvas.rect((0, HORIZON, UNIT, UNIT), _jitter(rng, (85, 140, 65), 12))
    # A treeline on the horizon.
    tree = _jitter(rng, (40, 90, 45), 8)
    x = 0.0
    while x < UNIT:
        width = float(rng.uniform(4, 9))
        canvas.ellipse((x, HORIZON - rng.uniform(2, 5), x + width, HORIZON + 2), tree)
        x += width * 0.7
    bottom = _road_half_width(UNIT)
    road = [(31, HORIZON), (33, HORIZON), (32 + bottom, UNIT), (32 - bottom, UNIT)]
    canvas.polygon(road, _jitter(rng, (95, 95, 100), 12))
    canvas.line([(32 - bottom + 1, UNIT), (31, HORIZON)], (235, 235, 235), 1)
    canvas.line([(32 + bottom - 1, UNIT), (33, HORIZON)], (235, 235, 235), 1)
    y = HORIZON + 2 + rng.uniform(0, 4)
    while y < UNIT:  # centre dashes, longer nearer the camera
        length = 1.5 + (y - HORIZON) * 0.15
        canvas.line([(32, y), (32, y + length)], (235, 235, 235), 1 if y < 44 else 2)
        y += length * 2.2
    canvas.add_noise(rng, 5)

    _draw_traffic_light(canvas, rng, answer if qtype == "light_colour" else str(rng.choice(LIGHT_COLOURS)))
    n_cars = 1 if qtype == "car_lane" else _count(rng, qtype, answer, "car_count")
    lanes = [answer] if qtype == "car_lane" else _sides(rng, n_cars)

    def propose(k: int) -> Box:
        y_bottom = float(rng.uniform(40, 63))
        half = _road_half_width(y_bottom)
        width = min(max(0.75 * half, 12), 20)
        centre = 32 - half / 2 if lanes[k] == "left" else 32 + half / 2
        return (centre - width / 2, y_bottom - 0.6 * width - 2, centre + width / 2, y_bottom)

    for box in _place(propose, n_cars, gap=2):
        _draw_car(canvas, box, COLOURS[str(rng.choice(CAR_COLOURS))])
    return canvas.image


def _draw_traffic_light(canvas: Canvas, rng: np.random.Generator, lit: str) -> None:
    x0 = 3.0 if rng.random() < 0.5 else 51.0
    centre = x0 + 5
    canvas.rect((centre - 1, 28, centre + 1, 38), (50, 50, 50))
    canvas.rect((x0, 3, x0 + 10, 29), (25, 25, 25))
    for colour, cy in zip(("red", "yellow", "green"), (8.5, 16, 23.5)):
        fill = COLOURS[colour] if colour == lit else (60, 60, 60)
        canvas.ellipse((centre - 4, cy - 4, centre + 4, cy + 4), fill)


def _draw_car(canvas: Canvas, box: Box, colour) -> None:
    """A car seen from behind: body, dark rear window, wheels below the body."""
    x0, y0, x1, y1 = box
    canvas.rect((x0 + 1, y1 - 2, x0 + 4, y1), (20, 20, 20))
    canvas.rect((x1 - 4, y1 - 2, x1 - 1, y1), (20, 20, 20))
    canvas.rect((x0, y0, x1, y1 - 2), colour)
    canvas.rect((x0 + 2, y0 + 1.5, x1 - 2, y0 + (y1 - y0) * 0.45), (35, 40, 55))


LUNG_CENTRES = ((19.0, 33.0), (45.0, 33.0))
LUNG_RADII = (12.0, 21.0)


def _draw_med(rng: np.random.Generator, size: int, qtype: str, answer: str) -> Image.Image:
    """A chest CT slice: black field, grey body, two dark lungs, the spine, bright lesions."""
    canvas = Canvas(size, (5, 5, 5))
    dx, dy = rng.uniform(-1.5, 1.5, size=2)
    canvas.ellipse((2 + dx, 6 + dy, 62 + dx, 60 + dy), _grey(rng, 125, 15))
    canvas.ellipse((5 + dx, 9 + dy, 59 + dx, 57 + dy), _grey(rng, 105, 10))
    lung = _grey(rng, 45, 8)
    rx, ry = LUNG_RADII
    for cx, cy in LUNG_CENTRES:
        canvas.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), lung)
    canvas.ellipse((28, 47, 36, 55), _grey(rng, 185, 10))  # vertebra
    canvas.add_noise(rng, 6)

    if qtype == "lesion_side":
        sides = [answer]
    elif qtype == "lesion_present" and answer == "no":
        sides = []
    else:
        n = _count(rng, qtype, answer, "lesion_count")
        sides = _sides(rng, n)
    if not sides:
        return canvas.image

    def propose(k: int) -> Box:
        while True:  # a circle whose bounding box lies inside the lung ellipse
            cx, cy = LUNG_CENTRES[SIDES.index(sides[k])]
            d = float(rng.uniform(10, 12.5))
            x0, y0 = cx + rng.uniform(-rx, rx - d), cy + rng.uniform(-ry, ry - d)
            corners = [(x0, y0), (x0 + d, y0), (x0, y0 + d), (x0 + d, y0 + d)]
            if all(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1 for x, y in corners):
                return (x0, y0, x0 + d, y0 + d)

    for box in _place(propose, len(sides), gap=2):
        canvas.ellipse(box, LESION)
    return canvas.image


FIELD_COLOURS = ((95, 135, 60), (120, 150, 70), (150, 125, 85), (170, 150, 100), (80, 110, 50), (135, 160, 90))


def _draw_rs(rng: np.random.Generator, size: int, qtype: str, answer: str) -> Image.Image:
    """Aerial view: a patchwork of fields, a road, maybe a river with a bridge, buildings."""
    canvas = Canvas(size, FIELD_COLOURS[0])
    xs = [0.0, *sorted(rng.uniform(12, 52, size=int(rng.integers(1, 3)))), float(UNIT)]
    ys = [0.0, *sorted(rng.uniform(12, 52, size=int(rng.integers(1, 3)))), float(UNIT)]
    for x0, x1 in itertools.pairwise(xs):
        for y0, y1 in itertools.pairwise(ys):
            colour = _jitter(rng, FIELD_COLOURS[rng.integers(len(FIELD_COLOURS))], 8)
            canvas.rect((x0, y0, x1, y1), colour)
            furrow = _darker(colour, 0.85)
            for offset in np.arange(1.5, max(x1 - x0, y1 - y0), 3):  # crop rows
                if rng.random() < 0.5 and x0 + offset < x1:
                    canvas.line([(x0 + offset, y0), (x0 + offset, y1 - 1)], furrow)
                elif y0 + offset < y1:
                    canvas.line([(x0, y0 + offset), (x1 - 1, y0 + offset)], furrow)
    vertical = rng.random() < 0.5
    road_at = float(rng.uniform(8, 52))
    road_box = (road_at, 0, road_at + 4, UNIT) if vertical else (0, road_at, UNIT, road_at + 4)
    road = _jitter(rng, (120, 120, 115), 8)
    canvas.rect(road_box, road)
    canvas.add_noise(rng, 6)

    blocked = [_grow(road_box, 1)]
    if (answer == "yes") if qtype == "river_present" else rng.random() < 0.5:
        river_box = _draw_river(canvas, rng, across_road=vertical)
        canvas.rect(road_box, road)  # the bridge
        blocked.append(river_box)

    n = _count(rng, qtype, answer, "building_count")
    roof = COLOURS[answer if qtype == "roof_colour" else str(rng.choice(ROOF_COLOURS))]

    def propose(k: int) -> Box:
        x0, y0 = rng.uniform(1, UNIT - 1 - BUILDING_SIZE, size=2)
        return (x0, y0, x0 + BUILDING_SIZE, y0 + BUILDING_SIZE)

    for box in _place(propose, n, gap=3, blocked=blocked):
        canvas.rect(box, roof, outline=(50, 50, 50))
    return canvas.image


def _grow(box: Box, margin: float) -> Box:
    return (box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin)


def _draw_river(canvas: Canvas, rng: np.random.Generator, across_road: bool) -> Box:
    """A wavy band; horizontal when the road is vertical. Returns the band's bounding box."""
    centre, width, amplitude = rng.uniform(12, 52), rng.uniform(7, 9), rng.uniform(1.5, 3.5)
    wavelength, phase = rng.uniform(25, 45), rng.uniform(0, 2 * np.pi)
    steps = np.arange(0, UNIT + 2, 2.0)
    middle = centre + amplitude * np.sin(2 * np.pi * steps / wavelength + phase)
    upper = list(zip(steps, middle - width / 2))
    lower = list(zip(steps[::-1], middle[::-1] + width / 2))
    points = [(x, y) if across_road else (y, x) for x, y in upper + lower]
    canvas.polygon(points, RIVER)
    low, high = middle.min() - width / 2 - 1, middle.max() + width / 2 + 1
    return (0, low, UNIT, high) if across_road else (low, 0, high, UNIT)


WALL_COLOURS = ((235, 225, 200), (220, 225, 232), (238, 215, 208), (215, 230, 215))
FLOOR_COLOURS = ((150, 110, 70), (125, 125, 135), (170, 135, 95))


def _draw_com(rng: np.random.Generator, size: int, qtype: str, answer: str) -> Image.Image:
    """A room: wall, floor, a window or picture, and everyday objects as coloured shapes."""
    wall = _jitter(rng, WALL_COLOURS[rng.integers(len(WALL_COLOURS))], 6)
    canvas = Canvas(size, wall)
    floor_y = float(rng.uniform(36, 44))
    floor = _jitter(rng, FLOOR_COLOURS[rng.integers(len(FLOOR_COLOURS))], 8)
    canvas.rect((0, floor_y, UNIT, UNIT), floor)
    for y in np.arange(floor_y + 5, UNIT, 6):  # planks
        canvas.line([(0, y), (UNIT, y)], _darker(floor, 0.8))
    canvas.rect((0, floor_y - 1.5, UNIT, floor_y), (235, 235, 230))  # skirting board
    decoration = _draw_wall_decoration(canvas, rng, floor_y)
    canvas.add_noise(rng, 4)

    # Counting scenes hold balls of one size, and a shape scene one large object, so that a count
    # or a shape shows in how much of the image the objects cover: learnable by the small demo
    # model in minutes.
    if qtype == "object_count":
        n = int(answer)
        shapes = ["circle"] * n
        colours = [str(c) for c in rng.choice(OBJECT_COLOURS, n)]
    elif qtype == "object_shape":
        shapes, colours = [answer], [str(rng.choice(OBJECT_COLOURS))]
    else:
        shapes, colours = ["circle"], [answer]
    d = SHAPE_SIZE if qtype == "object_shape" else OBJECT_SIZE

    def propose(k: int) -> Box:
        x0, y0 = rng.uniform(2, UNIT - 2 - d), rng.uniform(6, UNIT - 2 - d)
        return (x0, y0, x0 + d, y0 + d)

    for box, shape, colour in zip(_place(propose, len(shapes), gap=3, blocked=[decoration]), shapes, colours):
        _draw_shape(canvas, box, shape, COLOURS[colour])
    return canvas.image


def _draw_wall_decoration(canvas: Canvas, rng: np.random.Generator, floor_y: float) -> Box:
    w, h = rng.uniform(16, 22), rng.uniform(14, floor_y - 12)
    x0, y0 = rng.uniform(4, UNIT - 4 - w), rng.uniform(3, 6)
    box = (x0, y0, x0 + w, y0 + h)
    if rng.random() < 0.5:  # window: frame, glass, cross bars
        canvas.rect(box, (245, 245, 245))
        canvas.rect(_grow(box, -1.5), (170, 210, 240))
        canvas.line([(x0 + w / 2, y0), (x0 + w / 2, y0 + h)], (245, 245, 245), 1)
        canvas.line([(x0, y0 + h / 2), (x0 + w, y0 + h / 2)], (245, 245, 245), 1)
    else:  # framed picture of a mountain
        canvas.rect(box, (110, 75, 45))
        left, top, right, bottom = _grow(box, -2)
        canvas.rect((left, top, right, bottom), (200, 215, 225))
        peak = (rng.uniform(left + 3, right - 3), top + (bottom - top) * 0.3)
        canvas.polygon([(left, bottom - 1), peak, (right - 1, bottom - 1)], (120, 150, 115))
    return _grow(box, 1)


def _draw_shape(canvas: Canvas, box: Box, shape: str, colour) -> None:
    outline = _darker(colour)
    if shape == "circle":
        canvas.ellipse(box, colour, outline=outline)
    elif shape == "square":
        canvas.rect(box, colour, outline=outline)
    else:
        x0, y0, x1, y1 = box
        canvas.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], colour, outline=outline)


TEXT_RIGHT = 42.0  # text column ends here; the margin to its right holds the stamp
TEXT_TOP = 17.0
PARAGRAPH_GAP = 7.0
LINE_PITCH = 4.0  # 2-unit text lines with 2-unit spacing


def _draw_doc(rng: np.random.Generator, size: int, qtype: str, answer: str) -> Image.Image:
    """A scanned page: cream paper, a coloured heading bar, paragraphs of text, maybe a stamp."""
    canvas = Canvas(size, _jitter(rng, (242, 238, 222), 5))
    canvas.add_noise(rng, 3)
    heading = COLOURS[answer if qtype == "heading_colour" else str(rng.choice(HEADING_COLOURS))]
    canvas.rect((5, 4, rng.uniform(30, 58), 11), heading)

    # Two or three lines a paragraph, so more paragraphs cover more of the page (1: 2-3 lines,
    # 2: 4-6, 3: 6-9): a count the small demo model can learn in minutes.
    n = _count(rng, qtype, answer, "paragraph_count")
    lines = [int(rng.integers(2, 4)) for _ in range(n)]
    height = sum(LINE_PITCH * k - 2 for k in lines) + PARAGRAPH_GAP * (n - 1)
    y = TEXT_TOP + rng.uniform(0, UNIT - 3 - TEXT_TOP - height)
    for k in lines:
        for line in range(k):
            indent = 3 if line == 0 else 0
            end = TEXT_RIGHT if line < k - 1 else rng.uniform(16, TEXT_RIGHT)
            _draw_text_line(canvas, rng, 5 + indent, end, y)
            y += LINE_PITCH
        y += PARAGRAPH_GAP - 2

    if (answer == "yes") if qtype == "stamp_present" else rng.random() < 0.5:
        cy = rng.uniform(TEXT_TOP + 7, UNIT - 9)
        red = COLOURS[STAMP_COLOUR]
        canvas.ellipse((46, cy - 7, 60, cy + 7), outline=red, width=2)
        canvas.rect((49.5, cy - 1, 56.5, cy + 1), red)
    return canvas.image


def _draw_text_line(canvas: Canvas, rng: np.random.Generator, start: float, end: float, y: float) -> None:
    """Words as dark dashes separated by spaces."""
    x = start
    while x < end - 2:
        word_end = min(x + rng.uniform(3, 8), end)
        canvas.rect((x, y, word_end, y + 2), TEXT)
        x = word_end + 1.5


DRAWERS: dict[str, Callable[[np.random.Generator, int, str, str], Image.Image]] = {
    "ad": _draw_ad,
    "med": _draw_med,
    "rs": _draw_rs,
    "com": _draw_com,
    "doc": _draw_doc,
}
