"""Layout sampling and rendering of the Shapes world."""

import itertools

import numpy as np
import pytest

from pstroke.world.judge import relations_between
from pstroke.world.layout import GAP, Unsatisfiable, sample_layout
from pstroke.world.prompts import TAGS, sample_graph
from pstroke.world.render import render
from pstroke.world.scene import BACKGROUND, PALETTE, Layout, ObjectSpec, PlacedObject, Relation, SceneGraph


@pytest.mark.parametrize("canvas", [32, 64])
def test_layouts_keep_gap_bounds_and_relations(canvas):
    rng = np.random.default_rng(0)
    for tag in TAGS:
        for _ in range(40):
            graph = sample_graph(tag, rng)
            layout = sample_layout(graph, canvas, rng)
            assert len(layout.objects) == sum(spec.count for spec in graph.objects)
            for placed in layout.objects:
                x0, y0, x1, y1 = placed.box
                assert x0 >= 0
                assert y0 >= 0
                assert x1 <= canvas
                assert y1 <= canvas
                spec = graph.objects[placed.spec_index]
                assert placed.shape == spec.shape
                assert spec.color is None or placed.color == spec.color
            for a, b in itertools.combinations(layout.objects, 2):
                reach = (a.size + b.size) / 2 + GAP * canvas
                dx, dy = abs(a.center[0] - b.center[0]), abs(a.center[1] - b.center[1])
                assert dx >= reach - 1e-9 or dy >= reach - 1e-9
            for relation in graph.relations:
                for s in (o for o in layout.objects if o.spec_index == relation.subject):
                    for r in (o for o in layout.objects if o.spec_index == relation.reference):
                        assert relation.relation in relations_between(s.box, r.box)


def test_layout_depends_only_on_seed():
    graph = sample_graph("relations3", np.random.default_rng(3))
    first = sample_layout(graph, 32, np.random.default_rng(7))
    second = sample_layout(graph, 32, np.random.default_rng(7))
    other = sample_layout(graph, 32, np.random.default_rng(8))
    assert first == second
    assert first != other


def test_contradictory_relations_are_unsatisfiable():
    graph = SceneGraph(
        (ObjectSpec("circle", "red"), ObjectSpec("square", "blue")),
        (Relation(1, "left of", 0), Relation(0, "left of", 1)),
    )
    with pytest.raises(Unsatisfiable):
        sample_layout(graph, 32, np.random.default_rng(0))


def test_too_many_objects_are_unsatisfiable():
    with pytest.raises(Unsatisfiable):
        sample_layout(SceneGraph((ObjectSpec("square", None, 16),)), 32, np.random.default_rng(0))


def test_render_is_deterministic_and_antialiased():
    layout = Layout(32, (PlacedObject("circle", "blue", (15.3, 16.7), 10.0, 0),))
    image = render(layout)
    assert image.shape == (32, 32, 3)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, render(layout))

    colors = {tuple(pixel) for pixel in image.reshape(-1, 3)}
    assert BACKGROUND in colors
    assert PALETTE["blue"] in colors
    assert len(colors) > 4  # edge pixels blend the two


@pytest.mark.parametrize("canvas", [32, 64])
def test_render_covers_the_object_area(canvas):
    size = canvas / 4
    for shape, expected_fill in (("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5), ("diamond", 0.5)):
        layout = Layout(canvas, (PlacedObject(shape, "black", (canvas / 2, canvas / 2), size, 0),))
        image = render(layout).astype(np.float64)
        background, black = np.asarray(BACKGROUND, float), np.asarray(PALETTE["black"], float)
        coverage = ((background - image) / (background - black)).mean(axis=-1).sum()
        assert coverage == pytest.approx(expected_fill * size * size, rel=0.05), shape
