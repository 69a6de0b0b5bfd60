"""The input pipeline: records -> token sequences -> packed rows -> (global) batches.

grain reads records with random access, either from the TFDS ArrayRecord dataset written by
`python -m pstroke.build_data` (`config.data.dir`) or generated in memory from their index. Each
process reads its own shard (`jax.process_index()` of `jax.process_count()`), shuffles it with a
new order every epoch (train split only), renders and tokenizes each record, packs samples into
rows of `config.data.seq_len` tokens with grain's first-fit packing, and batches
`config.train.batch_size / process_count` rows. The iterator state (`get_state`/`set_state`)
restores the exact position, so a resumed run reads the same batches.
"""

import functools
import json

import grain
import grain.experimental
import jax
import numpy as np

from pstroke import batch as batch_format
from pstroke.data import grammar, sequence, trajectories
from pstroke.data.tokenizer import Tokenizer, build_tokenizer
from pstroke.errors import UserError

SPLIT_SIZES = {"train": "num_train", "validation": "num_validation", "heldout": "num_heldout"}
DATA_AXES = ("data", "fsdp")


def check_split(split: str) -> None:
    if split not in SPLIT_SIZES:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_SIZES)}")


def record_source(config, split: str) -> grain.MapDataset:
    """Return the records of `split` as a random-access dataset of dicts."""
    check_split(split)
    if config.data.dir:
        from pstroke.data import tfds_builder  # imports tensorflow_datasets only when a folder is read

        source = tfds_builder.data_source(config.data.dir, config.data.version, split)
        return grain.MapDataset.source(source).map(lambda example: json.loads(example["record"]))
    size = config.data[SPLIT_SIZES[split]]
    make = functools.partial(trajectories.make_record, config.data, config.world.canvas, split)
    return grain.MapDataset.range(size).map(make)


def record_segments(record: dict, single_step: bool = False) -> tuple[list[sequence.Segment], bool]:
    """Return the sequence segments of a record and whether the sample ends (not truncated).

    `single_step` gives the text-to-image format of the same sample: the bare prompt, then the
    prompt's full layout (`record["final"]`) as the only generated image, without a clean copy.
    """
    canvas = record["canvas"]
    if single_step:
        final = trajectories.decode_image({"objects": record["final"]}, canvas)
        return [sequence.text(record["prompt"], "prompt", loss=False, drop_group=batch_format.DROP_TEXT),
                sequence.ImageSegment(final, "draft_image", clean_copy=False)], True

    segments = []
    for segment in record["segments"]:
        if segment["type"] == "image":
            segments.append(sequence.ImageSegment(trajectories.decode_image(segment, canvas), segment["stage"]))
            continue
        parts = tuple((content, stage) for content, stage in segment["parts"])
        if parts[0][1] == "prompt":
            segments.append(sequence.TextSegment(parts, loss=False, drop_group=batch_format.DROP_TEXT))
        else:
            segments.append(sequence.TextSegment(parts))
    return segments, record["ends"]


def single_step_ready(record: dict) -> bool:
    """Return whether a record carries its prompt's full layout, the target of the single-step format.

    Self-sampled records have none and always stay in the process format.
    """
    return "final" in record


def record_to_sample(record: dict, rng: np.random.Generator, tokenizer: Tokenizer, config) -> dict[str, np.ndarray]:
    """Turn one record into per-token fields, in the single-step format with `t2i_fraction`."""
    single_step = single_step_ready(record) and rng.random() < config.data.t2i_fraction
    segments, ends = record_segments(record, single_step)
    sample = sequence.build_sample(segments, tokenizer, config.model, ends=ends)
    length = len(sample["token_id"])
    if length > config.data.seq_len:
        raise UserError(f"a {record['subset']} sample has {length} tokens but data.seq_len is "
                        f"{config.data.seq_len}; raise data.seq_len or lower data.max_images")
    return sample


def finish_row(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Turn grain's packed row into batch fields: `sample_id` from its segment ids, and `split_id`
    offset so that it grows along the row (padding gets one split after the last)."""
    sample_id = packed["token_id_segment_ids"].astype(np.int32)
    row = {name: packed[name] for name in sequence.SAMPLE_FIELDS}
    row["sample_id"] = sample_id

    split_id = row["split_id"].copy()
    offset = 0
    for sample in range(1, int(sample_id.max(initial=0)) + 1):
        inside = sample_id == sample
        split_id[inside] += offset
        offset += int(row["split_id"][inside].max(initial=-1)) + 1
    split_id[sample_id == 0] = offset
    row["split_id"] = split_id
    return row


def _pad_rows(rows: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
    """Append all-padding rows so that the batch has `count` rows (the last batch of an epoch)."""
    missing = count - len(rows["token_id"])
    if missing == 0:
        return rows
    length, latent_dim = rows["latent"].shape[1:]
    padding = batch_format.empty_batch(missing, length, latent_dim)
    padding["split_id"][:] = rows["split_id"].max() + 1
    return {name: np.concatenate([rows[name], padding[name]]) for name in rows}


def local_rows(config, process_count: int) -> int:
    """Return the rows of this process's batch: the global batch divided among processes."""
    rows, remainder = divmod(config.train.batch_size, process_count)
    if remainder or rows == 0:
        raise UserError(f"train.batch_size {config.train.batch_size} does not divide among "
                        f"{process_count} processes; use a multiple of {process_count}")
    return rows


def make_dataset(config, split: str, process_index: int | None = None,
                 process_count: int | None = None) -> grain.IterDataset:
    """Return this process's batches of `split` as a grain dataset of numpy dicts [rows, seq_len].

    The train split repeats forever in a new order each epoch. Other splits are read once in
    order, and padding rows fill up their last batch.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    rows = local_rows(config, process_count)
    tokenizer = build_tokenizer(config)
    training = split == "train"

    records = record_source(config, split)[process_index::process_count]
    if training:
        records = records.shuffle(seed=config.data.seed).repeat()
    samples = records.random_map(functools.partial(record_to_sample, tokenizer=tokenizer, config=config),
                                 seed=config.data.seed)

    stream = samples.to_iter_dataset()
    if config.data.worker_count > 0:
        stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.worker_count))
    lengths = {name: config.data.seq_len for name in sequence.SAMPLE_FIELDS}
    packed = grain.experimental.FirstFitPackIterDataset(
        stream, length_struct=lengths, num_packing_bins=config.data.num_packing_bins, shuffle_bins=False)
    batches = packed.map(finish_row).batch(rows, drop_remainder=training)
    return batches if training else batches.map(functools.partial(_pad_rows, count=rows))


def make_global_batch(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Assemble every process's rows into global arrays sharded on the mesh's data axes.

    Rows are split over the ('data', 'fsdp') axes; the token and feature dimensions are replicated.
    """
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXES))
    shards = int(np.prod([mesh.shape[axis] for axis in DATA_AXES]))
    global_rows = len(local_batch["token_id"]) * jax.process_count()
    if global_rows % shards:
        raise UserError(f"a global batch of {global_rows} rows does not split over the {shards} "
                        "devices of the mesh axes ('data', 'fsdp'); set train.batch_size to a multiple of it")
    return {name: jax.make_array_from_process_local_data(sharding, value) for name, value in local_batch.items()}


class BatchIterator:
    """Iterator over batches with a checkpointable position.

    Yields numpy dicts, or global `jax.Array` dicts when built with a mesh. `get_state` returns a
    JSON-serialisable dict; `set_state` moves a fresh iterator to that position.
    """

    def __init__(self, dataset: grain.IterDataset, mesh: jax.sharding.Mesh | None = None):
        self._iterator = iter(dataset)
        self._mesh = mesh

    def __iter__(self):
        return self

    def __next__(self):
        local_batch = next(self._iterator)
        return local_batch if self._mesh is None else make_global_batch(local_batch, self._mesh)

    def get_state(self) -> dict:
        return self._iterator.get_state()

    def set_state(self, state: dict) -> None:
        self._iterator.set_state(state)


def make_iterator(config, split: str, mesh: jax.sharding.Mesh | None = None) -> BatchIterator:
    """Return the batch iterator of `split` for this process (global arrays when `mesh` is given)."""
    return BatchIterator(make_dataset(config, split), mesh)


def prompt_tokens(prompt: str, tokenizer: Tokenizer, single_step: bool = False) -> list[int]:
    """Return the prompt segment's ids with its markers, as a process or single-step sample starts."""
    text = prompt if single_step else grammar.prompt_text(prompt)
    return [tokenizer.im_start_id] + tokenizer.encode(text) + [tokenizer.im_end_id]


def sample_length(record: dict, config) -> int:
    """Return the process-format token count of a record without rendering its images."""
    tokenizer = build_tokenizer(config)
    patch = config.model.latent_patch_size
    image_tokens = (config.world.canvas // patch) ** 2 + 2
    length = 0
    for segment in record["segments"]:
        if segment["type"] == "image":
            length += 2 * image_tokens
        else:
            length += 2 + sum(len(tokenizer.encode(content)) for content, _ in segment["parts"])
    return length
