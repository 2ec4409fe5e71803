"""The garbage collector's settings for a serving process (one process or a uvicorn worker)."""

from __future__ import annotations

import gc


def tune_gc(thresholds: tuple[int, int, int] | None) -> None:
    """Freeze everything loaded at startup out of the GC's sight, and collect less often."""
    gc.collect()
    gc.freeze()
    if thresholds is not None:
        gc.set_threshold(*thresholds)
