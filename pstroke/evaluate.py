"""Score a folder of generated images in GenEval's layout with the exact Shapes-world evaluator.

    python -m pstroke.evaluate --images DIR [--metadata FILE]

`DIR/<5-digit index>/samples/*.png` are the images of one prompt, and its metadata is
`DIR/<index>/metadata.jsonl` or, with `--metadata`, line `<index>` (from 0) of FILE. FILE needs one
line per prompt folder, and where a folder has its own metadata.jsonl, both must give the same
prompt, so images are never scored against another run's prompts.

The command prints per-tag accuracies, the overall score (the plain mean of the per-tag accuracies,
as in GenEval) and the in-distribution and held-out scores, and writes them with every image's
verdict to `DIR/results.json`.
"""

import argparse
import json
import logging
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pstroke.cli_output import count_noun
from pstroke.errors import UserError, exit_on_user_error
from pstroke.world.benchmark import read_jsonl
from pstroke.world.judge import check_classes, judge
from pstroke.world.prompts import GENEVAL_TAGS, TAGS, parse_prompt

MIN_SIDE = 16
# Larger images are box-downscaled to this side first: the detector needs no more, and its cost
# grows with the pixel count.
MAX_SIDE = 256
SPLITS = ("in_distribution", "heldout")


def load_image(path: pathlib.Path) -> np.ndarray:
    """Load an image file as uint8 RGB [H, W, 3], downscaled to `MAX_SIDE` when larger.

    Raises:
      UserError: the file is not a readable image, is not square, or is smaller than `MIN_SIDE`.
    """
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"cannot read image {str(path)!r} ({error.__class__.__name__}); expected a PNG file")
    width, height = image.size
    if width != height:
        raise UserError(f"image {str(path)!r} is {width}x{height}; the evaluator needs square images, as rendered")
    if width < MIN_SIDE:
        raise UserError(f"image {str(path)!r} is {width}x{height}; the evaluator needs at least {MIN_SIDE}x{MIN_SIDE}")
    if width > MAX_SIDE:
        logging.warning("resizing %s from %dx%d to %dx%d before detection", path, width, height, MAX_SIDE, MAX_SIDE)
        image = image.resize((MAX_SIDE, MAX_SIDE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8)


def validate_metadata(metadata: dict, where: str) -> None:
    """Raise `UserError` (naming `where`) unless `metadata` is a Shapes-world GenEval object."""
    if metadata.get("tag") not in TAGS:
        raise UserError(f"{where}: unknown tag {metadata.get('tag')!r}; expected one of {', '.join(TAGS)}")
    if not isinstance(metadata.get("prompt"), str):
        raise UserError(f"{where}: missing 'prompt' string")
    try:
        check_classes(metadata)
        parse_prompt(metadata["prompt"])
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    except (KeyError, TypeError) as error:
        raise UserError(f"{where}: malformed clause ({error}); expected GenEval's include/exclude clauses") from None


def prompt_folders(images: pathlib.Path) -> list[pathlib.Path]:
    """Return the `<digits>` subfolders of `images`, sorted by index."""
    if images.exists() and not images.is_dir():
        raise UserError(f"invalid --images={str(images)!r}: it is a file, not a folder. Pass the folder that "
                        "contains the <index>/ prompt folders")
    if not images.is_dir():
        raise UserError(f"image folder not found: {str(images)!r}")
    folders = sorted((p for p in images.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not folders:
        raise UserError(f"no prompt folders (such as 00000/samples/0000.png) in {str(images)!r}")
    return folders


def read_folder_metadata(folder: pathlib.Path) -> tuple[dict, str]:
    """Return the one row of `folder/metadata.jsonl` and its `path:line` location.

    Raises:
      UserError: the file is missing or does not contain exactly one JSON line.
    """
    path = folder / "metadata.jsonl"
    if not path.is_file():
        raise UserError(f"missing {path}; write each prompt's metadata.jsonl or pass --metadata FILE")
    rows = read_jsonl(path)
    if len(rows) != 1:
        raise UserError(f"{path} has {len(rows)} JSON lines; expected exactly one")
    return rows[0], f"{path}:1"


def same_prompt(first: str, second: str) -> bool:
    """Return whether two prompts match after `pstroke.sample`'s normalization (strip, lower case)."""
    return first.strip().lower() == second.strip().lower()


def folder_metadata(folder: pathlib.Path, shared: list[dict] | None, shared_path: pathlib.Path | None) -> dict:
    """Return the metadata of one prompt folder, from `shared` (a metadata file's rows) if given.

    Raises:
      UserError: the folder has no row, or its own metadata.jsonl gives another prompt than `shared`.
    """
    if shared is None:
        metadata, where = read_folder_metadata(folder)
        validate_metadata(metadata, where)
        return metadata

    index = int(folder.name)
    if index >= len(shared):
        raise UserError(f"folder {folder.name} has no line in {shared_path} ({len(shared)} lines)")
    metadata, where = shared[index], f"{shared_path}:{index + 1}"
    validate_metadata(metadata, where)
    if (folder / "metadata.jsonl").is_file():
        own, own_where = read_folder_metadata(folder)
        if not same_prompt(str(own.get("prompt")), metadata["prompt"]):
            raise UserError(f"folder {str(folder)!r} was sampled for {own.get('prompt')!r} ({own_where}) but "
                            f"{where} gives {metadata['prompt']!r}; pass the --metadata file these images were "
                            "sampled from, or leave --metadata out to use each folder's metadata.jsonl")
    return metadata


def check_row_count(folders: list[pathlib.Path], shared: list[dict], shared_path: pathlib.Path) -> None:
    """Raise `UserError` unless the metadata file has one row per prompt folder."""
    if len(folders) != len(shared):
        raise UserError(f"{count_noun(len(folders), 'prompt folder')} in {str(folders[0].parent)!r} but "
                        f"{count_noun(len(shared), 'line')} in {str(shared_path)!r}; pass the --metadata file "
                        "these images were sampled from")


def evaluate_folder(images: pathlib.Path, metadata_file: pathlib.Path | None = None, progress: bool = True) -> list[dict]:
    """Judge every image under `images`; return one record per image (folder, sample, tag,
    prompt, split, correct, reason). All metadata is validated before any image is judged."""
    shared = read_jsonl(metadata_file) if metadata_file is not None else None
    folders = prompt_folders(images)
    if shared is not None:
        check_row_count(folders, shared, metadata_file)
    metadata = {folder: folder_metadata(folder, shared, metadata_file) for folder in folders}

    records = []
    for folder in tqdm(folders, desc="evaluate", unit="prompt", disable=not progress):
        samples = sorted((folder / "samples").glob("*.png"))
        if not samples:
            raise UserError(f"no images in {folder / 'samples'}; expected files such as 0000.png")
        row = metadata[folder]
        for sample in samples:
            verdict = judge(load_image(sample), row)
            records.append(
                {
                    "folder": folder.name,
                    "sample": sample.name,
                    "tag": row["tag"],
                    "prompt": row["prompt"],
                    "split": row.get("split", "in_distribution"),
                    "correct": verdict.correct,
                    "reason": verdict.reason,
                }
            )
    return records


def _per_tag(records: list[dict]) -> dict[str, float]:
    tags = [tag for tag in TAGS if any(r["tag"] == tag for r in records)]
    return {tag: float(np.mean([r["correct"] for r in records if r["tag"] == tag])) for tag in tags}


def summarize(records: list[dict]) -> dict:
    """Return per-tag accuracies, `overall` (their plain mean), `geneval` (the mean over GenEval's
    six tags that are present), `geneval_tags` (those present tags) and the same per split
    ("in_distribution", "heldout")."""
    per_tag = _per_tag(records)
    geneval_tags = [tag for tag in GENEVAL_TAGS if tag in per_tag]
    summary = {
        "overall": float(np.mean(list(per_tag.values()))),
        "geneval": float(np.mean([per_tag[tag] for tag in geneval_tags])) if geneval_tags else None,
        "geneval_tags": geneval_tags,
        "per_tag": per_tag,
        "images": len(records),
    }
    for split in SPLITS:
        split_tags = _per_tag([r for r in records if r["split"] == split])
        summary[split] = {
            "overall": float(np.mean(list(split_tags.values()))) if split_tags else None,
            "per_tag": split_tags,
            "images": sum(r["split"] == split for r in records),
        }
    return summary


def geneval_label(tags: Sequence[str]) -> str:
    """Return the label of the mean over the GenEval tags `tags`.

    Only a mean over all six tags is GenEval's score, so a partial mean names the tags it covers.
    """
    if set(tags) == set(GENEVAL_TAGS):
        return "GenEval six-tag score"
    noun = "tag" if len(tags) == 1 else "tags"
    return f"mean over {len(tags)} GenEval {noun} ({', '.join(tags)})"


def format_table(summary: dict, records: list[dict]) -> str:
    """Return the human-readable score table."""

    def cell(value: float | None) -> str:
        return f"{value:8.3f}" if value is not None else f"{'-':>8}"

    lines = [f"{'tag':<14} {'images':>6} {'accuracy':>8} {'in-dist':>8} {'held-out':>8}"]
    for tag, accuracy in summary["per_tag"].items():
        count = sum(r["tag"] == tag for r in records)
        in_dist = summary["in_distribution"]["per_tag"].get(tag)
        heldout = summary["heldout"]["per_tag"].get(tag)
        lines.append(f"{tag:<14} {count:6d} {cell(accuracy)} {cell(in_dist)} {cell(heldout)}")
    lines.append(f"overall (mean of per-tag accuracies): {summary['overall']:.3f}")
    if summary["geneval"] is not None:
        lines.append(f"{geneval_label(summary['geneval_tags'])}: {summary['geneval']:.3f}")
    lines.append(
        f"in-distribution: {cell(summary['in_distribution']['overall']).strip()}"
        f"   held-out: {cell(summary['heldout']['overall']).strip()}"
    )
    return "\n".join(lines)


def evaluate(images: pathlib.Path, metadata_file: pathlib.Path | None = None, progress: bool = True) -> dict:
    """Judge the folder, write `images/results.json` and return its content."""
    records = evaluate_folder(images, metadata_file, progress)
    results = summarize(records)
    results["records"] = records
    (images / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    """Score a GenEval-layout folder and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=pathlib.Path, required=True, help="folder of <index>/samples/*.png")
    parser.add_argument("--metadata", type=pathlib.Path, default=None, help="JSONL file; line i is prompt folder i")
    args = parser.parse_args(argv)

    results = evaluate(args.images, args.metadata)
    print(format_table(results, results["records"]))
    print(f"wrote {args.images / 'results.json'}")


if __name__ == "__main__":
    main()
