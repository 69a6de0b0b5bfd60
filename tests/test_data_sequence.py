"""Per-token sequence fields of trajectories: splits, RoPE ids, CE labels, stages and masks."""

import numpy as np
import pytest

from pstroke import batch as batch_format
from pstroke.config import load_config
from pstroke.data import pipeline, sequence, tokenizer, trajectories

STAGE = batch_format.STAGE_INDEX


@pytest.fixture(scope="module")
def config():
    return load_config("configs/shapes_tiny.py")


@pytest.fixture(scope="module")
def words(config):
    return tokenizer.build_tokenizer(config)


def _record(config, subset: str, kind: str | None = None, ends: bool | None = None) -> dict:
    for index in range(400):
        record = trajectories.make_record(config.data, config.world.canvas, "train", index)
        if record["subset"] == subset and kind in (None, record["kind"]) and ends in (None, record["ends"]):
            return record
    raise AssertionError(f"no {subset} {kind} record in 400 indices")


def _sample(config, words, record, single_step=False):
    segments, ends = pipeline.record_segments(record, single_step)
    return sequence.build_sample(segments, words, config.model, ends=ends)


def _splits(sample):
    """Return (start, stop) token ranges of each split."""
    ids = sample["split_id"]
    starts = np.flatnonzero(np.diff(ids, prepend=-1))
    return list(zip(starts, list(starts[1:]) + [len(ids)]))


def test_text_split_labels(config, words):
    sample = _sample(config, words, _record(config, "multi_turn"))
    for start, stop in _splits(sample):
        if sample["split_mode"][start] != batch_format.MODE_CAUSAL:
            continue
        tokens = sample["token_id"][start:stop]
        assert tokens[0] == words.im_start_id
        assert tokens[-1] == words.im_end_id
        labels, weights = sample["ce_label"][start:stop - 1], sample["ce_weight"][start:stop - 1]
        if sample["stage"][start] == STAGE["prompt"]:
            assert not weights.any()
            assert (sample["drop_group"][start:stop] == batch_format.DROP_TEXT).all()
        else:
            np.testing.assert_array_equal(labels, tokens[1:])
            assert (weights == 1).all()


def test_switch_labels(config, words):
    sample = _sample(config, words, _record(config, "multi_turn"))
    splits = _splits(sample)
    for number, (start, stop) in enumerate(splits):
        last = stop - 1
        mode = sample["split_mode"][start]
        if mode == batch_format.MODE_NOISE:
            assert sample["ce_weight"][start:stop].sum() == 0
            continue
        assert sample["ce_weight"][last] == 1
        if number == len(splits) - 1:
            assert sample["ce_label"][last] == words.end_of_text_id
            assert mode == batch_format.MODE_CAUSAL  # the final inspection ends the sequence
            continue
        following = sample["split_mode"][splits[number + 1][0]]
        expected = words.vision_start_id if following == batch_format.MODE_NOISE else words.im_start_id
        assert sample["ce_label"][last] == expected, (number, mode, following)


def test_truncated_sample_has_no_final_switch(config, words):
    sample = _sample(config, words, _record(config, "conflict_critique", "correct", ends=False))
    assert sample["ce_weight"][-1] == 0
    assert sample["token_id"][-1] == words.im_end_id


def test_image_noise_then_clean_copy(config, words):
    sample = _sample(config, words, _record(config, "alignment_critique", "mismatch"))
    splits = _splits(sample)
    noise = [i for i, (start, _) in enumerate(splits) if sample["split_mode"][start] == batch_format.MODE_NOISE]
    assert len(noise) == trajectories.image_count(_record(config, "alignment_critique", "mismatch"))
    tokens_per_image = (config.world.canvas // config.model.latent_patch_size) ** 2
    for i in noise:
        (start, stop), (clean_start, clean_stop) = splits[i], splits[i + 1]
        assert stop - start == tokens_per_image + 2
        assert sample["split_mode"][clean_start] == batch_format.MODE_FULL
        np.testing.assert_array_equal(sample["latent"][start:stop], sample["latent"][clean_start:clean_stop])
        np.testing.assert_array_equal(sample["expert"][start:stop], [0] + [1] * tokens_per_image + [0])
        np.testing.assert_array_equal(sample["kind"][start + 1:stop - 1], batch_format.KIND_LATENT)
        np.testing.assert_array_equal(sample["mse_weight"][start:stop], [0] + [1] * tokens_per_image + [0])
        assert not sample["mse_weight"][clean_start:clean_stop].any()
        assert not sample["timestep"][clean_start:clean_stop].any()
        assert (sample["drop_group"][clean_start:clean_stop] == batch_format.DROP_IMAGE).all()
        assert (sample["drop_group"][start:stop] == batch_format.DROP_NONE).all()
        assert sample["token_id"][start] == words.vision_start_id
        assert sample["token_id"][stop - 1] == words.vision_end_id


def test_latent_layout_matches_pixels(config, words):
    record = _record(config, "multi_turn")
    sample = _sample(config, words, record)
    image = trajectories.decode_image(next(s for s in record["segments"] if s["type"] == "image"), config.world.canvas)
    patch = config.model.latent_patch_size
    first = np.flatnonzero(sample["kind"] == batch_format.KIND_LATENT)[:2]
    expected = image[:patch, :patch].astype(np.float32) / 127.5 - 1.0  # patch (0, 0) in (row, col, channel) order
    np.testing.assert_allclose(sample["latent"][first[0]], expected.reshape(-1), atol=1e-6)
    np.testing.assert_allclose(sample["latent"][first[1]], (image[:patch, patch:2 * patch] / 127.5 - 1.0).reshape(-1), atol=1e-6)
    assert sample["latent_pos"][first[1]] == 1
    grid = config.world.canvas // patch
    last = np.flatnonzero(sample["kind"] == batch_format.KIND_LATENT)[grid * grid - 1]
    assert sample["latent_pos"][last] == (grid - 1) * config.model.max_latent_size + grid - 1


def test_rope_positions(config, words):
    sample = _sample(config, words, _record(config, "conflict_critique", "wrong"))
    expected_next = 0
    for start, stop in _splits(sample):
        mode = sample["split_mode"][start]
        positions = sample["position"][start:stop]
        if mode == batch_format.MODE_CAUSAL:
            np.testing.assert_array_equal(positions, expected_next + np.arange(stop - start))
            expected_next += stop - start
        else:
            assert (positions == expected_next).all()
            if mode == batch_format.MODE_FULL:
                expected_next += 1


def test_stage_tags(config, words):
    record = _record(config, "conflict_critique", "wrong")
    sample = _sample(config, words, record)
    stages = set(sample["stage"].tolist())
    assert stages == {STAGE[name] for name in ("prompt", "plan", "inspect", "refine", "draft_image", "refined_image")}
    refine_tokens = sample["token_id"][sample["stage"] == STAGE["refine"]]
    refine_text = words.decode(refine_tokens).removesuffix(f" {tokenizer.IM_END}")
    assert refine_text.startswith("<refine> ")
    assert refine_text.endswith(" </refine>")


def test_single_step_format(config, words):
    record = _record(config, "multi_turn")
    sample = _sample(config, words, record, single_step=True)
    splits = _splits(sample)
    assert len(splits) == 2
    prompt_end = splits[0][1] - 1
    assert words.decode(sample["token_id"][1:prompt_end]) == record["prompt"]
    assert sample["ce_label"][prompt_end] == words.vision_start_id
    assert sample["split_mode"][splits[1][0]] == batch_format.MODE_NOISE
    process = _sample(config, words, record)
    last_noise = np.flatnonzero(process["split_mode"] == batch_format.MODE_NOISE)[-1]
    np.testing.assert_array_equal(sample["latent"][splits[1][0]:splits[1][1]],
                                  process["latent"][last_noise - len(sample["latent"]) + splits[1][0] + 1:last_noise + 1])


@pytest.fixture(scope="module")
def packed_rows(config):
    small = load_config("configs/shapes_tiny.py", ["data.num_validation=6", "train.batch_size=2"])
    return next(iter(pipeline.make_dataset(small, "validation", 0, 1)))


def test_mask_rules(packed_rows):
    assert packed_rows["sample_id"].max() >= 2  # some row packs several samples
    for row in range(len(packed_rows["sample_id"])):
        sample_id, split_id, mode = (packed_rows[name][row] for name in ("sample_id", "split_id", "split_mode"))
        allowed = batch_format.attention_allowed(sample_id, split_id, mode)
        real = sample_id > 0
        same_sample = sample_id[:, None] == sample_id[None, :]
        assert not (allowed & ~same_sample).any()

        same_split = split_id[:, None] == split_id[None, :]
        noise_key = (mode == batch_format.MODE_NOISE)[None, :]
        assert not (allowed & noise_key & ~same_split).any()

        later_query = split_id[:, None] > split_id[None, :]
        clean_key = (mode == batch_format.MODE_FULL)[None, :]
        assert (allowed | ~(clean_key & later_query & same_sample & real[:, None])).all()

        index = np.arange(len(sample_id))
        for split in np.unique(split_id[real]):
            inside = np.flatnonzero(split_id == split)
            block = allowed[np.ix_(inside, inside)]
            if mode[inside[0]] == batch_format.MODE_CAUSAL:
                np.testing.assert_array_equal(block, index[inside][None, :] <= index[inside][:, None])
            else:
                assert block.all()


def test_positions_restart_per_sample(packed_rows):
    for row in range(len(packed_rows["sample_id"])):
        sample_id = packed_rows["sample_id"][row]
        for sample in range(1, sample_id.max() + 1):
            first = np.flatnonzero(sample_id == sample)[0]
            assert packed_rows["position"][row][first] == 0
