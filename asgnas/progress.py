"""Progress within long loops (a training epoch, a model run over many batches).

On a terminal: a tqdm bar on stderr with rate and time left, cleared when the loop ends (the caller then logs
its own summary line). Otherwise (a log file, CI): a plain line through ``log`` at most every ``interval``
seconds, so short loops print nothing extra. ``log=None`` (``-q``, ``quiet=true``) prints nothing at all.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

#: seconds between two plain progress lines when output is not a terminal
PLAIN_INTERVAL_S = 30.0


class Progress:
    """``update(n, **postfix)`` after each unit of work; ``close()`` at the end (also as a context manager)."""

    def __init__(self, total: int, desc: str, log: Callable[[str], None] | None, *,
                 interval: float = PLAIN_INTERVAL_S, unit: str = "step") -> None:
        self.total, self.desc, self.log, self.interval, self.unit = total, desc, log, interval, unit
        self.done = 0
        self._bar: Any = None
        self._start = self._last_line = time.perf_counter()
        if log is not None and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1, **postfix: float) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self._bar.update(n)
        elif self.log is not None and time.perf_counter() - self._last_line >= self.interval:
            self._last_line = time.perf_counter()
            self.log(self._plain_line(postfix))

    def _plain_line(self, postfix: dict[str, float]) -> str:
        elapsed = time.perf_counter() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        extra = "".join(f"  {k} {v:.4g}" for k, v in postfix.items())
        return f"{self.desc}: {self.done}/{self.total}, {rate:.3g} {self.unit}/s, {_duration(left)} left{extra}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN: no rate yet
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
