"""The grain pipeline: packing, sharding, resumable iteration, global batches and the TFDS dataset."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from pstroke import batch as batch_format
from pstroke.config import load_config
from pstroke.data import pipeline, tfds_builder, trajectories
from pstroke.data.tokenizer import build_tokenizer
from pstroke.errors import UserError

SMALL = ["data.num_train=24", "data.num_validation=10", "data.num_heldout=6", "train.batch_size=4"]


def _config(*overrides):
    return load_config("configs/shapes_tiny.py", SMALL + list(overrides))


def _epoch(config, split, process_index=0, process_count=1):
    batches = list(pipeline.make_dataset(config, split, process_index, process_count))
    return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}


def _individual_totals(config, split, indices):
    words = build_tokenizer(config)
    totals = np.zeros(3)
    for index in indices:
        record = trajectories.make_record(config.data, config.world.canvas, split, index)
        sample = pipeline.record_to_sample(record, np.random.default_rng(0), words, config)
        totals += [sample["ce_weight"].sum(), sample["mse_weight"].sum(), len(sample["token_id"])]
    return totals


def _totals(rows):
    return np.array([rows["ce_weight"].sum(), rows["mse_weight"].sum(), (rows["sample_id"] > 0).sum()])


def test_packing_preserves_loss_weights():
    config = _config()
    rows = _epoch(config, "validation")
    np.testing.assert_allclose(_totals(rows), _individual_totals(config, "validation", range(10)))
    samples = sum(int(row.max()) for row in rows["sample_id"])
    assert samples == 10


def test_padding_has_no_loss():
    rows = _epoch(_config(), "validation")
    padding = rows["sample_id"] == 0
    assert padding.any()
    assert not rows["ce_weight"][padding].any()
    assert not rows["mse_weight"][padding].any()
    assert not rows["latent"][padding].any()


def test_split_ids_grow_along_row():
    rows = _epoch(_config(), "validation")
    assert (np.diff(rows["split_id"], axis=1) >= 0).all()
    for row in rows["sample_id"]:
        real = row[row > 0]
        assert (np.diff(real) >= 0).all()


def test_process_shards_cover_split():
    config = _config("train.batch_size=2")
    whole = _totals(_epoch(config, "validation"))
    first, second = (_totals(_epoch(config, "validation", index, 2)) for index in range(2))
    np.testing.assert_allclose(first + second, whole)
    np.testing.assert_allclose(first, _individual_totals(config, "validation", range(0, 10, 2)))


def test_resumed_iterator_repeats_batches():
    config = _config()
    iterator = pipeline.make_iterator(config, "train")
    for _ in range(2):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]

    resumed = pipeline.make_iterator(config, "train")
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_train_split_repeats_in_new_order():
    config = _config("data.num_train=6", "train.batch_size=1", "data.num_packing_bins=1")
    rows = [next(iterator) for iterator in [pipeline.make_iterator(config, "train")] for _ in range(12)]
    first_epoch = [row["token_id"][0, :120].tobytes() for row in rows[:4]]
    later = [row["token_id"][0, :120].tobytes() for row in rows[4:]]
    assert len(rows) == 12  # the train split never runs out
    assert later[:4] != first_epoch


def test_global_batch_on_mesh():
    config = _config("train.batch_size=8")
    mesh = jax.make_mesh((4, 2, 1), ("data", "fsdp", "tensor"))
    batch = next(pipeline.make_iterator(config, "validation", mesh))
    local = next(pipeline.make_iterator(config, "validation"))
    assert batch["token_id"].shape == (8, config.data.seq_len)
    assert batch["latent"].shape == (8, config.data.seq_len, 48)
    assert batch["token_id"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    assert len(batch["token_id"].addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(batch["position"]), local["position"])


def test_global_batch_rejects_uneven_rows():
    config = _config("train.batch_size=4")
    mesh = jax.make_mesh((8, 1, 1), ("data", "fsdp", "tensor"))
    with pytest.raises(UserError, match="train.batch_size"):
        next(pipeline.make_iterator(config, "validation", mesh))


def test_bad_inputs_rejected():
    with pytest.raises(UserError, match="unknown split"):
        pipeline.make_dataset(_config(), "test", 0, 1)
    with pytest.raises(UserError, match="batch_size"):
        pipeline.make_dataset(_config("train.batch_size=3"), "train", 0, 2)
    with pytest.raises(UserError, match="data.seq_len"):
        next(iter(pipeline.make_dataset(_config("data.seq_len=128"), "validation", 0, 1)))


def test_tfds_dataset_matches_in_memory(tmp_path):
    config = _config("data.num_train=4", "data.num_validation=4", "data.num_heldout=4")
    info = tfds_builder.build(config, str(tmp_path))
    summary = info.metadata["validation"]
    assert summary["samples"] == 4
    assert sum(summary["samples_per_subset"].values()) == 4
    assert 1 <= summary["mean_images_per_sample"] <= summary["max_images_per_sample"] <= config.data.max_images

    in_memory = next(pipeline.make_iterator(config, "validation"))
    config.data.dir = str(tmp_path)
    from_disk = next(pipeline.make_iterator(config, "validation"))
    for name in in_memory:
        np.testing.assert_array_equal(from_disk[name], in_memory[name], err_msg=name)
    heldout = list(pipeline.record_source(config, "heldout"))
    assert [record["metadata"]["split"] for record in heldout] == ["heldout"] * 4


def test_t2i_fraction_selects_format():
    rows = _epoch(_config("data.t2i_fraction=1.0"), "validation")
    real = rows["sample_id"] > 0
    assert not (rows["stage"][real] == batch_format.STAGE_INDEX["plan"]).any()
    assert not (rows["split_mode"][real] == batch_format.MODE_FULL).any()
    samples = sum(int(row.max()) for row in rows["sample_id"])
    noise_splits = sum(len(np.unique(row_split[row_mode == batch_format.MODE_NOISE]))
                       for row_split, row_mode in zip(rows["split_id"], rows["split_mode"]))
    assert noise_splits == samples  # one generated image per sample

    process = _epoch(_config("data.t2i_fraction=0.0"), "validation")
    assert (process["stage"] == batch_format.STAGE_INDEX["plan"]).any()


def test_build_data_command(tmp_path):
    overrides = ["--config.data.num_train=3", "--config.data.num_validation=2", "--config.data.num_heldout=2"]
    done = subprocess.run([sys.executable, "-m", "pstroke.build_data", "--config=configs/shapes_tiny.py",
                           f"--out={tmp_path}", *overrides], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "train: 3 samples" in done.stdout
    assert "(paper: mean 3.51, max 5)" in done.stdout
    assert (tmp_path / "shapes_trajectories" / "1.0.0" / "metadata.json").is_file()

    missing = subprocess.run([sys.executable, "-m", "pstroke.build_data", "--config=configs/shapes_tiny.py"],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: missing --out")
