"""Prompt sources of `python -m pstroke.sample`, checked in-process: prompts, files, GenEval JSONL."""

import json

import numpy as np
import pytest

from pstroke.data.tokenizer import build_tokenizer
from pstroke.errors import UserError
from pstroke.rollout import sampling, testing


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(testing.tiny_config())


def test_unknown_words_all_named(tokenizer):
    with pytest.raises(UserError) as error:
        sampling.encode_prompt("a photo of a zebra near a red dragon", tokenizer, 40)
    message = str(error.value).split("Prompt words")[0]
    assert "dragon" in message
    assert "near" in message
    assert "zebra" in message
    assert "red," not in message


def test_unknown_words_list_prompt_words(tokenizer):
    from pstroke.world import prompts

    with pytest.raises(UserError) as error:
        sampling.encode_prompt("a photo of a zebra", tokenizer, 40)
    listed = str(error.value).split("Prompt words: ")[1].split(", ")
    assert listed == sorted(prompts.VOCABULARY)
    for planning_word in ("add", "swap", "remove", "canvas", "step-by-step"):
        assert planning_word in tokenizer.vocabulary
        assert planning_word not in listed


@pytest.mark.parametrize("prompt", ["", "   ", "\t"])
def test_empty_prompt_rejected(tokenizer, prompt):
    with pytest.raises(UserError, match="empty prompt"):
        sampling.encode_prompt(prompt, tokenizer, 40)


def test_prompt_budget_is_inclusive(tokenizer):
    ids = sampling.encode_prompt("a photo of a red circle", tokenizer, 40)

    assert sampling.encode_prompt("a photo of a red circle", tokenizer, len(ids)) == ids
    with pytest.raises(UserError, match=f"takes {len(ids)} tokens"):
        sampling.encode_prompt("a photo of a red circle", tokenizer, len(ids) - 1)


def test_prompts_file_skips_blank_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a photo of a red circle\n\n  a photo of a blue square  \n")

    assert sampling.read_prompts_file(path) == ["a photo of a red circle", "a photo of a blue square"]


def test_prompts_file_missing_or_empty(tmp_path):
    with pytest.raises(UserError, match="not found"):
        sampling.read_prompts_file(tmp_path / "missing.txt")

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="no prompts"):
        sampling.read_prompts_file(empty)


def test_geneval_metadata_read(tmp_path):
    entries = [{"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"},
               {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}],
                "prompt": "a photo of a red square"}]
    path = tmp_path / "metadata.jsonl"
    path.write_text("\n".join(json.dumps(entry) for entry in entries) + "\n\n")

    assert sampling.read_geneval_metadata(path) == entries


@pytest.mark.parametrize("content, fragment", [
    ("{not json}\n", "line 1"),
    ('{"tag": "colors"}\n', "no \"prompt\""),
    ("\n", "has no prompts"),
])
def test_geneval_metadata_errors_name_line(tmp_path, content, fragment):
    path = tmp_path / "metadata.jsonl"
    path.write_text(content)

    with pytest.raises(UserError, match=fragment):
        sampling.read_geneval_metadata(path)


@pytest.mark.parametrize("variant", ["process", "baseline"])
def test_prompt_segment_matches_training_samples(variant):
    from pstroke.config import load_config
    from pstroke.data import pipeline

    config = load_config(f"configs/shapes_tiny.py:{variant}")
    tokenizer = build_tokenizer(config)
    record = pipeline.record_source(config, "train")[0]
    sample = pipeline.record_to_sample(record, np.random.default_rng(0), tokenizer, config)
    first_end = list(sample["token_id"]).index(tokenizer.im_end_id)

    ids = sampling.encode_prompt(record["prompt"], tokenizer, 40, sampling.single_step_prompts(config))
    assert ids == [int(token) for token in sample["token_id"][:first_end + 1]]


def test_unknown_prompt_format_named(tokenizer):
    config = testing.tiny_config()
    config.sample.prompt_format = "one_shot"
    with pytest.raises(UserError, match="one_shot"):
        sampling.single_step_prompts(config)
