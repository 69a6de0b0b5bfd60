"""notebooks/quickstart.ipynb: valid nbformat 4 JSON whose code cells are valid Python."""

import ast
import json
import pathlib

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


def _cells() -> list[dict]:
    return json.loads(NOTEBOOK.read_text())["cells"]


def test_notebook_is_nbformat4():
    notebook = json.loads(NOTEBOOK.read_text())

    assert notebook["nbformat"] == 4
    assert notebook["metadata"]["kernelspec"]["language"] == "python"
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == []
            assert cell["execution_count"] is None


def test_notebook_code_cells_parse():
    sources = ["".join(cell["source"]) for cell in _cells() if cell["cell_type"] == "code"]

    assert len(sources) >= 5
    for source in sources:
        ast.parse(source)


def test_notebook_installs_with_constraints():
    install = "".join(next(cell for cell in _cells() if cell["cell_type"] == "code")["source"])

    assert "constraints.txt" in install
    assert '"-e"' in install
