"""Which unit goes to which actor, and what happens when one fails.

A small pure class so the policy is testable without Ray: the driver feeds it events
(`started`, `succeeded`, `failed`) and asks it for the next assignment.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


class UnitFailedError(RuntimeError):
    """A unit failed more often than `max_retries` allows."""


@dataclass
class UnitQueue:
    units: list[int]
    max_retries: int
    pending: deque = field(init=False)
    attempts: dict[int, int] = field(default_factory=dict)
    errors: dict[int, list[str]] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.pending = deque(self.units)

    def next_unit(self) -> tuple[int, int] | None:
        """(unit, attempt number) of the next unit to run, or None when none waits."""
        if not self.pending:
            return None
        unit = self.pending.popleft()
        return unit, self.attempts.get(unit, 0)

    def succeeded(self, unit: int) -> None:
        self.done.add(unit)

    def failed(self, unit: int, error: str, counts: bool = True) -> None:
        """Re-queue `unit`; raise UnitFailedError when it ran out of retries.

        `counts=False` re-queues without spending a retry (the unit never started: it
        was only waiting on an actor that died).
        """
        self.errors.setdefault(unit, []).append(error)
        if counts:
            self.attempts[unit] = self.attempts.get(unit, 0) + 1
        if self.attempts.get(unit, 0) > self.max_retries:
            history = "\n  ".join(self.errors[unit])
            raise UnitFailedError(
                f"unit {unit} failed {self.attempts[unit]} times (max_retries={self.max_retries}); "
                f"errors:\n  {history}"
            )
        self.pending.appendleft(unit)

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.units)
