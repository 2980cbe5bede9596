"""The README's quick example runs as written and does what its comments say."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_example_runs(tmp_path, monkeypatch, capsys):
    block = re.search(r"## Quick example\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    lines = capsys.readouterr().out.split("\n")
    converged, exact_err = map(float, lines[0].split())
    assert converged == 1.0 and exact_err < 1.0
    assert float(lines[1]) < 20  # learned depth 3 far below 3 APGD iterations (≈ 67)
    assert (tmp_path / "lapgd3.safetensors").is_file()
    assert (namespace["net2"](namespace["Y"][:5]) == namespace["net"](namespace["Y"][:5])).all()


def test_every_other_python_block_runs(tmp_path, monkeypatch):
    """The README's other examples (fast and certified, nets on a convolution) run as written."""
    text = README.read_text()
    quick = re.search(r"## Quick example\s+```python\n(.*?)```", text, re.S).group(1)
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b != quick]
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    spaces = []
    for block in blocks:
        spaces.append({})
        exec(compile(block, "README.md", "exec"), spaces[-1])
    certified = next(ns for ns in spaces if "res" in ns)
    assert certified["res"].converged.all()
    conv = next(ns for ns in spaces if "op" in ns)
    assert conv["net"](conv["Y"]).shape == (8, *conv["op"].in_shape)
