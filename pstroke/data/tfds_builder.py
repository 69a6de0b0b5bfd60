"""TFDS builder of Shapes trajectories, written as ArrayRecord files (no TensorFlow needed).

Storage choice: each example is one JSON record (`record`, a string) holding the trajectory's
text and, for every image, the objects it shows (shape, colour, centre, size). Images are rendered
on read: the renderer is exact and deterministic, a 32 px render costs well under a millisecond,
and a record stays about 1-2 KB instead of carrying up to six PNGs. Self-sampled images, which no
layout describes, are stored inline as base64 PNG in the same JSON.

NOTE: records store layouts, so a change to the renderer changes the pixels of an existing dataset
version; bump `VERSION` with any renderer change.
"""

import collections
import json
import logging
import pathlib

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from pstroke.data import trajectories
from pstroke.errors import UserError

BUILDER_NAME = "shapes_trajectories"
SPLIT_SIZES = (("train", "num_train"), ("validation", "num_validation"), ("heldout", "num_heldout"))
SPLITS = tuple(split for split, _ in SPLIT_SIZES)

# Config keys that decide the records (`trajectories.make_record` and the split sizes). The dataset's
# metadata stores their values under SETTINGS_KEY, so a later build into the same folder can tell
# whether the stored dataset is the one it would write.
RECORD_SETTINGS = (
    "data.seed", "data.num_train", "data.num_validation", "data.num_heldout", "data.multi_turn_weight",
    "data.conflict_weight", "data.alignment_weight", "data.conflict_wrong_fraction",
    "data.alignment_mismatch_fraction", "data.augment_fraction", "data.max_images", "world.canvas",
)
SETTINGS_KEY = "settings"

log = logging.getLogger(__name__)


class ShapesTrajectories(tfds.core.GeneratorBasedBuilder):
    """Process-driven trajectories of the Shapes world: train, validation and held-out splits."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Symbolic multi-turn, conflict-critique and alignment-critique trajectories."}

    def __init__(self, *, pstroke_config=None, **kwargs):
        self._pstroke_config = pstroke_config
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"record": tfds.features.Text()}),
            metadata=tfds.core.MetadataDict(),
            description="Plan-sketch-inspect-refine trajectories of the Shapes world, one JSON record each.",
            # Record i stays at position i, so the dataset and the in-memory path read the same order;
            # grain shuffles at read time.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        data = self._pstroke_config.data
        self.info.metadata[SETTINGS_KEY] = record_settings(self._pstroke_config)
        return {split: self._generate_examples(split, data[size]) for split, size in SPLIT_SIZES}

    def _generate_examples(self, split: str, size: int):
        from pstroke.data import pipeline  # the summary needs token counts

        config = self._pstroke_config
        stats = collections.defaultdict(list)
        for index in tqdm.tqdm(range(size), desc=f"{split} trajectories", unit="sample"):
            record = trajectories.make_record(config.data, config.world.canvas, split, index)
            stats["subset"].append(record["subset"])
            stats["images"].append(trajectories.image_count(record))
            stats["multi_turn_images"] += [stats["images"][-1]] if record["subset"] == "multi_turn" else []
            stats["tokens"].append(pipeline.sample_length(record, config))
            yield index, {"record": json.dumps(record)}
        self.info.metadata[split] = summarize(stats)


def summarize(stats: dict[str, list]) -> dict:
    """Return the dataset summary of one split from per-sample statistics."""
    multi_turn = stats["multi_turn_images"] or [0]
    return {
        "samples": len(stats["subset"]),
        "samples_per_subset": dict(collections.Counter(stats["subset"])),
        "mean_images_per_multi_turn_trajectory": float(np.mean(multi_turn)),
        "max_images_per_multi_turn_trajectory": int(np.max(multi_turn)),
        "mean_images_per_sample": float(np.mean(stats["images"])),
        "max_images_per_sample": int(np.max(stats["images"])),
        "mean_tokens_per_sample": float(np.mean(stats["tokens"])),
    }


def record_settings(config) -> dict:
    """Return the value of every `RECORD_SETTINGS` key in `config`."""
    settings = {}
    for key in RECORD_SETTINGS:
        section, name = key.split(".")
        settings[key] = config[section][name]
    return settings


def check_split_sizes(data_config) -> None:
    """Raise `UserError` unless every split gets at least one sample."""
    for split, size in SPLIT_SIZES:
        if data_config[size] < 1:
            raise UserError(f"invalid data.{size}={data_config[size]}: the {split} split needs at least one "
                            f"sample; pass --config.data.{size}=1 or more")


def dataset_folder(out_dir: str) -> pathlib.Path:
    """Return the folder that `build` writes the current dataset version into."""
    return pathlib.Path(out_dir).expanduser() / BUILDER_NAME / str(ShapesTrajectories.VERSION)


def has_dataset(out_dir: str) -> bool:
    """Return whether `out_dir` contains a finished dataset of the current version."""
    return (dataset_folder(out_dir) / "dataset_info.json").is_file()


def check_existing_dataset(config, out_dir: str) -> None:
    """Raise `UserError` if the dataset in `out_dir` was built with other `RECORD_SETTINGS` values.

    A dataset written before the settings were stored is compared by its split sizes alone.
    """
    folder = dataset_folder(out_dir)
    stored = ShapesTrajectories(data_dir=out_dir, file_format="array_record").info
    expected = record_settings(config)
    if SETTINGS_KEY in stored.metadata:
        found = dict(stored.metadata[SETTINGS_KEY])
    else:
        log.warning("%s does not store its build settings; comparing its split sizes only", folder)
        expected = {f"data.{size}": config.data[size] for _, size in SPLIT_SIZES}
        found = {f"data.{size}": stored.splits[split].num_examples if split in stored.splits else None
                 for split, size in SPLIT_SIZES}
    differences = [f"{key}={found.get(key)!r} (this config: {value!r})"
                   for key, value in expected.items() if found.get(key) != value]
    if differences:
        raise UserError(f"--out={out_dir!r} already contains a Shapes dataset built with {', '.join(differences)}; "
                        f"pass a new --out, or delete {str(folder)!r} to rebuild it there")


def build(config, out_dir: str) -> tfds.core.DatasetInfo:
    """Write the dataset of `config` under `out_dir` and return its info (with the summary).

    A dataset already in `out_dir` is reused when it was built with the same `RECORD_SETTINGS`.

    Raises:
      UserError: a split size is below 1, or `out_dir` contains a dataset built with other settings.
    """
    check_split_sizes(config.data)
    if has_dataset(out_dir):
        check_existing_dataset(config, out_dir)
        log.info("reusing the existing dataset in %s, built with the same settings", dataset_folder(out_dir))
    builder = ShapesTrajectories(pstroke_config=config, data_dir=out_dir, file_format="array_record")
    builder.download_and_prepare()
    return builder.info


def data_source(data_dir: str, version: str, split: str):
    """Return a random-access source of one split of a written dataset.

    Raises:
      UserError: `data_dir` contains no dataset of this `version` (as written by build_data --out).
    """
    folder = pathlib.Path(data_dir).expanduser() / ShapesTrajectories.name / version
    if not (folder / "dataset_info.json").is_file():
        raise UserError(f"no Shapes dataset of version {version} in data.dir={data_dir!r} (expected "
                        f"{str(folder)!r}); pass the folder given to `python -m pstroke.build_data --out`, "
                        "or build it there first")
    builder = ShapesTrajectories(data_dir=data_dir, version=version, file_format="array_record")
    return builder.as_data_source(split=split)
