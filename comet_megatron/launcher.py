"""Launching a compiled Triton kernel without re-deriving its specialization on every call.

``kernel[grid](*args)`` costs ~45 µs of host time per launch on the device machines (40 arguments; Triton 3.6),
of which ~30 µs are Triton's argument binding, specialization and cache-key hashing; the compiled kernel's own
launcher takes ~16 µs (``bench_host_path.py``, session 12). The fine-grained layers' forward is paced by the
host, and each layer call makes ~6 Triton launches forward and ~5 backward.

:func:`launch` keeps, per kernel, the compiled kernels it has seen under a key of its own that is **at least as
fine as Triton's specialization** of every argument, so a hit can only return the binary Triton itself would
have chosen:

- a tensor: its dtype and its address modulo 16 (Triton: dtype and whether the address is 16-byte aligned);
- an int: whether it is 1, its residue modulo 16, and whether it fits 32 or 64 signed bits (Triton: ``== 1``
  makes it a constexpr, else ``i32`` / ``i64`` / ``u64`` and whether it is a multiple of 16);
- a bool, a float, ``None``: the type (Triton: ``u1``, ``fp32``, constexpr ``None``);
- a host TMA descriptor: dtype, block shape and padding (Triton: dtype and block shape);
- a constexpr: its value; the launch options (``num_warps``...) and the global knobs Triton adds to them (debug,
  instrumentation): their values.

A miss (or any argument of another kind) goes through ``kernel[grid](...)``, which compiles or finds the kernel
and launches it; the returned binary is kept for the key. ``tests/test_launcher.py`` checks on the CPU that the
key determines Triton's own specialization, and on a GPU that every hit returns the kernel that Triton's path
returns for the same arguments.

The interpreter (``TRITON_INTERPRET=1``), Triton's launch hooks (profilers such as proton) and
``COMET_FAST_LAUNCH=0`` always take Triton's path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from comet_megatron.triton_support import interpreting

_INT32 = (-(1 << 31), (1 << 31) - 1)
_INT64 = (-(1 << 63), (1 << 63) - 1)


def fast_launch_enabled() -> bool:
    """``COMET_FAST_LAUNCH=0`` sends every launch through Triton's own path (for A/B measurements)."""
    return os.environ.get("COMET_FAST_LAUNCH", "1") != "0" and not interpreting()


class _UnkeyedArgument(Exception):
    """An argument kind the key does not cover: this call takes Triton's path."""


def _width(value: int) -> int:
    if _INT32[0] <= value <= _INT32[1]:
        return 32
    if _INT64[0] <= value <= _INT64[1]:
        return 64
    return 65  # Triton's u64 (or an overflow, which Triton's path reports)


def _int_key(value: int, specialize: bool) -> tuple:
    return ("int", value == 1, value & 15, _width(value)) if specialize else ("int", _width(value))


def argument_key(value: Any, specialize: bool = True) -> Any:
    """The part of the launch key that a non-constexpr argument contributes (see the module docstring);
    ``specialize=False`` for a parameter in the kernel's ``do_not_specialize`` (an int then keys by width only,
    as Triton specializes it: e.g. the call epoch, one key for all its values)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, value.data_ptr() & 15)
    kind = type(value)
    if kind is bool:  # before int: bool is an int subclass, and True == 1 would collide with the int 1
        return ("bool",)
    if kind is int:
        return _int_key(value, specialize)
    if kind is float:
        return ("float",)
    if value is None:
        return ("none",)
    if kind.__name__ == "TensorDescriptor" and kind.__module__ == "triton.tools.tensor_descriptor":
        return ("desc", value.base.dtype, tuple(value.block_shape), getattr(value, "padding", None))
    raise _UnkeyedArgument(kind.__name__)


_SCALARS = (int, float, bool, str, type(None))


@dataclass
class KernelLaunchCache:
    """One Triton kernel's compiled binaries under :func:`launch`'s key, and how often the key hit.

    The key of a call: the device, the compile knobs, the keyword arguments' items and types in call order (the call
    sites pass constexprs and launch options by keyword, always the same names in the same order, so this is one
    cheap tuple), then one entry per positional argument (:func:`argument_key`, or type and value for a
    constexpr). Keyword arguments whose values are not plain scalars are not cached (every such call takes Triton's
    path). Each entry keeps the binary and the values of the parameters after the positional ones (fixed by the
    key: keyword values and defaults), so a hit passes ``*args, *tail`` to the binary's launcher without binding
    anything.
    """

    kernel: Any
    names: list[str] = field(init=False)
    kinds: list[int] = field(init=False)  # per parameter: _SPECIALIZED, _UNSPECIALIZED or _CONSTEXPR
    defaults: dict[str, Any] = field(init=False)
    compiled: dict[tuple, tuple[Any, list]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        params = self.kernel.params
        self.names = [p.name for p in params]
        self.kinds = [
            _CONSTEXPR if p.is_constexpr else _UNSPECIALIZED if p.do_not_specialize else _SPECIALIZED for p in params
        ]
        self.defaults = {p.name: p.default for p in params if p.has_default}

    def bind(self, args: tuple, kwargs: dict) -> tuple[list, dict]:
        """Every parameter's value in signature order, and the remaining keyword arguments (launch options)."""
        if len(args) > len(self.names):
            raise _UnkeyedArgument("too many positional arguments")  # Triton's path raises the real error
        values = list(args)
        options = dict(kwargs)
        for name in self.names[len(args) :]:
            if name in options:
                values.append(options.pop(name))
            elif name in self.defaults:
                values.append(self.defaults[name])
            else:
                raise _UnkeyedArgument(f"missing argument {name}")
        return values, options

    def key(self, device: int, knob_state: Any, args: tuple, kwargs: dict) -> tuple:
        try:
            return (
                device,
                knob_state,
                tuple(kwargs.items()),
                tuple(map(type, kwargs.values())),  # True == 1 == 1.0: Triton types a runtime bool, int, float apart
                *[
                    # tensors and specialized ints inline (most arguments): argument_key's entries without the call
                    ("tensor", value.dtype, value.data_ptr() & 15)
                    if isinstance(value, torch.Tensor)
                    else ("int", value == 1, value & 15, _width(value))
                    if type(value) is int and kind == _SPECIALIZED
                    else (type(value), value)
                    if kind == _CONSTEXPR
                    else argument_key(value, kind == _SPECIALIZED)
                    for value, kind in zip(args, self.kinds)
                ],
            )
        except TypeError as error:  # an unhashable constexpr or keyword value
            raise _UnkeyedArgument(str(error)) from error

    def remember(self, key: tuple, compiled: Any, args: tuple, kwargs: dict) -> None:
        """Keep ``compiled`` (what Triton's path launched for this call) for ``key``, when it can be reused."""
        if not all(isinstance(v, _SCALARS) for v in kwargs.values()):
            return
        if not all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata")) or hasattr(compiled, "result"):
            return  # not a finished CompiledKernel (another Triton version, or an asynchronous compile)
        values, _ = self.bind(args, kwargs)
        self.compiled[key] = (compiled, values[len(args) :])


_SPECIALIZED, _UNSPECIALIZED, _CONSTEXPR = 0, 1, 2


_caches: dict[int, KernelLaunchCache] = {}

# Triton's launch path calls these when set (profilers, stage inspection): such launches take that path.
_HOOKS = ("launch_enter_hook", "launch_exit_hook", "add_stages_inspection_hook")


def hooks_active(knobs) -> bool:
    """Whether a launch or stage hook is installed. Triton 3.6+ keeps the launch hooks as ``HookChain`` objects that
    are never ``None`` (empty chains call nothing); older versions use ``None``."""
    for name in _HOOKS:
        hook = getattr(knobs.runtime, name, None)
        if hook is not None and getattr(hook, "calls", True):
            return True
    return False


def _compile_knobs(knobs) -> tuple:
    """The global knobs Triton's launch path adds to a kernel's compile options (those of its versions 3.4-3.9)."""
    compilation = knobs.compilation
    return (
        knobs.runtime.debug,
        getattr(compilation, "instrumentation_mode", None),
        getattr(compilation, "fpsan_homomorphic_casts", None),
    )


def launch_cache(kernel) -> KernelLaunchCache:
    """The cache :func:`launch` keeps for ``kernel`` (created on first use)."""
    cache = _caches.get(id(kernel))
    if cache is None or cache.kernel is not kernel:
        cache = _caches[id(kernel)] = KernelLaunchCache(kernel)
    return cache


def _globals_unchanged(kernel) -> bool:
    """Triton refuses a launch when a global the kernel read at compile time has changed; so does the fast path
    (by handing the call to Triton's path, which raises)."""
    missing = object()
    return all(
        globals_dict.get(name, missing) == value for (name, _), (value, globals_dict) in kernel.used_global_vals.items()
    )


def launch(kernel, grid: tuple[int, ...], *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``, through the compiled kernel's own launcher when this argument
    specialization has been launched before on this device (see the module docstring)."""
    if not fast_launch_enabled():
        kernel[grid](*args, **kwargs)
        return
    knobs, active = _triton()
    if hooks_active(knobs):
        kernel[grid](*args, **kwargs)
        return
    cache = launch_cache(kernel)
    device = active.get_current_device()
    try:
        key = cache.key(device, _compile_knobs(knobs), args, kwargs)
    except _UnkeyedArgument:
        kernel[grid](*args, **kwargs)
        return
    entry = cache.compiled.get(key)
    if entry is None or (kernel.used_global_vals and not _globals_unchanged(kernel)):
        cache.misses += 1
        compiled = kernel[grid](*args, **kwargs)
        try:
            cache.remember(key, compiled, args, kwargs)
        except _UnkeyedArgument:
            pass
        return
    cache.hits += 1
    compiled, tail = entry
    grid_x, grid_y, grid_z = (tuple(grid) + (1, 1))[:3]
    stream = active.get_current_stream(device)
    compiled.run(
        grid_x, grid_y, grid_z, stream, compiled.function, compiled.packed_metadata, None, None, None, *args, *tail
    )


def _triton():
    """Triton's knobs and active driver (imported on the first launch, not at import time)."""
    global _TRITON
    if _TRITON is None:
        from triton import knobs
        from triton.runtime import driver

        _TRITON = (knobs, driver.active)
    return _TRITON


_TRITON: tuple | None = None
