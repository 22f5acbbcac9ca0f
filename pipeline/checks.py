"""Strict checks of configuration values, each naming the key that is wrong.

YAML and `--set` hand us whatever the user typed: `true` for a batch size, `1500.5` for a
token count, `abc` for a GPU count. Python would accept a bool as an int (True == 1) and
fail on a string much later, after the model loaded and the corpus was tokenized; these
checks run when the config is built, so the error names the key and comes at once.
"""

from __future__ import annotations

from typing import Any


def _kind(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_int(name: str, value: Any, minimum: int = 1, optional: bool = False) -> None:
    """An int >= minimum (a bool or a float is not an int); None only when optional."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        extra = " or null" if optional else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{extra}, got {_kind(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")


def check_number(name: str, value: Any, minimum: float = 0.0) -> None:
    """An int or float >= minimum (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number >= {minimum}, got {_kind(value)}")
    if not value >= minimum:  # also refuses NaN
        raise ValueError(f"{name} must be a number >= {minimum}, got {value}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {_kind(value)}")


def check_str(name: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {_kind(value)}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices or isinstance(value, bool):
        raise ValueError(f"{name} must be one of {list(choices)}, got {_kind(value)}")
