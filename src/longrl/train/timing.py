"""Seconds per phase of a step, for the metrics."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

from longrl.vision.placeholder import is_placeholder_call


class PhaseTimer:
    """Wall seconds per phase (`time/<phase>_s`), and the process's CPU seconds in it, all
    threads (`time/<phase>_cpu_s`): on a shared machine the CPU time of a one-thread run
    tracks the work done where wall time does not."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start
            self.cpu_seconds[phase] += time.process_time() - start_cpu

    def metrics(self) -> dict[str, float]:
        out = {f"time/{phase}_s": value for phase, value in self.seconds.items()}
        out["time/step_s"] = sum(self.seconds.values())
        out.update({f"time/{phase}_cpu_s": value for phase, value in self.cpu_seconds.items()})
        out["time/step_cpu_s"] = sum(self.cpu_seconds.values())
        return out


class VisionCounter:
    """Counts vision-tower forwards and the videos/images they encode (rows of grid_thw),
    reported as `{prefix}encode_calls` and `{prefix}items_encoded`."""

    def __init__(self, visual, prefix: str = "vision/") -> None:
        self.prefix = prefix
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
        out = {
            f"{self.prefix}encode_calls": float(self.calls),
            f"{self.prefix}items_encoded": float(self.items),
        }
        self.calls = self.items = 0
        return out
