"""The walkthrough notebook runs from top to bottom (the pipeline on a tiny built-in dataset)."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_notebook_executes(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setenv("RCA_NOTEBOOK_RUN_DIR", str(run_dir))
    monkeypatch.setenv("RCA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RCA_NOTEBOOK_EPOCHS", "2")  # every cell runs; what is learnt is not checked here
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "commit the notebook without outputs"
    )
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()  # the kernel inherits the environment set above

    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.output_type == "error"]
    # The figure cell displayed the grid; the last cells printed the sweep and the per-class table.
    assert any("image/png" in output.get("data", {}) for output in outputs)
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "best:" in printed and "background" in printed
    report = json.loads((run_dir / "report.json").read_text())
    assert f"{report['seg_miou']:.1f}" in printed  # the report table printed by the pipeline
