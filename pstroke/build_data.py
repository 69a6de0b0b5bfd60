"""Command line: `python -m pstroke.build_data --config=configs/shapes_tiny.py --out=DIR`.

Writes the Shapes trajectory dataset (TFDS, ArrayRecord files) under DIR/shapes_trajectories/
VERSION with train, validation and heldout splits, shows a progress bar per split, and prints a
summary per split: samples per subset, images per trajectory and tokens per sample. The same
summary is stored in the dataset's metadata.json, with the settings the records were built from. A
DIR that already contains a dataset built with the same settings is reused, and one built with other
settings is rejected. Train on it with `--config.data.dir=DIR`.
"""

import logging
from typing import Sequence

from absl import flags

from pstroke.config import define_config_flag, run_cli
from pstroke.errors import UserError

_CONFIG = define_config_flag()
_OUT = flags.DEFINE_string("out", None, "Folder to write the dataset into (created if missing).")

# Training-data statistics of the paper (Zhang et al. 2026, "Think in Strokes, Not Pixels").
PAPER_MEAN_IMAGES, PAPER_MAX_IMAGES = 3.51, 5


def format_summary(summaries: dict) -> str:
    """Return the printed summary of every split in `summaries` ({split: summary})."""
    lines = []
    for split, summary in summaries.items():
        subsets = ", ".join(f"{name} {count}" for name, count in sorted(summary["samples_per_subset"].items()))
        lines.append(f"{split}: {summary['samples']} samples ({subsets})")
        lines.append(f"  images per multi-turn trajectory: mean {summary['mean_images_per_multi_turn_trajectory']:.2f}, "
                     f"max {summary['max_images_per_multi_turn_trajectory']} "
                     f"(paper: mean {PAPER_MEAN_IMAGES}, max {PAPER_MAX_IMAGES})")
        lines.append(f"  images per sample: mean {summary['mean_images_per_sample']:.2f}, "
                     f"max {summary['max_images_per_sample']}")
        lines.append(f"  tokens per sample: mean {summary['mean_tokens_per_sample']:.1f}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {' '.join(argv[1:])!r}; pass settings as --config.a.b=value")
    if not _OUT.value:
        raise UserError("missing --out: pass the folder to write the dataset into, e.g. --out=data/shapes")
    logging.getLogger("absl").setLevel(logging.WARNING)

    from pstroke.data import tfds_builder  # imported after flag parsing: tensorflow_datasets is slow to load

    reused = tfds_builder.has_dataset(_OUT.value)
    info = tfds_builder.build(_CONFIG.value, _OUT.value)
    print(format_summary({split: info.metadata[split] for split in tfds_builder.SPLITS}))
    print(f"existing dataset reused: {info.data_dir}" if reused else f"dataset written to {info.data_dir}")


if __name__ == "__main__":
    run_cli(main)
