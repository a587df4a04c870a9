"""The inspection notebook runs headless from top to bottom on a tiny checkpoint."""

import os
import pathlib

import nbformat
from nbclient import NotebookClient

from cmp_jax import state
from tests.helpers import random_inputs, random_variables
from tests.train_subprocess import tiny_config

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "cmp_inspect.ipynb"


def test_notebook_runs_every_cell(tmp_path, monkeypatch):
    config = tiny_config()
    model, _ = state.build_from_config(config)
    variables = random_variables(model.clone(bn_axis_name=None), *random_inputs(1, 32, 32), seed=6)
    state.save_variables(tmp_path / "run", config, variables, step=4)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source += (
        f"\nWORKDIR = {str(tmp_path / 'run')!r}\nOUTPUT_DIR = {str(tmp_path)!r}\nIMAGE_SIZE = 64\n"
    )
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    monkeypatch.setenv("CMP_JAX_DIR", str(NOTEBOOK.parents[1]))
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 8
    for cell in code:
        assert cell.execution_count is not None, cell.source[:60]
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:60]
    text = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "mean end-point error" in text and "IoU with the object" in text and "9 frames" in text
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # batch panels, arrows, annotation, animation
    assert (tmp_path / "notebook_animation.gif").stat().st_size > 0
    assert not os.path.exists(tmp_path / "notebook")  # loaded, not trained
