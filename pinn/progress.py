"""How a training or refinement loop shows its progress, in one place (`pinn.cascade.train_level`,
`pinn.refine.refine`): a tqdm bar on a terminal, one flushed line on stderr per log interval
(Prefect, a pipe, a log file: a bar's carriage returns would show nothing until the stage ends),
or nothing.
"""

from __future__ import annotations

import sys
from typing import Literal

ProgressMode = Literal["bar", "lines", "off"]
PROGRESS_MODES: tuple[str, ...] = ("bar", "lines", "off")


def progress_mode(progress: bool | ProgressMode) -> ProgressMode:
    """The mode a loop uses: a mode is taken as given; True (what a stage passes on a terminal)
    means "bar"; False means "lines" when stderr is not a terminal (a stage run by DVC under
    Prefect or in a pipe: its log shows live progress) and "off" on a terminal."""
    if isinstance(progress, str):
        if progress not in PROGRESS_MODES:
            raise ValueError(f"progress = {progress!r}: must be one of {', '.join(PROGRESS_MODES)}")
        return progress  # type: ignore[return-value]
    if progress:
        return "bar"
    isatty = getattr(sys.stderr, "isatty", None)
    return "off" if isatty is not None and isatty() else "lines"


def progress_line(phase: str, done: int, total: int, unit: str, *, loss: float,
                  rel_l2: float | None, rate: float, rate_unit: str) -> str:
    """One progress line: `train level0: step 500/2000 (25%), loss 1.234e-03, rel L2 4.560e-02,
    812.3 steps/s`."""
    percent = 100.0 * done / total if total else 100.0
    parts = [f"{phase}: {unit} {done}/{total} ({percent:.0f}%)", f"loss {loss:.3e}"]
    if rel_l2 is not None:
        parts.append(f"rel L2 {rel_l2:.3e}")
    parts.append(f"{rate:.1f} {rate_unit}")
    return ", ".join(parts)


class Progress:
    """The progress display of one loop (`train_level`, `pinn.refine.refine`), in one place: a
    tqdm bar, or one line per log interval printed to stderr and flushed (`progress_mode`)."""

    def __init__(self, progress: bool | ProgressMode, *, phase: str, total: int, initial: int,
                 unit: str, rate_unit: str) -> None:
        from tqdm.auto import tqdm

        self.mode = progress_mode(progress)
        self.phase, self.total, self.unit, self.rate_unit = phase, total, unit, rate_unit
        self.bar = tqdm(total=total, initial=initial, desc=phase, disable=self.mode != "bar",
                        leave=False)

    def update(self, n: int, done: int, *, loss: float, rel_l2: float | None, rate: float) -> None:
        """`n` more done (`done` in all) at the end of a log interval."""
        self.bar.update(n)
        if self.mode == "lines":
            print(progress_line(self.phase, done, self.total, self.unit, loss=loss, rel_l2=rel_l2,
                                rate=rate, rate_unit=self.rate_unit), file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()
