"""Sample concrete layouts of a scene graph: non-overlapping objects that satisfy every relation.

Objects are placed one at a time at uniform random positions, each position checked against the
objects already placed (a gap between bounding boxes, and every relation whose two objects are
both placed). An object that finds no position within `TRIES_PER_OBJECT` draws restarts the
whole layout, and every `RESTARTS_PER_SHRINK` restarts shrink the largest allowed size by 10%
toward the smallest.
"""

import numpy as np

from pstroke.world.judge import POSITION_MARGIN, relations_between
from pstroke.world.scene import COLORS, RELATIONS, SHAPES, Layout, PlacedObject, SceneGraph

# Object sizes (side of the bounding box) as fractions of the canvas: 8-12 px at 32 px.
MIN_SIZE = 0.25
MAX_SIZE = 0.375

# Empty space between bounding boxes and from the canvas edge, as fractions of the canvas
# (2 px and 1 px at 32 px), so anti-aliased rims of neighbours never touch.
GAP = 1 / 16
BORDER = 1 / 32

# Relations are placed with a stricter rule than the judge's: margin 0.15 in place of 0.1, and a
# direction beyond 0.55 in place of 0.5. Box estimates off by a fraction of a pixel, or slight
# blur, then still pass the judge.
LAYOUT_MARGIN = POSITION_MARGIN + 0.05
LAYOUT_THRESHOLD = 0.55

TRIES_PER_OBJECT = 60
RESTARTS_PER_SHRINK = 20
MAX_RESTARTS = 200


class Unsatisfiable(Exception):
    """The scene graph has no layout on this canvas: contradictory relations, or too many objects."""


def _validate(graph: SceneGraph) -> None:
    for spec in graph.objects:
        if spec.shape not in SHAPES or (spec.color is not None and spec.color not in COLORS) or spec.count < 1:
            raise ValueError(f"invalid object {spec}: shape must be one of {SHAPES}, colour one of {COLORS} or None")
    for relation in graph.relations:
        if relation.relation not in RELATIONS:
            raise ValueError(f"invalid relation {relation.relation!r}; expected one of {RELATIONS}")
        for index in (relation.subject, relation.reference):
            if not 0 <= index < len(graph.objects):
                raise ValueError(f"relation {relation} refers to object {index}, but the graph has {len(graph.objects)}")
        if relation.subject == relation.reference:
            raise Unsatisfiable(f"relation {relation} relates an object to itself")


def _separated(a: PlacedObject, b: PlacedObject, gap: float) -> bool:
    reach = (a.size + b.size) / 2 + gap
    return abs(a.center[0] - b.center[0]) >= reach or abs(a.center[1] - b.center[1]) >= reach


def _relations_hold(candidate: PlacedObject, placed: list[PlacedObject], graph: SceneGraph) -> bool:
    for relation in graph.relations:
        for other in placed:
            if candidate.spec_index == relation.subject and other.spec_index == relation.reference:
                subject, reference = candidate, other
            elif candidate.spec_index == relation.reference and other.spec_index == relation.subject:
                subject, reference = other, candidate
            else:
                continue
            held = relations_between(subject.box, reference.box, LAYOUT_MARGIN, LAYOUT_THRESHOLD)
            if relation.relation not in held:
                return False
    return True


def _try_place(graph, instances, colors, canvas, max_size, rng) -> list[PlacedObject] | None:
    gap, border = GAP * canvas, BORDER * canvas
    placed: list[PlacedObject] = []
    for (spec_index, shape), color in zip(instances, colors):
        size = float(rng.uniform(MIN_SIZE * canvas, max_size))
        low, high = border + size / 2, canvas - border - size / 2
        for _ in range(TRIES_PER_OBJECT):
            center = (float(rng.uniform(low, high)), float(rng.uniform(low, high)))
            candidate = PlacedObject(shape, color, center, size, spec_index)
            if all(_separated(candidate, other, gap) for other in placed) and _relations_hold(candidate, placed, graph):
                placed.append(candidate)
                break
        else:
            return None
    return placed


def sample_layout(graph: SceneGraph, canvas: int, rng: np.random.Generator) -> Layout:
    """Return a random layout of `graph` on a `canvas` x `canvas` pixel image.

    Objects whose spec has no colour get a uniformly random palette colour each. Every object
    keeps a gap of `GAP * canvas` from the others, and every relation is true under GenEval's
    position rule (stricter settings, see `LAYOUT_MARGIN`). The result depends only on `graph`,
    `canvas` and the state of `rng`.

    Raises:
      Unsatisfiable: no layout was found within `MAX_RESTARTS` restarts.
      ValueError: the graph names an unknown shape, colour or relation, or an out-of-range index.
    """
    _validate(graph)
    instances = [(i, spec.shape) for i, spec in enumerate(graph.objects) for _ in range(spec.count)]
    colors = [
        spec.color if spec.color is not None else COLORS[int(rng.integers(len(COLORS)))]
        for spec in graph.objects
        for _ in range(spec.count)
    ]

    max_size = MAX_SIZE * canvas
    for restart in range(MAX_RESTARTS):
        if restart and restart % RESTARTS_PER_SHRINK == 0:
            max_size = max(MIN_SIZE * canvas, max_size - 0.1 * (max_size - MIN_SIZE * canvas) - 0.05 * canvas)
        placed = _try_place(graph, instances, colors, canvas, max_size, rng)
        if placed is not None:
            return Layout(canvas=canvas, objects=tuple(placed))
    raise Unsatisfiable(f"no layout of {graph} on a {canvas} px canvas after {MAX_RESTARTS} restarts")
