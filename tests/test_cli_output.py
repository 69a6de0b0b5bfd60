"""Output-folder checks and counted nouns shared by the commands."""

import pytest

from pstroke.cli_output import check_no_earlier_run, check_output_folder, count_noun
from pstroke.errors import UserError


def test_count_noun_singular_and_plural():
    assert count_noun(1, "prompt") == "1 prompt"
    assert count_noun(0, "prompt") == "0 prompts"
    assert count_noun(8, "device") == "8 devices"


def test_output_folder_created(tmp_path):
    path = tmp_path / "a" / "b"
    assert check_output_folder(path, "--out") == path
    assert path.is_dir()


def test_output_folder_file_rejected(tmp_path):
    file = tmp_path / "file.txt"
    file.write_text("keep")
    with pytest.raises(UserError, match="it is a file, not a folder"):
        check_output_folder(file, "--out")
    with pytest.raises(UserError, match="file.txt' is a file, not a folder"):
        check_output_folder(file / "below", "--out")
    assert file.read_text() == "keep"


def test_earlier_run_rejected(tmp_path):
    for index in range(5):
        (tmp_path / f"{index:05d}").mkdir()
    with pytest.raises(UserError) as error:
        check_no_earlier_run(tmp_path, "--outdir")
    message = str(error.value)
    assert f"--outdir={str(tmp_path)!r}" in message
    assert "5 prompt folders (00000, 00001, 00002, ...)" in message
    assert "pass a new --outdir" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{index:05d}" for index in range(5)]


def test_earlier_results_rejected(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(UserError, match="earlier run's results.json;"):
        check_no_earlier_run(tmp_path, "--outdir")


def test_folder_without_earlier_run_accepted(tmp_path):
    check_no_earlier_run(tmp_path / "missing", "--outdir")
    (tmp_path / "notes").mkdir()
    (tmp_path / "00000.txt").write_text("not a prompt folder")
    check_no_earlier_run(tmp_path, "--outdir")
