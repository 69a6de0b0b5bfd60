"""Trajectory sources: every state is judged by the world's evaluator (detector + GenEval rules)."""

import collections

import numpy as np
import pytest

from pstroke.config import load_config
from pstroke.data import grammar, tokenizer, trajectories
from pstroke.errors import UserError
from pstroke.world import detect, judge, layout, prompts, render, scene

CANVAS = 32


def _scenes(count_per_tag: int, seed: int = 0):
    """Yield (graph, tag, layout, rng) for every tag, `count_per_tag` times each."""
    rng = np.random.default_rng(seed)
    for tag in prompts.TAGS:
        for _ in range(count_per_tag):
            graph = prompts.sample_graph(tag, rng)
            yield graph, tag, layout.sample_layout(graph, CANVAS, rng), rng


def _images(record):
    return [segment for segment in record["segments"] if segment["type"] == "image"]


def _texts(record):
    return [" ".join(text for text, _ in segment["parts"]) for segment in record["segments"] if segment["type"] == "text"]


def _objects(segment):
    return [trajectories.object_from_json(item) for item in segment["objects"]]


def _graph(record):
    return prompts.graph_from_metadata(record["metadata"])


@pytest.fixture(scope="module")
def multi_turn_records():
    records = []
    for graph, tag, placed, rng in _scenes(8):
        record = trajectories.multi_turn(graph, tag, placed, rng, augment_fraction=0.6, max_images=5)
        if record is not None:
            records.append(record)
    return records


@pytest.fixture(scope="module")
def conflict_records():
    return [record for graph, tag, placed, rng in _scenes(6, seed=1)
            if (record := trajectories.conflict_critique(graph, tag, placed, rng, wrong=True)) is not None]


@pytest.fixture(scope="module")
def alignment_records():
    return [trajectories.alignment_critique(graph, tag, placed, rng, mismatch=True)
            for graph, tag, placed, rng in _scenes(6, seed=2)]


def test_multi_turn_final_image_passes_judge(multi_turn_records):
    assert len(multi_turn_records) >= 40
    for record in multi_turn_records:
        final = trajectories.decode_image(_images(record)[-1], CANVAS)
        verdict = judge.judge(final, record["metadata"])
        assert verdict.correct, (record["prompt"], verdict.reason)


def test_multi_turn_states_consistent(multi_turn_records):
    for record in multi_turn_records:
        graph = _graph(record)
        for segment in _images(record):
            objects = _objects(segment)
            image = trajectories.decode_image(segment, CANVAS)
            metadata = trajectories.state_metadata(graph, objects, record["tag"])
            assert judge.judge(image, metadata).correct, (record["prompt"], objects)
            assert len(detect.detect(image)) == len(objects)


def test_multi_turn_states_grow_in_order(multi_turn_records):
    for record in multi_turn_records:
        if record["kind"] != "additive":
            continue
        states = [_objects(segment) for segment in _images(record)]
        for before, after in zip(states, states[1:]):
            assert after[:-1] == before  # earlier objects unmoved, one object added
        graph = _graph(record)
        for rel in graph.relations:
            order = [placed.spec_index for placed in states[-1]]
            assert order.index(rel.reference) < order.index(rel.subject)


def test_multi_turn_inspections(multi_turn_records):
    for record in multi_turn_records:
        texts = _texts(record)
        assert texts[-1] == grammar.MATCHES_PROMPT
        assert record["ends"]
        for inspection in texts[2:-1:2]:
            assert inspection.startswith("correct so far ; still to add : ")


def test_augmentations_all_occur_and_stay_valid(multi_turn_records):
    kinds = collections.Counter(record["kind"] for record in multi_turn_records)
    for name in trajectories.AUGMENTATIONS:
        assert kinds[f"augmented_{name}"] > 0, kinds
    assert max(trajectories.image_count(record) for record in multi_turn_records) <= 5


def test_augmented_step_is_not_additive(multi_turn_records):
    verbs = {"augmented_change": "change", "augmented_swap": "swap", "augmented_remove": "remove"}
    for record in multi_turn_records:
        if record["kind"] not in verbs:
            continue
        plans = [text for text in _texts(record) if text.startswith("<ins>")]
        assert any(plan.startswith(f"<ins> {verbs[record['kind']]} ") for plan in plans)
        states = [_objects(segment) for segment in _images(record)]
        changed = [after for before, after in zip(states, states[1:]) if after[:len(before)] != before]
        assert changed, record["kind"]


def _expected_phrases(error):
    """Return phrases that an inspection naming `error` must contain. A plan conflict names the
    prompt's value first, an image mismatch names what the image shows first."""
    kind, shape = error["kind"], error["shape"]
    if kind == "color" and "source" not in error:
        return [shape, f"should be {error['expected']} , not {error['got']}"]
    if kind == "color":
        return [shape, f"is {error['got']} , not {error['expected']}"]
    if kind in ("relation", "place"):
        return [shape, error["expected"], f"not {error['got']} it" if kind == "relation" else f"is {error['got']}"]
    if kind == "count":
        return [grammar.NUMBER_WORDS[error["expected"]], f"not {grammar.NUMBER_WORDS[error['got']]}"]
    if kind == "extra":
        return [f"extra {error['got']} {shape}"]
    return [shape, "missing"]


def _wrong_and_corrected(record):
    images = _images(record)
    wrong = next(segment for segment in images if segment["expect"] == "wrong")
    corrected = images[images.index(wrong) + 1]
    return wrong, corrected


def test_conflict_wrong_step_fails_judge(conflict_records):
    kinds = collections.Counter(record["error"]["kind"] for record in conflict_records)
    assert set(kinds) == {"color", "relation", "count"}, kinds
    for record in conflict_records:
        graph = _graph(record)
        wrong, _ = _wrong_and_corrected(record)
        image = trajectories.decode_image(wrong, CANVAS)
        metadata = trajectories.state_metadata(graph, _objects(wrong), record["tag"])
        assert not judge.judge(image, metadata).correct, record["error"]


def test_conflict_inspection_names_error(conflict_records):
    for record in conflict_records:
        segment = next(s for s in record["segments"] if s["type"] == "text" and s["parts"][-1][1] == "refine")
        inspection, correction = segment["parts"][0][0], segment["parts"][1][0]
        assert inspection.startswith("the plan conflicts with the prompt :")
        for phrase in _expected_phrases(record["error"]):
            assert phrase in inspection, (phrase, inspection)
        assert correction.startswith("<refine> ")
        assert correction.endswith(" </refine>")


def test_critique_corrected_image_passes(conflict_records, alignment_records):
    for record in conflict_records + alignment_records:
        graph = _graph(record)
        _, corrected = _wrong_and_corrected(record)
        assert corrected["stage"] == "refined_image"
        image = trajectories.decode_image(corrected, CANVAS)
        objects = _objects(corrected)
        assert judge.judge(image, trajectories.state_metadata(graph, objects, record["tag"])).correct
        assert len(detect.detect(image)) == len(objects)
        if record["ends"]:
            assert judge.judge(image, record["metadata"]).correct


def test_alignment_mismatch_is_visible(alignment_records):
    kinds = collections.Counter(record["error"]["kind"] for record in alignment_records)
    assert set(kinds) == {"color", "extra", "missing", "place"}, kinds
    for record in alignment_records:
        error = dict(record["error"], source="image")
        wrong, corrected = _wrong_and_corrected(record)
        found = detect.detect(trajectories.decode_image(wrong, CANVAS))
        planned = _objects(corrected)
        if error["kind"] == "color":
            assert error["got"] in {d.color for d in found if d.shape == error["shape"]}
        elif error["kind"] == "extra":
            assert len(found) == len(planned) + 1
            assert (error["shape"], error["got"]) in {(d.shape, d.color) for d in found}
        elif error["kind"] == "missing":
            assert len(found) == len(planned) - 1
        else:
            metadata = trajectories.state_metadata(_graph(record), _objects(wrong), record["tag"])
            assert not judge.judge(trajectories.decode_image(wrong, CANVAS), metadata).correct
        inspection = next(s["parts"][0][0] for s in record["segments"]
                          if s["type"] == "text" and s["parts"][-1][1] == "refine")
        assert inspection.startswith("the image does not match the plan :")
        for phrase in _expected_phrases(error):
            assert phrase in inspection, (phrase, inspection)


def test_correct_critique_lists_missing_objects():
    for graph, tag, placed, rng in _scenes(3, seed=3):
        record = trajectories.conflict_critique(graph, tag, placed, rng, wrong=False)
        objects = _objects(_images(record)[-1])
        inspection = _texts(record)[-1]
        assert "conflicts" not in inspection
        drawn = collections.Counter(o.spec_index for o in objects)
        missing = sum(spec.count - drawn[index] for index, spec in enumerate(graph.objects))
        assert record["ends"] == (missing == 0)
        if missing:
            assert inspection.startswith("correct so far ; still to add : ")
            assert len(inspection.split(" : ")[1].split(" , ")) == sum(
                1 for index, spec in enumerate(graph.objects) if drawn[index] < spec.count)


def _rollout(graph, placed, wrong_color_at: int | None):
    rounds, drawn = [], []
    for step in trajectories.additive_steps(graph, placed):
        objects = list(step.objects)
        if len(objects) - 1 == wrong_color_at:
            objects[-1] = scene.PlacedObject(objects[-1].shape, "black" if objects[-1].color != "black" else "red",
                                             objects[-1].center, objects[-1].size, objects[-1].spec_index)
        rounds.append((grammar.plan(step.instruction, "a scene"), render.render(scene.Layout(CANVAS, tuple(objects)))))
    return rounds


def test_self_sampled_rollout_critiques():
    rng = np.random.default_rng(5)
    graph = scene.SceneGraph((scene.ObjectSpec("circle", "red"), scene.ObjectSpec("square", "blue")))
    placed = layout.sample_layout(graph, CANVAS, rng)
    metadata = prompts.to_metadata(graph, "color_attr")

    good = trajectories.critiques_from_rollout(metadata, _rollout(graph, placed, None))
    assert [record["kind"] for record in good] == ["correct", "correct"]
    assert good[-1]["ends"]
    assert not good[0]["ends"]
    assert _texts(good[-1])[-1] == grammar.MATCHES_PROMPT

    bad = trajectories.critiques_from_rollout(metadata, _rollout(graph, placed, 1))
    assert [record["kind"] for record in bad] == ["correct", "wrong"]
    wrong_text = next(s for s in bad[-1]["segments"] if s["type"] == "text" and s["parts"][-1][1] == "refine")
    assert "the square should be blue , not black" in wrong_text["parts"][0][0]
    corrected = trajectories.decode_image(_images(bad[-1])[-1], CANVAS)
    assert judge.judge(corrected, metadata).correct


def test_tokenizer_round_trips_records(multi_turn_records, conflict_records, alignment_records):
    config = load_config("configs/shapes_tiny.py")
    words = tokenizer.build_tokenizer(config)
    assert words.vocab_size <= config.model.llm.vocab_size
    for record in multi_turn_records + conflict_records + alignment_records:
        for text in _texts(record):
            ids = words.encode(text)
            assert words.decode(ids) == text


def test_tokenizer_rejects_small_vocab():
    config = load_config("configs/shapes_tiny.py", ["model.llm.vocab_size=32"])
    with pytest.raises(UserError, match="model.llm.vocab_size"):
        tokenizer.build_tokenizer(config)


def test_tokenizer_rejects_unknown_word():
    words = tokenizer.WordTokenizer(tokenizer.world_words())
    with pytest.raises(UserError, match="'giraffe'"):
        words.encode("a photo of a giraffe")


def test_make_record_is_deterministic_and_split_aware():
    config = load_config("configs/shapes_tiny.py")
    first = trajectories.make_record(config.data, CANVAS, "train", 3)
    assert first == trajectories.make_record(config.data, CANVAS, "train", 3)
    assert first != trajectories.make_record(config.data, CANVAS, "validation", 3)
    for index in range(10):
        record = trajectories.make_record(config.data, CANVAS, "heldout", index)
        assert record["metadata"]["split"] == "heldout"
