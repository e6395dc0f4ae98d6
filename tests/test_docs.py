"""The documentation's code examples run as written: the API example of docs/fit.md (on its
own synthetic problem) and the README's configuration snippet."""

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _python_block(path: Path, after: str) -> str:
    """The first ```python block after the line ``after`` of a Markdown file."""
    text = path.read_text()
    assert after in text, f"{path.name}: section {after!r} not found"
    return text.split(after, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_the_api_example_of_fit_md_runs():
    code = _python_block(REPO / "docs" / "fit.md", "## API for experiments (runnable)")
    ns = {"__name__": "docs_fit_md"}
    exec(compile(code, "docs/fit.md", "exec"), ns)  # noqa: S102 - the documented example
    # what the example promises: the driver's zeropoints, a gradient of the loss with a prior,
    # a converging solve, optax steps, and errors where free and NaN where frozen
    assert np.isfinite(ns["result"].zeropoint).any()
    assert np.all(np.isfinite(np.asarray(ns["grads"].alpha)))
    assert ns["info"].loss_end < ns["info"].loss_start
    assert np.isfinite(float(ns["value"]))
    err, mask = ns["err"], ns["mask"]
    free = np.asarray(mask.filter_offset)
    assert np.all(np.isfinite(np.asarray(err.filter_offset)[free]))
    assert np.all(np.isnan(np.asarray(err.filter_offset)[~free]))


def test_the_readme_configuration_snippet_runs(monkeypatch):
    monkeypatch.chdir(REPO)
    code = _python_block(REPO / "README.md", "## Configuration")
    ns = {}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102
    assert ns["cfg"].fit.max_fit_cycles == 3
