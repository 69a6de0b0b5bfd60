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
import pathlib

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from pstroke.data import trajectories
from pstroke.errors import UserError

BUILDER_NAME = "shapes_trajectories"


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
        return {split: self._generate_examples(split, data[size])
                for split, size in (("train", "num_train"), ("validation", "num_validation"), ("heldout", "num_heldout"))}

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


def build(config, out_dir: str) -> tfds.core.DatasetInfo:
    """Write the dataset of `config` under `out_dir` and return its info (with the summary)."""
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
