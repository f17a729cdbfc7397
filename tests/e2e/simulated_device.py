"""A second device on a CPU-only machine, to test that the trainers move their work.

A tensor "on" the simulated device is a CPU tensor of the subclass `OnDevice`; its
`.device` reads `SIMULATED` (cpu:0, which compares unequal to the plain CPU device).
Inside `simulated_device()`, like a GPU:
  - `.to(SIMULATED)` and factories called with `device=SIMULATED` give `OnDevice`
    tensors; `.cpu()` / `.to("cpu")` give plain ones;
  - results of an op on `OnDevice` inputs are `OnDevice` (the subclass propagates);
  - an op mixing `OnDevice` and plain tensors raises `DeviceMismatch`, as CUDA raises
    "Expected all tensors to be on the same device". Like CUDA, 0-dim tensors, copies
    (`copy_`) and indexing (`[]`, `[] =`) may mix.
`module.to(SIMULATED)` turns parameters and buffers into `OnDevice` tensors (parameters
swapped in place, so tied weights stay tied); a parameter's `.grad` reads as being where
the parameter is.

What it cannot show: anything specific to CUDA (NCCL, streams, memory, dtypes); and a
mix inside an indexing or copy op, which it lets pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

SIMULATED = torch.device("cpu", 0)
_CPU = torch.device("cpu")


class OnDevice(torch.Tensor):
    """A CPU tensor that the simulation treats as living on SIMULATED."""


class DeviceMismatch(RuntimeError):
    """An op got tensors on the simulated device and on the CPU."""


_DEVICE_GETTER = torch.Tensor.device.__get__
_GRAD_GETTER = torch.Tensor.grad.__get__
# Ops that CUDA lets mix devices (copies across, CPU indices into device tensors), and
# bookkeeping that computes nothing.
_MAY_MIX = {
    torch._has_compatible_shallow_copy_type,
    torch.Tensor.copy_,
    torch.Tensor.__getitem__,
    torch.Tensor.__setitem__,
    torch.Tensor.to,
    torch.Tensor.cpu,
}


def _as_device(value) -> torch.device | None:
    if isinstance(value, torch.device):
        return value
    if isinstance(value, str):
        try:
            return torch.device(value)
        except RuntimeError:
            return None
    return None


def _target(func, args, kwargs) -> torch.device | None:
    """The device a move or factory call asks for (None: not a move, or no device given)."""
    if func is torch.Tensor.cpu:
        return _CPU
    if func is torch.Tensor.to:
        for value in [kwargs.get("device"), *args[1:]]:
            device = _as_device(value)
            if device is not None:
                return device
            if isinstance(value, torch.Tensor):  # .to(other): other's device
                return SIMULATED if isinstance(value, OnDevice) else value.device
        return None
    return _as_device(kwargs.get("device"))


def _real(value):
    """SIMULATED replaced by the CPU, so torch itself sees a plain CPU call."""
    device = _as_device(value) if isinstance(value, (str, torch.device)) else None
    return _CPU if device == SIMULATED else value


def _tag(out, on_device: bool):
    flat, _ = tree_flatten(out)
    if not any(isinstance(t, torch.Tensor) for t in flat):
        return out
    if isinstance(out, torch.Tensor):
        return _retype(out, on_device)
    if isinstance(out, (tuple, list)):
        return type(out)(_tag(item, on_device) for item in out)
    return out


def _retype(tensor: torch.Tensor, on_device: bool) -> torch.Tensor:
    if on_device and not isinstance(tensor, OnDevice):
        return tensor.as_subclass(OnDevice)
    if not on_device and isinstance(tensor, OnDevice):
        return tensor.as_subclass(torch.Tensor)
    return tensor


class _Simulation(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func == _DEVICE_GETTER:
            return SIMULATED if isinstance(args[0], OnDevice) else func(*args, **kwargs)
        if func == _GRAD_GETTER:
            # Autograd fills .grad outside torch functions: a parameter's gradient is
            # where the parameter is, as on a GPU.
            grad = func(*args, **kwargs)
            return grad if grad is None else _retype(grad, isinstance(args[0], OnDevice))
        target = _target(func, args, kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on_device = [t for t in tensors if isinstance(t, OnDevice)]
        if on_device and func not in _MAY_MIX:
            on_cpu = [t for t in tensors if not isinstance(t, OnDevice) and t.dim() > 0]
            if on_cpu:
                shapes = [tuple(t.shape) for t in on_cpu]
                raise DeviceMismatch(
                    f"{getattr(func, '__name__', func)}: tensors on the simulated device and "
                    f"CPU tensors of shapes {shapes}"
                )
        if target is None:
            return func(*args, **kwargs)
        # A move or factory: torch itself sees the CPU, the result is tagged.
        args = tuple(_real(a) for a in args)
        kwargs = {k: _real(v) for k, v in kwargs.items()}
        return _tag(func(*args, **kwargs), target == SIMULATED)


@contextlib.contextmanager
def _swapping_module_to() -> Iterator[None]:
    """`Module.to` swaps each parameter's class in place (tied weights stay one tensor);
    only `Module.to`: `load_state_dict` keeps copying into the parameters, as it does."""
    original = torch.nn.Module.to

    def to(self, *args, **kwargs):
        previous = torch.__future__.get_swap_module_params_on_conversion()
        torch.__future__.set_swap_module_params_on_conversion(True)
        try:
            return original(self, *args, **kwargs)
        finally:
            torch.__future__.set_swap_module_params_on_conversion(previous)

    torch.nn.Module.to = to
    try:
        yield
    finally:
        torch.nn.Module.to = original


@contextlib.contextmanager
def simulated_device() -> Iterator[None]:
    """Within: SIMULATED behaves as a device of its own (see the module docstring)."""
    with _swapping_module_to(), _Simulation():
        yield


def is_on_device(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, OnDevice)
