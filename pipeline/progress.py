"""Progress of a loop of known length: a bar on a terminal, a few plain lines elsewhere.

`StepProgress` counts steps (SAE training: a line per tenth); `RowProgress` counts rows
(capture, feature statistics: tokens/s and ETA, a line every 10 s).

`ray job logs`, CI logs and files are not terminals: a bar there is hundreds of
carriage-return fragments. So a bar is drawn only when the stream is a TTY; otherwise
one line is printed each time another tenth of the total is done (and at the end),
e.g. `train SAE: step 400/4000 (10%) mse 0.01 fve 0.9`.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class StepProgress:
    """`update(n, fields)` after each step; `close()` at the end (also a context manager).

    `fields` (name -> formatted value) go to the bar's postfix or the end of the line.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "",
        unit: str = "step",
        stream: TextIO | None = None,
        enabled: bool = True,
    ):
        self.stream = stream or sys.stderr
        self.total = total
        self.done = initial
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        self._bar = None
        if enabled and is_terminal(self.stream):
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream)

    def _tenth(self, done: int) -> int:
        return 10 * done // max(self.total, 1)

    def update(self, n: int = 1, fields: dict[str, str] | None = None) -> None:
        before, self.done = self.done, self.done + n
        if self._bar is not None:
            if fields:
                self._bar.set_postfix(fields, refresh=False)
            self._bar.update(n)
        elif self.enabled and self._tenth(self.done) > self._tenth(before):
            print(self.line(fields), file=self.stream, flush=True)

    def line(self, fields: dict[str, str] | None = None) -> str:
        percent = 100 * self.done // max(self.total, 1)
        head = f"{self.desc}: " if self.desc else ""
        text = f"{head}{self.unit} {self.done}/{self.total} ({percent}%)"
        return " ".join([text, *(f"{name} {value}" for name, value in (fields or {}).items())])

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RowProgress:
    """Rows done of a known total, with rows/s and ETA: a bar on a terminal, a line every
    `interval_s` seconds elsewhere (`ray job logs` and CI logs are not terminals)."""

    def __init__(self, total_rows: int, done_rows: int = 0, interval_s: float = 10.0, stream=None):
        self.stream = stream or sys.stderr
        self.total_rows = total_rows
        self.done_rows = done_rows
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.rows_this_run = 0
        self._last_line = self.started
        self._bar = None
        if is_terminal(self.stream):
            self._bar = tqdm(
                total=total_rows, initial=done_rows, unit="tok", unit_scale=True, file=self.stream
            )

    def advance(self, rows: int) -> None:
        self.done_rows += rows
        self.rows_this_run += rows
        if self._bar is not None:
            self._bar.update(rows)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval_s or self.done_rows >= self.total_rows:
            self._last_line = now
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.rows_this_run / elapsed
        left = self.total_rows - self.done_rows
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        percent = 100.0 * self.done_rows / max(self.total_rows, 1)
        return f"progress: {self.done_rows}/{self.total_rows} tokens ({percent:.1f}%), {rate:.0f} tokens/s, ETA {eta}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
