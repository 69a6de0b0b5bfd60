"""The evaluator's score table: which label the mean over GenEval's tags gets."""

from pstroke.evaluate import format_table, summarize
from pstroke.world.prompts import GENEVAL_TAGS, TAGS


def _records(tags_correct: dict[str, list[bool]]) -> list[dict]:
    """Return evaluator records with the given verdicts per tag, all in distribution."""
    return [{"folder": f"{index:05d}", "sample": f"{sample:04d}.png", "tag": tag, "prompt": "a photo of a circle",
             "split": "in_distribution", "correct": correct, "reason": "test verdict"}
            for index, (tag, verdicts) in enumerate(tags_correct.items())
            for sample, correct in enumerate(verdicts)]


def test_partial_tags_label_names_them():
    records = _records({"colors": [True, False], "position": [True, True]})
    table = format_table(summarize(records), records)

    assert "six-tag" not in table
    assert "mean over 2 GenEval tags (colors, position): 0.750" in table.splitlines()


def test_single_tag_label_is_singular():
    records = _records({"counting": [False]})
    table = format_table(summarize(records), records)

    assert "mean over 1 GenEval tag (counting): 0.000" in table.splitlines()


def test_all_six_tags_label_geneval_score():
    verdicts = {tag: [True] for tag in TAGS}
    verdicts[GENEVAL_TAGS[0]] = [False]
    records = _records(verdicts)
    summary = summarize(records)
    table = format_table(summary, records)

    assert summary["geneval_tags"] == list(GENEVAL_TAGS)
    assert f"GenEval six-tag score: {5 / 6:.3f}" in table.splitlines()
    assert "mean over" not in table


def test_no_geneval_tag_prints_no_label():
    extra = [tag for tag in TAGS if tag not in GENEVAL_TAGS]
    records = _records({extra[0]: [True]})
    summary = summarize(records)

    assert summary["geneval"] is None
    assert "GenEval" not in format_table(summary, records)
