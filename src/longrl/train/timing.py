"""Seconds per phase of a step, for the metrics."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

from longrl.vision.placeholder import is_placeholder_call


class PhaseTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        out = {f"time/{phase}_s": value for phase, value in self.seconds.items()}
        out["time/step_s"] = sum(self.seconds.values())
        return out


class VisionCounter:
    """Counts vision-tower forwards and the videos/images they encode (rows of grid_thw)."""

    def __init__(self, visual) -> None:
        self.calls = 0
        self.items = 0
        self._handle = None
        if visual is not None:
            self._handle = visual.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, _output) -> None:
        if is_placeholder_call(module):
            return  # a stand-in call that encodes nothing (FSDP, see vision.placeholder)
        self.calls += 1
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self.items += 0 if grid is None else int(grid.shape[0])

    def take(self) -> dict[str, float]:
        out = {"vision/encode_calls": float(self.calls), "vision/items_encoded": float(self.items)}
        self.calls = self.items = 0
        return out
