"""Vocabulary and data types of the Shapes world: scene graphs and placed layouts.

A `SceneGraph` is the content of a prompt (objects with shape, colour and count, plus pairwise
relations). A `Layout` is one concrete picture of it: every object instance with a colour, a
centre and a size in pixels on a square canvas whose y axis grows downward.
"""

import dataclasses

# Shapes that a connected-component detector distinguishes at a 32 px canvas with objects of
# 8-12 px: their fill ratios (area over bounding box: 0.79, 1.0, 0.5, 0.5) and vertical skewness
# (triangle -0.57, the others 0) differ (see detect.py). A plus-shaped cross was tried and dropped
# because its fill ratio and spread overlap the diamond's at 8 px.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")

# Eight of GenEval's ten colour words. White is left out because it vanishes on the light
# background, and brown because it sits between red, orange and black under noise.
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "black")

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (235, 205, 0),
    "green": (20, 150, 50),
    "blue": (30, 70, 225),
    "purple": (125, 35, 180),
    "pink": (250, 105, 190),
    "black": (25, 25, 25),
}

BACKGROUND: tuple[int, int, int] = (240, 240, 235)

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """One noun phrase of a prompt: `count` objects of `shape`, all of `color` (None: any colour)."""

    shape: str
    color: str | None
    count: int = 1


@dataclasses.dataclass(frozen=True)
class Relation:
    """The fact "objects[subject] is <relation> objects[reference]", by index into the graph."""

    subject: int
    relation: str
    reference: int


@dataclasses.dataclass(frozen=True)
class SceneGraph:
    """Objects and relations of a prompt, in the order of GenEval's include clauses."""

    objects: tuple[ObjectSpec, ...]
    relations: tuple[Relation, ...] = ()


@dataclasses.dataclass(frozen=True)
class PlacedObject:
    """One drawn object: `center` is (x, y) in pixels with y down, `size` the side of its bounding box
    in pixels, and `spec_index` the index of the `ObjectSpec` it instantiates."""

    shape: str
    color: str
    center: tuple[float, float]
    size: float
    spec_index: int

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Bounding box (x0, y0, x1, y1) in pixels."""
        half = self.size / 2
        x, y = self.center
        return (x - half, y - half, x + half, y + half)


@dataclasses.dataclass(frozen=True)
class Layout:
    """A canvas size in pixels and the objects drawn on it, in drawing order."""

    canvas: int
    objects: tuple[PlacedObject, ...]
