"""Progress of a capture: a bar with tokens/s and ETA on a terminal, plain lines elsewhere.

`ray job logs` and CI logs are not terminals; there a line every `interval_s` seconds says
the same thing without carriage returns.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total_rows: int, done_rows: int = 0, interval_s: float = 10.0, stream=None):
        self.stream = stream or sys.stderr
        self.total_rows = total_rows
        self.done_rows = done_rows
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.rows_this_run = 0
        self._last_line = self.started
        self._bar = None
        if self.stream.isatty():
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
