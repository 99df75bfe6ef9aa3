"""The README's commands and code run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_its_library_script():
    assert len(python_blocks()) == 1


@pytest.mark.slow
def test_the_library_section_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks()[0], str(README), "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "adapters" / "sst2" / "adapter_config.json").is_file()
    printed = capsys.readouterr().out
    assert printed.startswith("[") and printed.count("'") == 4  # two decoded strings
