"""The fast launch path (``comet_megatron/launcher.py``) can only ever pick the binary Triton's own path picks.

CPU: the launch key of every argument kind determines Triton's native specialization of it (under each of
Triton's ``do_not_specialize`` / ``do_not_specialize_on_alignment`` settings), and arguments bind in signature
order. GPU (``COMET_TEST_DEVICE=cuda``): launches through the cache compute the right values, and after each one
Triton's own path returns the very binary the cache used.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch

triton = pytest.importorskip("triton")
tl = triton.language

from comet_megatron import launcher  # noqa: E402
from tests.multirank import selected_device  # noqa: E402


@triton.jit
def _scale_kernel(out, src, n, scale, negate, offset, BLOCK: tl.constexpr, SHIFT: tl.constexpr = 0):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    x = tl.load(src + idx, mask=mask).to(tl.float32) * scale + offset + SHIFT
    if negate:
        x = -x
    tl.store(out + idx, x.to(out.dtype.element_ty), mask=mask)


@triton.jit
def _one_argument(x):
    pass


@triton.jit(do_not_specialize=["x"])
def _one_unspecialized_argument(x):
    pass


@triton.jit(do_not_specialize_on_alignment=["x"])
def _one_unaligned_argument(x):
    pass


def _argument_values() -> list:
    base = torch.empty(64, dtype=torch.float32)
    values: list = []
    for dtype in (torch.float32, torch.bfloat16, torch.int32, torch.int64, torch.uint8):
        storage = torch.empty(64, dtype=dtype)
        values += [storage[i:] for i in range(0, 17)]  # every address residue modulo 16 the dtype allows
    values += [base.view(4, 16), base.view(4, 16)[1:]]
    values += [
        *range(-3, 40),
        -16,
        -17,
        (1 << 31) - 16,
        (1 << 31) - 1,
        1 << 31,
        (1 << 31) + 16,
        -(1 << 31),
        -(1 << 31) - 1,
        -(1 << 31) - 16,
        (1 << 63) - 1,
        (1 << 63) - 16,
        1 << 63,
        (1 << 63) + 1,
        (1 << 64) - 16,
        (1 << 64) - 1,
        True,
        False,
        0.0,
        1.0,
        16.0,
        -2.5,
        None,
    ]
    from triton.tools.tensor_descriptor import TensorDescriptor

    for dtype, block in itertools.product((torch.bfloat16, torch.float32), ([16, 16], [32, 16], [16, 32])):
        storage = torch.empty(128, 64, dtype=dtype)
        values += [TensorDescriptor.from_tensor(storage, block), TensorDescriptor.from_tensor(storage[16:], block)]
    return values


@pytest.mark.parametrize(
    "kernel,specialize,align",
    [(_one_argument, True, True), (_one_unaligned_argument, True, False), (_one_unspecialized_argument, False, True)],
    ids=["default", "no_align", "no_specialize"],
)
def test_launch_key_determines_triton_specialization(kernel, specialize, align):
    """Through the key a launch computes (its inline entries and :func:`argument_key`), for one parameter of each
    specialization setting: equal keys never cover different Triton specializations."""
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.runtime.jit import native_specialize_impl

    backend = CUDABackend(GPUTarget("cuda", 90, 32))
    cache = launcher.KernelLaunchCache(kernel)
    seen: dict = {}
    for value in _argument_values():
        spec = tuple(native_specialize_impl(type(backend), value, False, specialize, align))
        key = cache.key(0, (), (value,), {})
        assert key[4:] == (launcher.argument_key(value, specialize),)  # the inline entries are argument_key's
        if key in seen:
            assert seen[key][0] == spec, f"key {key} covers {seen[key][1]!r} ({seen[key][0]}) and {value!r} ({spec})"
        else:
            seen[key] = (spec, value)
    # every address residue and integer class got a key of its own: the check above compared real groups
    assert len(seen) > 40


def test_unkeyed_arguments_are_refused():
    with pytest.raises(launcher._UnkeyedArgument):
        launcher.argument_key((1, 2))
    with pytest.raises(launcher._UnkeyedArgument):
        launcher.argument_key("text")


def test_bind_orders_values_as_the_signature():
    cache = launcher.KernelLaunchCache(_scale_kernel)
    out, src = torch.empty(4), torch.empty(4)
    values, options = cache.bind((out, src, 4), dict(scale=2.0, negate=True, offset=1.0, BLOCK=8, num_warps=4))
    assert values == [out, src, 4, 2.0, True, 1.0, 8, 0]  # SHIFT from its default
    assert options == {"num_warps": 4}
    values, _ = cache.bind((out, src, 4, 2.0, False, 1.0, 8, 3), {})
    assert values[-1] == 3
    with pytest.raises(launcher._UnkeyedArgument):
        cache.bind((out, src), {})


def test_keys_separate_options_and_constexprs():
    cache = launcher.KernelLaunchCache(_scale_kernel)
    out, src = torch.empty(16), torch.empty(16)
    args = (out, src, 16, 2.0, False, 0.0)

    def key(*positional, device=0, knobs=(False,), **kwargs):
        return cache.key(device, knobs, positional or args, kwargs)

    base = key(BLOCK=16)
    assert key(BLOCK=16) == base
    assert key(BLOCK=32) != base
    assert key(BLOCK=16, SHIFT=1) != base
    assert key(BLOCK=16, num_warps=8) != base
    assert key(BLOCK=16, device=1) != base
    assert key(BLOCK=16, knobs=(True,)) != base  # Triton's debug knob
    # runtime arguments passed by keyword: True == 1 == 1.0, but Triton types them u1 / constexpr 1 / fp32
    by_keyword = [key(*args[:4], negate=v, offset=0.0, BLOCK=16) for v in (True, 1, 1.0)]
    assert len(set(by_keyword)) == 3
    # positional constexprs by type and value
    assert len({key(*args, v) for v in (True, 1, 16)}) == 3


def test_installed_hooks_take_tritons_path(monkeypatch):
    knobs = triton.knobs
    assert not launcher.hooks_active(knobs)  # Triton's defaults: empty hook chains (3.6+) or None
    hook = knobs.runtime.launch_enter_hook
    if hasattr(hook, "add"):
        hook.add(print)
        try:
            assert launcher.hooks_active(knobs)
        finally:
            hook.remove(print)
    else:
        monkeypatch.setattr(knobs.runtime, "launch_enter_hook", print)
        assert launcher.hooks_active(knobs)
    assert not launcher.hooks_active(knobs)


def test_interpreter_and_switch_take_tritons_path(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not launcher.fast_launch_enabled()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv("COMET_FAST_LAUNCH", "0")
    assert not launcher.fast_launch_enabled()
    monkeypatch.setenv("COMET_FAST_LAUNCH", "1")
    assert launcher.fast_launch_enabled()


@pytest.mark.gpu
def test_cached_launches_match_tritons_path():
    if selected_device() != "cuda" or not torch.cuda.is_available():
        pytest.skip("needs COMET_TEST_DEVICE=cuda and a GPU")
    if os.environ.get("COMET_FAST_LAUNCH") == "0":
        pytest.skip("COMET_FAST_LAUNCH=0")
    torch.manual_seed(0)
    cache = launcher.launch_cache(_scale_kernel)
    storage = torch.randn(4096, device="cuda")
    out_storage = torch.empty(4096, device="cuda")
    cases = []
    for shift, n, negate, block, dtype in itertools.product(
        (0, 1, 4), (1, 16, 1000), (False, True), (64, 128), (torch.float32, torch.bfloat16)
    ):
        cases.append((shift, n, negate, block, dtype))
    for round_ in range(2):  # the second round runs every case from the cache
        for shift, n, negate, block, dtype in cases:
            src = storage[shift : shift + n]
            out = out_storage.to(dtype)[shift : shift + n].fill_(float("nan"))
            scale, offset = 2.0, 0.25  # exact products: no FMA-vs-two-roundings difference
            args = (out, src, n, scale, negate, offset)
            hits = cache.hits
            launcher.launch(_scale_kernel, (triton.cdiv(n, block),), *args, BLOCK=block, num_warps=4)
            if round_:
                assert cache.hits == hits + 1
            expected = src * scale + offset
            expected = (-expected if negate else expected).to(dtype)
            torch.testing.assert_close(out, expected, rtol=0, atol=0)
            # Triton's own path, same arguments: the binary the cache holds for this key
            knobs = launcher._compile_knobs(triton.knobs)
            key = cache.key(torch.cuda.current_device(), knobs, args, {"BLOCK": block, "num_warps": 4})
            assert _scale_kernel[(triton.cdiv(n, block),)](*args, BLOCK=block, num_warps=4) is cache.compiled[key][0]
