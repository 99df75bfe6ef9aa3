"""The two kinds of error the task layer raises.

`TaskError` is a wrong request (unknown task, split, protocol or option);
`TaskDataError` is a data file that is missing or does not match its official
format, and always says which file and which line (or item) is at fault.
"""

from __future__ import annotations

from pathlib import Path

from dept.errors import UserError


class TaskError(UserError, ValueError):
    """A task name, split or option that does not exist."""


class TaskDataError(UserError, ValueError):
    """A data file that is missing or not in the format the task expects."""

    def __init__(self, message: str, path: str | Path | None = None, where: int | str | None = None):
        self.path = None if path is None else str(path)
        self.where = where
        prefix = ""
        if path is not None:
            prefix = f"{path}"
            if isinstance(where, int):
                prefix += f", line {where}"
            elif where:
                prefix += f", {where}"
            prefix += ": "
        super().__init__(prefix + message)
