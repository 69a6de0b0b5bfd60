"""Output-folder checks and counted nouns shared by the commands."""

import pytest

from pstroke.cli_output import check_output_folder, count_noun
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
