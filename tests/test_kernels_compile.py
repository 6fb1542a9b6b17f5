"""The fused kernels compile for Hopper (sm_90) on a machine without a GPU.

Triton's wheel carries ptxas, so the whole path Triton -> TTGIR -> PTX -> cubin runs here: type and
layout errors that the interpreter cannot see show up in CI. The PTX must use Hopper's warpgroup MMA.
"""

from __future__ import annotations

import re

import pytest

triton = pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from comet_megatron.kernels.activation_backward import activation_backward_kernel  # noqa: E402
from comet_megatron.kernels.dispatch_dgrad import dispatch_dgrad_kernel  # noqa: E402
from comet_megatron.kernels.dispatch_fc1 import dispatch_fc1_kernel  # noqa: E402
from comet_megatron.kernels.fc2_combine import combine_reduce_kernel, fc2_combine_kernel  # noqa: E402
from comet_megatron.tuning import KernelConfig  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 32)

# the default, and the paths the default does not take (TMA path only)
CONFIGS = {
    "default": KernelConfig(),
    # 256-wide tiles (the default) with one pipeline stage less: what the tuner's (128, 3) candidates compile
    "three_stages": KernelConfig(num_stages=3),
    "fused_activation_whole_epilogue": KernelConfig(dgrad_fused_activation=True, epilogue_split=1, dgrad_block_n=128),
    "fused_activation_split_epilogue": KernelConfig(dgrad_fused_activation=True),
    # fc2 ⊕ combine's tile loop apart from its K loop (the default fuses them: the pipeline runs across tiles), and
    # 128-wide fc2 tiles with the fused loop (the default before session 24 below ffn 8192)
    "fc2_tile_loop_apart": KernelConfig(fc2_flatten=False),
    "fc2_narrow_flattened": KernelConfig(fc2_block_n=128),
    # the pushes into peers' buffers without the 16-byte alignment promise (2-byte stores)
    "unaligned_peer_stores": KernelConfig(aligned_peer_stores=False),
    # one warpgroup per program, two programs per SM: each must fit in half an SM (shared memory, registers)
    "two_programs_per_sm": KernelConfig(
        fc1_block_n=64, fc2_block_n=128, dgrad_block_n=128, num_warps=4, num_stages=3, programs_per_sm=2
    ),
}
# pointer path (sizes the launcher does not specialize as divisible by 16 cannot use TMA), aligned and not
CASES = [("default", False, True), ("default", False, False)] + [(name, True, True) for name in CONFIGS]


def _assert_fits_on_an_sm(compiled, cfg: KernelConfig) -> None:
    # Hopper: 228 KB of shared memory per SM, of which 1 KB is reserved per resident program. Registers cannot
    # stop two 4-warp programs (255 x 128 x 2 < 64 K), so shared memory decides whether programs_per_sm holds.
    assert (compiled.metadata.shared + 1024) * cfg.programs_per_sm <= 228 * 1024, compiled.metadata.shared


def _assert_row_stores_are_16_bytes(compiled, aligned: bool, cfg: KernelConfig) -> None:
    """Rows leave in 16-byte stores once the launch has specialized the tensors and sizes as 16-aligned, the pushes
    into peers' buffers too: their base addresses come from a table, which ``peer_pointer`` marks aligned
    (``aligned_peer_stores``; an address loaded from memory is otherwise assumed unaligned, and every bf16 store
    through it then moves 2 bytes)."""
    if aligned:
        ptx = compiled.asm["ptx"]
        assert ("st.global.b16" in ptx) != cfg.aligned_peer_stores
        assert "st.global.v4" in ptx or not cfg.aligned_peer_stores


def _compile(kernel, signature: dict, constexprs: dict, num_warps: int, num_stages: int, aligned: bool = True):
    sig = dict(signature)
    sig.update({name: "constexpr" for name in constexprs})
    # what Triton's launcher specializes at run time: 16-byte-aligned tensors and sizes divisible by 16 (without
    # it the epilogues compile to scalar 2-byte accesses and spill, which the GPU never runs)
    sizes = ("H", "F", "T", "OUT", "IN", "stride_dy", "stride_x", "combine_offset", "combine_probs_offset")
    divisible = [n for n, ty in signature.items() if aligned and (ty.startswith("*") or n in sizes)]
    attrs = {(kernel.arg_names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    src = ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=HOPPER, options={"num_warps": num_warps, "num_stages": num_stages})


@pytest.mark.parametrize("config_name,use_tma,aligned", CASES)
@pytest.mark.parametrize("gated", [True, False])
def test_dispatch_fc1_compiles_for_sm90(gated, config_name, use_tma, aligned):
    cfg = CONFIGS[config_name]
    ptrs = [
        "x_ptr",
        "token_of_slot_ptr",
        "probs_of_slot_ptr",
        "units_ptr",
        "sizes_ptr",
        "recv_table_ptr",
        "recv_probs_table_ptr",
        "flags_table_ptr",
        "recv_ptr",
        "recv_probs_ptr",
        "flags_ptr",
        "w1_ptr",
        "act_ptr",
        "preact_ptr",
        "mtiles_ptr",
        "src_table_ptr",
        "queues_ptr",
        "error_ptr",
        "a_desc",
        "b_desc",
    ]
    types = {
        "x_ptr": "*bf16",
        "token_of_slot_ptr": "*i64",
        "probs_of_slot_ptr": "*fp32",
        "units_ptr": "*i32",
        "sizes_ptr": "*i32",
        "recv_table_ptr": "*i64",
        "recv_probs_table_ptr": "*i64",
        "flags_table_ptr": "*i64",
        "recv_ptr": "*bf16",
        "recv_probs_ptr": "*fp32",
        "flags_ptr": "*i32",
        "w1_ptr": "*bf16",
        "act_ptr": "*bf16",
        "preact_ptr": "*bf16",
        "mtiles_ptr": "*i32",
        "src_table_ptr": "*i32",
        "queues_ptr": "*i32",
        "error_ptr": "*i32",
        "a_desc": f"tensordesc<bf16[{cfg.block_m},{cfg.block_k}]>" if use_tma else "*bf16",
        "b_desc": f"tensordesc<bf16[{cfg.fc1_block_n},{cfg.block_k}]>" if use_tma else "*bf16",
    }
    sig = {p: types[p] for p in ptrs}
    sig.update({n: "i32" for n in ("epoch", "my_rank", "H", "F")})
    constexprs = dict(
        WS=2,
        MAX_T=256,
        N_COMM=16,
        GATED=gated,
        ACT=0,
        SAVE_PREACT=True,
        MODE=0,
        BM=cfg.block_m,
        BN=cfg.fc1_block_n,
        GROUP_M=cfg.group_m,
        BK=cfg.block_k,
        ROWS=cfg.comm_rows,
        BH=cfg.comm_block_h,
        DEBUG=False,
        MAX_SPINS=1 << 20,
        UPCAST=False,
        PEER_ALIGNED=cfg.aligned_peer_stores,
        USE_TMA=use_tma,
        GUARDED=gated,  # the early launch's guard (a verdict read; both settings compiled over the parametrization)
    )
    compiled = _compile(dispatch_fc1_kernel, sig, constexprs, cfg.num_warps, cfg.num_stages, aligned)
    assert "wgmma" in compiled.asm["ptx"]
    _assert_row_stores_are_16_bytes(compiled, aligned, cfg)
    assert ("cp.async.bulk.tensor" in compiled.asm["ptx"]) == use_tma
    assert ("fence.proxy.async.global" in compiled.asm["ptx"]) == use_tma
    _assert_fits_on_an_sm(compiled, cfg)


@pytest.mark.parametrize("config_name,use_tma,aligned", CASES)
@pytest.mark.parametrize("gated", [True, False])
def test_dispatch_dgrad_compiles_for_sm90(gated, config_name, use_tma, aligned):
    cfg = CONFIGS[config_name]
    sig = {
        "grad_out_ptr": "*bf16",
        "token_of_slot_ptr": "*i64",
        "probs_of_slot_ptr": "*fp32",
        "units_ptr": "*i32",
        "sizes_ptr": "*i32",
        "recv_table_ptr": "*i64",
        "recv_probs_table_ptr": "*i64",
        "flags_table_ptr": "*i64",
        "recv_ptr": "*bf16",
        "recv_probs_ptr": "*fp32",
        "flags_ptr": "*i32",
        "a_desc": f"tensordesc<bf16[{cfg.block_m},{cfg.block_k}]>" if use_tma else "*bf16",
        "w2_ptr": "*bf16",
        "b_desc": f"tensordesc<bf16[{cfg.block_k},{cfg.dgrad_block_n}]>" if use_tma else "*bf16",
        "preact_ptr": "*bf16",
        "d_fc1_ptr": "*bf16",
        "d_prob_ptr": "*fp32",
        "mtiles_ptr": "*i32",
        "src_table_ptr": "*i32",
        "queues_ptr": "*i32",
        "error_ptr": "*i32",
        "epoch": "i32",
        "my_rank": "i32",
        "H": "i32",
        "F": "i32",
    }
    constexprs = dict(
        WS=2,
        MAX_T=256,
        N_COMM=16,
        GATED=gated,
        ACT=0,
        MODE=0,
        BM=cfg.block_m,
        BN=cfg.dgrad_block_n,
        BK=cfg.block_k,
        GROUP_M=cfg.group_m,
        ROWS=cfg.comm_rows,
        BH=cfg.comm_block_h,
        USE_TMA=use_tma,
        DEBUG=False,
        MAX_SPINS=1 << 20,
        UPCAST=False,
        PEER_ALIGNED=cfg.aligned_peer_stores,
        EPI_SPLIT=cfg.epilogue_split,
        FUSE_ACT=cfg.dgrad_fused_activation,
    )
    compiled = _compile(dispatch_dgrad_kernel, sig, constexprs, cfg.num_warps, cfg.num_stages, aligned)
    assert "wgmma" in compiled.asm["ptx"]
    _assert_row_stores_are_16_bytes(compiled, aligned, cfg)
    assert ("cp.async.bulk.tensor" in compiled.asm["ptx"]) == use_tma
    _assert_fits_on_an_sm(compiled, cfg)


@pytest.mark.parametrize("weight_kn", [False, True])
@pytest.mark.parametrize("config_name,use_tma,aligned", CASES)
def test_fc2_combine_and_reduce_compile_for_sm90(config_name, use_tma, aligned, weight_kn):
    cfg = CONFIGS[config_name]
    sig = {
        "act_ptr": "*bf16",
        "a_desc": f"tensordesc<bf16[{cfg.block_m},{cfg.block_k}]>" if use_tma else "*bf16",
        "w2_ptr": "*bf16",
        "b_desc": (
            f"tensordesc<bf16[{cfg.block_k},{cfg.fc2_block_n}]>"
            if weight_kn
            else f"tensordesc<bf16[{cfg.fc2_block_n},{cfg.block_k}]>"
        )
        if use_tma
        else "*bf16",
        "mtiles_ptr": "*i32",
        "sizes_ptr": "*i32",
        "src_table_ptr": "*i32",
        "src_first_slot_ptr": "*i32",
        "combine_table_ptr": "*i64",
        "combine_offset": "i32",
        "flags_table_ptr": "*i64",
        "done_offset": "i32",
        "counter_ptr": "*i32",
        "d_prob_ptr": "*fp32",
        "combine_probs_table_ptr": "*i64",
        "combine_probs_offset": "i32",
        "epoch": "i32",
        "my_rank": "i32",
        "H": "i32",
        "F": "i32",
    }
    constexprs = dict(
        WS=2,
        BM=cfg.block_m,
        BN=cfg.fc2_block_n,
        BK=cfg.block_k,
        GROUP_M=cfg.group_m,
        USE_TMA=use_tma,
        W_KN=weight_kn,
        UPCAST=False,
        PEER_ALIGNED=cfg.aligned_peer_stores,
        EPI_SPLIT=cfg.epilogue_split,
        FLATTEN=cfg.fc2_flatten,
        PUSH_PROBS=weight_kn,  # the backward's fc1 data-gradient pushes the probability gradients too
    )
    compiled = _compile(fc2_combine_kernel, sig, constexprs, cfg.num_warps, cfg.num_stages, aligned)
    assert "wgmma" in compiled.asm["ptx"]
    _assert_row_stores_are_16_bytes(compiled, aligned, cfg)
    _assert_fits_on_an_sm(compiled, cfg)
    sig = {
        "combine_ptr": "*bf16",
        "slot_of_token_ptr": "*i64",
        "out_ptr": "*bf16",
        "flags_ptr": "*i32",
        "done_offset": "i32",
        "error_ptr": "*i32",
        "epoch": "i32",
        "T": "i32",
        "H": "i32",
    }
    constexprs = dict(TOPK=2, WS=2, BT=32, BH=256, DEBUG=True, MAX_SPINS=1 << 20)
    _compile(combine_reduce_kernel, sig, constexprs, 4, 1)


@pytest.mark.parametrize("gated", [True, False])
def test_activation_backward_kernel_compiles_for_sm90(gated):
    sig = {"d_fc1_ptr": "*bf16", "preact_ptr": "*bf16", "probs_ptr": "*fp32", "d_prob_ptr": "*fp32"}
    sig.update({"fc2_input_ptr": "*bf16", "R": "i32", "F": "i32"})
    stores = {}
    for store_fc2_input in (False, True):
        constexprs = dict(GATED=gated, ACT=0, STORE_FC2_INPUT=store_fc2_input, BR=4, BF=512)
        ptx = _compile(activation_backward_kernel, sig, constexprs, 4, 1).asm["ptx"]
        assert "ld.global.v4" in ptx  # 16-byte accesses along the columns
        stores[store_fc2_input] = ptx.count("st.global.v4")
    # d_fc1's halves (one per half when gated), plus as many again for the fc2 input when it is stored
    halves = 2 if gated else 1
    assert stores[True] == stores[False] * (halves + 1) // halves, stores


@pytest.mark.parametrize(
    "ep,e_local,counts_type,own_first",
    [(1, 8, "*i64", True), (2, 4, "*i64", True), (2, 4, "*i64", False), (8, 32, "*i32", False)],
)
def test_plan_kernel_compiles_for_sm90(ep, e_local, counts_type, own_first):
    from comet_megatron.kernels.plan import build_plan_kernel

    sig = {"counts_ptr": counts_type}
    sig.update({n: "*i32" for n in ("units_ptr", "mtiles_ptr", "src_table_ptr", "src_first_slot_ptr")})
    sig.update({"tokens_per_expert_ptr": "*i32", "sizes_ptr": "*i32", "me": "i32", "units_cap": "i32"})
    sig.update({"mtiles_cap": "i32", "rows_limit": "i32", "tokens_limit": "i32", "tiles_limit": "i32", "topk": "i32"})
    sig.update({"EP": "i32", "EL": "i32", "BM": "i32"})
    constexprs = dict(
        EP_P2=triton.next_power_of_2(ep),
        E_P2=triton.next_power_of_2(ep * e_local),
        BLOCK=32,
        OWN_FIRST=own_first,  # KernelConfig.own_rows_first
    )
    _compile(build_plan_kernel, sig, constexprs, 4, 1)


@pytest.mark.parametrize("experts", [8, 60, 256])
def test_routing_kernels_compile_for_sm90(experts):
    from comet_megatron.kernels.routing import routing_block_counts_kernel, routing_slots_kernel

    e_p2 = triton.next_power_of_2(experts)
    blocks = dict(BT=4096 // e_p2, E_P2=e_p2)
    sizes = {"T": "i32", "E": "i32"}
    _compile(routing_block_counts_kernel, {"map_ptr": "*u8", "block_counts_ptr": "*i32", **sizes}, blocks, 4, 1)
    sig = {"map_ptr": "*u8", "block_counts_ptr": "*i32"}
    sig.update({n: "*i64" for n in ("token_of_slot_ptr", "expert_of_slot_ptr", "flat_index_ptr")})
    sig.update({"slot_of_token_ptr": "*i64", "tokens_per_expert_ptr": "*i64", **sizes, "K": "i32", "NB": "i32"})
    _compile(routing_slots_kernel, sig, dict(blocks, CB=4096 // e_p2), 4, 1)


@pytest.mark.parametrize("use_tma,reduce_by_tma", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("main_grad_type", ["*fp32", "*bf16"])
@pytest.mark.parametrize("prefetch_grad", [0, 1, 2])
def test_wgrad_accumulate_kernel_compiles_for_sm90(main_grad_type, use_tma, reduce_by_tma, prefetch_grad):
    if reduce_by_tma and main_grad_type != "*fp32":
        pytest.skip("the launcher reduces by TMA into an fp32 main_grad only")
    from comet_megatron.kernels.wgrad import grouped_wgrad_accumulate_kernel
    from comet_megatron.ops.grouped_linear import WGRAD_KERNEL_CONFIG

    cfg = dict(WGRAD_KERNEL_CONFIG)
    num_warps, num_stages = cfg.pop("num_warps"), cfg.pop("num_stages")
    sig = {
        "dy_desc": f"tensordesc<bf16[{cfg['BK']},{cfg['BM']}]>" if use_tma else "*bf16",
        "x_desc": f"tensordesc<bf16[{cfg['BK']},{cfg['BN']}]>" if use_tma else "*bf16",
        "main_grad_desc": f"tensordesc<fp32[1,{cfg['BM']},{cfg['BN']}]>" if reduce_by_tma else main_grad_type,
        "dy_ptr": "*bf16",
        "x_ptr": "*bf16",
        "row_start_ptr": "*i64",
        "main_grad_ptr": main_grad_type,
    }
    sig.update({n: "i32" for n in ("OUT", "IN", "stride_dy", "stride_x")})
    constexprs = dict(cfg, UPCAST=False, USE_TMA=use_tma, REDUCE_BY_TMA=reduce_by_tma, PREFETCH_GRAD=prefetch_grad)
    ptx = _compile(grouped_wgrad_accumulate_kernel, sig, constexprs, num_warps, num_stages).asm["ptx"]
    assert ("prefetch.global.L2::evict_last" in ptx) == (prefetch_grad == 2)
    assert ("prefetch.global.L2 [" in ptx) == (prefetch_grad == 1)
    assert "wgmma.mma_async" in ptx  # Hopper's warpgroup MMA on the bf16 tiles
    assert ("cp.async.bulk.tensor" in ptx) == use_tma
    assert bool(re.search(r"cp\.reduce\.async\.bulk\.tensor\.\S*\.add", ptx)) == reduce_by_tma  # bulk reduce-add
