"""Where a task's official split comes from: a file under a data folder, the packaged
demo folder, or the Hugging Face hub; and which tasks a data folder holds.

A data folder may be the task folder itself (…/glue/RTE), the suite folder made by
the official download (…/glue, holding RTE/), or a folder holding the suites
(…/data, holding glue/ and superglue/).
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path

from dept.tasks.errors import TaskDataError, TaskError
from dept.tasks.readers import read_file
from dept.tasks.records import Record
from dept.tasks.registry import TASKS, TaskSpec

# Folder names the official downloads give each suite.
SUITE_DIRS = {"glue": ("glue", "GLUE", "glue_data"), "superglue": ("superglue", "SuperGLUE", "super_glue")}


def packaged_demo_dir() -> Path:
    """src/dept/resources/demo, wherever the package is installed."""
    return Path(str(importlib.resources.files("dept").joinpath("resources", "demo")))


def _candidates(spec: TaskSpec, data_dir: Path, rel: str, strict: bool) -> list[Path]:
    paths = []
    # data_dir is the task folder itself; when scanning (strict), only if it bears the task's name.
    if not strict or data_dir.name.lower() in {f.lower() for f in spec.folders}:
        paths.append(data_dir / rel)
    paths += [data_dir / folder / rel for folder in spec.folders]
    paths += [data_dir / s / folder / rel for s in SUITE_DIRS.get(spec.suite, ()) for folder in spec.folders]
    return paths


def locate(spec: TaskSpec, data_dir: str | Path, split: str) -> Path:
    """The file of one official split of `spec` under `data_dir`; a clear error if absent."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TaskDataError(f"data directory not found (task {spec.name!r})", data_dir)
    candidates = _candidates(spec, data_dir, spec.files[split], strict=False)
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p.relative_to(data_dir)) for p in candidates)
    raise TaskDataError(
        f"no {split} file for task {spec.name!r} (expected {spec.files[split]} of the official "
        f"download; looked for {tried})",
        data_dir,
    )


@functools.lru_cache(maxsize=8)
def _read_cached(name: str, path: str, mtime_ns: int, size: int) -> tuple[Record, ...]:
    # Keyed on mtime and size so that an edited file is read again.
    return tuple(read_file(TASKS[name], Path(path)))


def read_official(spec: TaskSpec, path: Path) -> tuple[Record, ...]:
    """The records of one file (cached; callers must not modify them)."""
    if not path.is_file():
        raise TaskDataError(f"file not found (task {spec.name!r})", path)
    stat = path.stat()
    return _read_cached(spec.name, str(path), stat.st_mtime_ns, stat.st_size)


def official_records(
    spec: TaskSpec, split: str, data_dir: str | Path | None, from_hub: bool
) -> tuple[Record, ...]:
    """One official split (a key of spec.files) from the hub, data_dir, or the package."""
    if from_hub:
        from dept.tasks.hub import load_hub_records

        return tuple(load_hub_records(spec, split))
    if data_dir is None:
        if spec.name != "demo":
            raise TaskError(
                f"task {spec.name!r}: pass data_dir (the folder of the official download, "
                f"e.g. .../glue) or from_hub=True"
            )
        data_dir = packaged_demo_dir()
    return read_official(spec, locate(spec, data_dir, split))


def find_tasks(data_dir: str | Path) -> dict[str, dict[str, int]]:
    """Tasks whose official files are under data_dir -> {official split: row count}.

    Every file found is parsed in full, so a malformed file raises here too.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TaskDataError("data directory not found", data_dir)
    found: dict[str, dict[str, int]] = {}
    for spec in TASKS.values():
        counts = {}
        for split, rel in spec.files.items():
            path = next((p for p in _candidates(spec, data_dir, rel, strict=True) if p.is_file()), None)
            if path is not None:
                counts[split] = len(read_official(spec, path))
        if counts:
            found[spec.name] = counts
    return found
