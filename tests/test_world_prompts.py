"""Prompts, metadata and held-out compositions of the Shapes world."""

import collections
import json

import numpy as np
import pytest

from pstroke.errors import UserError
from pstroke.world import prompts
from pstroke.world.benchmark import BENCHMARK_PATH, TAG_COUNTS, read_jsonl
from pstroke.world.prompts import (
    HELDOUT_PAIRS,
    HELDOUT_RELATIONS,
    HELDOUT_TAGS,
    TAGS,
    composition_split,
    graph_from_metadata,
    parse_prompt,
    prompt_for,
    sample_graph,
    to_metadata,
)
from pstroke.world.scene import ObjectSpec, Relation, SceneGraph

CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def test_benchmark_rows_round_trip():
    for row in read_jsonl(BENCHMARK_PATH):
        graph = graph_from_metadata(row)
        assert parse_prompt(row["prompt"]) == graph, row["prompt"]
        assert to_metadata(graph, row["tag"]) == row
        assert prompt_for(graph, row["tag"]) == row["prompt"]


def test_templates_match_geneval_forms():
    red_circle, blue_square = ObjectSpec("circle", "red"), ObjectSpec("square", "blue")
    cases = {
        "single_object": (SceneGraph((ObjectSpec("circle", None),)), "a photo of a circle"),
        "two_object": (SceneGraph((ObjectSpec("circle", None), ObjectSpec("square", None))), "a photo of a circle and a square"),
        "counting": (SceneGraph((ObjectSpec("triangle", None, 3),)), "a photo of three triangles"),
        "colors": (SceneGraph((ObjectSpec("diamond", "orange"),)), "a photo of an orange diamond"),
        "position": (
            SceneGraph((ObjectSpec("square", None), ObjectSpec("circle", None)), (Relation(1, "left of", 0),)),
            "a photo of a circle left of a square",
        ),
        "color_attr": (SceneGraph((red_circle, blue_square)), "a photo of a red circle and a blue square"),
        "relations3": (
            SceneGraph(
                (blue_square, red_circle, ObjectSpec("triangle", "green")),
                (Relation(1, "left of", 0), Relation(2, "below", 0)),
            ),
            "a photo of a red circle left of a blue square and a green triangle below the blue square",
        ),
    }
    assert set(cases) == set(TAGS)
    for tag, (graph, text) in cases.items():
        assert prompt_for(graph, tag) == text
        assert parse_prompt(text) == graph


def test_position_metadata_matches_geneval_layout():
    graph = parse_prompt("a photo of a circle above a diamond")
    metadata = to_metadata(graph, "position")
    assert metadata["include"] == [
        {"class": "diamond", "count": 1},
        {"class": "circle", "count": 1, "position": ["above", 0]},
    ]
    assert list(metadata)[:3] == ["tag", "include", "prompt"]


def test_counting_metadata_has_exclude_clause():
    metadata = to_metadata(parse_prompt("a photo of four squares"), "counting")
    assert metadata["include"] == [{"class": "square", "count": 4}]
    assert metadata["exclude"] == [{"class": "square", "count": 5}]


def test_parse_unknown_word_names_vocabulary():
    with pytest.raises(UserError) as error:
        parse_prompt("a photo of a hexagon")
    message = str(error.value)
    assert "'hexagon'" in message
    for word in ("circle", "red", "left", "three"):
        assert word in message


def test_parse_rejects_broken_grammar():
    broken = ("photo of a circle", "a photo of circle", "a photo of a circle square", "a photo of two circle", "a photo of a circle left of the square")
    for text in broken:
        with pytest.raises(UserError):
            parse_prompt(text)


def test_geneval_class_is_rejected_clearly(assets_dir):
    first = json.loads((assets_dir / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()[0])
    with pytest.raises(UserError) as error:
        graph_from_metadata(first)
    assert repr(first["include"][0]["class"]) in str(error.value)
    assert "circle" in str(error.value)


def test_tag_counts_follow_geneval(assets_dir):
    lines = (assets_dir / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()
    geneval = collections.Counter(json.loads(line)["tag"] for line in lines)
    assert {tag: TAG_COUNTS[tag] for tag in geneval} == dict(geneval)
    benchmark = collections.Counter(row["tag"] for row in read_jsonl(BENCHMARK_PATH))
    assert dict(benchmark) == TAG_COUNTS


def _compositions(graph):
    pairs = {(o.shape, o.color) for o in graph.objects if o.color}
    triples = set()
    for r in graph.relations:
        subject, reference = graph.objects[r.subject].shape, graph.objects[r.reference].shape
        triples |= {(subject, r.relation, reference), (reference, CONVERSE[r.relation], subject)}
    return pairs, triples


def test_train_graphs_avoid_heldout_compositions():
    rng = np.random.default_rng(0)
    for tag in TAGS:
        for _ in range(300):
            pairs, triples = _compositions(sample_graph(tag, rng, "train"))
            assert not pairs & set(HELDOUT_PAIRS)
            assert not triples & set(HELDOUT_RELATIONS)


def test_heldout_graphs_contain_heldout_composition():
    rng = np.random.default_rng(1)
    for tag in HELDOUT_TAGS:
        for _ in range(100):
            graph = sample_graph(tag, rng, "heldout")
            pairs, triples = _compositions(graph)
            assert pairs & set(HELDOUT_PAIRS) or triples & set(HELDOUT_RELATIONS)
            assert composition_split(graph) == "heldout"


def test_heldout_split_rejects_tag_without_compositions():
    with pytest.raises(UserError):
        sample_graph("counting", np.random.default_rng(0), "heldout")


def test_benchmark_marks_heldout_rows():
    rows = read_jsonl(BENCHMARK_PATH)
    for row in rows:
        expected = "heldout" if composition_split(graph_from_metadata(row)) == "heldout" else "in_distribution"
        assert row["split"] == expected
    heldout_tags = {row["tag"] for row in rows if row["split"] == "heldout"}
    assert heldout_tags == set(HELDOUT_TAGS)


def test_vocabulary_covers_every_benchmark_word():
    words = {word for row in read_jsonl(BENCHMARK_PATH) for word in row["prompt"].split()}
    assert words <= set(prompts.VOCABULARY)
