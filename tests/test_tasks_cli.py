"""`dept tasks`, through dept.cli.main.main and once through the console script."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from test_tasks_files import write_qqp

from dept.cli.main import main
from dept.tasks import TASKS


def test_lists_every_task_with_suite_and_metrics(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name, spec in TASKS.items():
        line = next(row for row in out.splitlines() if row.split()[0] == name)
        assert spec.suite in line and all(m in line for m in spec.metrics)


def test_json_listing(capsys):
    assert main(["tasks", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table) == set(TASKS)
    assert table["mrpc"] == {"suite": "glue", "kind": "classification", "metrics": ["accuracy", "f1"],
                             "main_metric": "accuracy"}


def test_row_counts_of_a_data_dir(capsys, tmp_path):
    write_qqp(tmp_path)
    assert main(["tasks", "--data-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"qqp": {"train": 6, "validation": 4}}


def test_real_glue_and_superglue_counts(capsys, shared_data):
    assert main(["tasks", "--data-dir", str(shared_data / "glue"), "--json"]) == 0
    glue = json.loads(capsys.readouterr().out)
    assert glue["rte"] == {"train": 2490, "validation": 277} and glue["qnli"] == {"validation": 5463}
    assert main(["tasks", "--data-dir", str(shared_data / "superglue"), "--json"]) == 0
    superglue = json.loads(capsys.readouterr().out)
    assert superglue["cb"] == {"train": 250, "validation": 56} and superglue["boolq"] == {"validation": 3270}


def test_errors_exit_nonzero(capsys, tmp_path):
    assert main(["tasks", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "data directory not found" in capsys.readouterr().err
    assert main(["tasks", "--data-dir", str(tmp_path), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == "{}" and "no official task files found" in captured.err


def test_console_script(tmp_path):
    exe = shutil.which("dept")
    if exe is None:
        pytest.skip("the dept console script is not installed (pip install -e .)")
    write_qqp(tmp_path)
    done = subprocess.run([exe, "tasks", "--data-dir", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"qqp": {"train": 6, "validation": 4}}
