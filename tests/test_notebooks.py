"""Every notebook in notebooks/ runs top to bottom in a real kernel, headless (nbclient)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_errors(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "2024-11-03-01:00-0500" in text
    assert "COMPLETED_SUCCESS" in text and "ValueError: bad input for 2024-03-10" in text
    if path.name == "quickstart.ipynb":  # results, debugging, retry from failure, stale partitions
        assert "debugged: bad orders on 2024-03-10" in text and "extract       REUSED" in text
        assert "'STALE': 5" in text and "2024-03-12  2024-03-12      10     11.0" in text
