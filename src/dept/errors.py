"""The one base class of every error a user can cause and fix.

The command line prints such an error as one line, `dept <command>: <message>`, and
exits with status 2; anything else is a bug and keeps its traceback. Each layer's own
error classes (ConfigError, TaskDataError, AdapterFileError, ...) derive from it.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: an option, a file, a model name, data. The message names the culprit."""


class OptionError(UserError, ValueError):
    """An option value no run can use (names the option)."""
