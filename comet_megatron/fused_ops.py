"""Launchers of the fused kernels over explicit tensors and peer-pointer tables.

Kept free of process groups and symmetric-memory handles so that the interpreter tests can drive them
with simulated ranks (CPU tensors, tables of their addresses) in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from comet_megatron.fused_plan import HostPlan
from comet_megatron.kernels.activation_backward import activation_backward_kernel
from comet_megatron.kernels.dispatch_dgrad import dispatch_dgrad_kernel
from comet_megatron.kernels.dispatch_fc1 import dispatch_fc1_kernel
from comet_megatron.kernels.fc2_combine import combine_reduce_kernel, fc2_combine_kernel
from comet_megatron.kernels.sync import PEER_BASE_ALIGNMENT
from comet_megatron.launcher import launch
from comet_megatron.triton_support import interpreting, tma_descriptors
from comet_megatron.tuning import KernelConfig

ACTIVATIONS = {"silu": 0, "gelu": 1}
_ACT_BWD_ROWS, _ACT_BWD_COLS = 4, 512  # activation_backward_kernel: rows per program, columns per step
DEBUG_MAX_SPINS = 1 << 26


def _tma_descriptors(a: torch.Tensor, b: torch.Tensor, a_block: list[int], b_block: list[int]):
    """Host TMA descriptors for A ``[rows, K]`` and B ``[N, K]``, or ``None`` where TMA cannot be used (the
    interpreter: these kernels' TMA paths run compiled only; see :func:`tma_capable` for the rest)."""
    if interpreting():
        return None
    return tma_descriptors((a, a_block), (b, b_block))


@dataclass
class RankViews:
    """One rank's local buffers and the peer tables of the symmetric ones.

    Attributes:
        recv: ``bf16 [R_cap, H]`` expert-major receive buffer (symmetric).
        recv_probs: ``fp32 [R_cap]`` (symmetric).
        flags: ``int32 [E_local * MAX_T * ep + ep]`` layer0 flags then layer1 done flags (symmetric).
        combine: ``bf16 [2, S_cap, H]`` combine slots, double-buffered by epoch parity (symmetric).
        combine_probs: ``fp32 [2, S_cap]`` the router-probability gradient of every combine slot, pushed with the
            backward's fc1 data-gradient rows (symmetric, same parity).
        counter: ``int32 [1]`` local completion counter of the fc2 grid.
        queues: ``int32 [3]`` the dispatch kernels' task counters (push units, GEMM tiles, programs done), zero
            between launches (each launch's last program resets them).
        error: ``int32 [1]`` set by a debug-mode spin that gave up.
        *_table: ``int64 [ep]`` base addresses of every rank's copy of the buffer.
    """

    recv: torch.Tensor
    recv_probs: torch.Tensor
    flags: torch.Tensor
    combine: torch.Tensor
    combine_probs: torch.Tensor
    counter: torch.Tensor
    queues: torch.Tensor
    error: torch.Tensor
    recv_table: torch.Tensor
    recv_probs_table: torch.Tensor
    flags_table: torch.Tensor
    combine_table: torch.Tensor
    combine_probs_table: torch.Tensor
    max_tiles_per_expert: int

    def done_offset(self, num_local_experts: int, ep: int) -> int:
        return num_local_experts * self.max_tiles_per_expert * ep

    # Rows are addressed with the call's hidden size over flat storage (one workspace serves layers of any
    # hidden size up to its capacity; every rank addresses its peers the same way).
    def received(self, rows: int, hidden: int) -> torch.Tensor:
        return self.recv.view(-1)[: rows * hidden].view(rows, hidden)

    def combine_offset(self, epoch: int) -> int:
        return (epoch % 2) * (self.combine.numel() // 2)

    def combine_slots(self, epoch: int, slots: int, hidden: int) -> torch.Tensor:
        start = self.combine_offset(epoch)
        return self.combine.view(-1)[start : start + slots * hidden].view(slots, hidden)

    def combine_probs_offset(self, epoch: int) -> int:
        return (epoch % 2) * self.combine_probs.shape[1]

    def combine_probs_slots(self, epoch: int, slots: int) -> torch.Tensor:
        """``fp32 [slots]``: the probability gradients pushed to this rank's slots in ``epoch``."""
        start = self.combine_probs_offset(epoch)
        return self.combine_probs.view(-1)[start : start + slots]


def peer_table(addresses: list[int], device: torch.device | str, name: str) -> torch.Tensor:
    """``int64 [ws]``: every rank's base address of symmetric buffer ``name``, after checking that each is
    ``PEER_BASE_ALIGNMENT``-byte aligned, as the kernels assume of them (``kernels/sync.py: peer_pointer``)."""
    misaligned = [hex(a) for a in addresses if a % PEER_BASE_ALIGNMENT]
    if misaligned:
        raise RuntimeError(
            f"comet: the {name} buffer of some rank starts at {', '.join(misaligned)}, not at a multiple of "
            f"{PEER_BASE_ALIGNMENT} bytes as the fused kernels' 16-byte stores into it need; the symmetric-memory "
            "allocator returned an unaligned buffer (report this with the torch and NVSHMEM versions)"
        )
    return torch.tensor(addresses, dtype=torch.int64, device=device)


def single_process_views(
    ws: int,
    *,
    recv_capacity: int,
    slot_capacity: int,
    hidden: int,
    num_local_experts: int,
    max_tiles_per_expert: int,
    device: torch.device | str = "cpu",
) -> list[RankViews]:
    """``ws`` simulated ranks' workspaces in one process: ordinary NaN-poisoned tensors on ``device`` whose
    peer tables hold each other's addresses, so a kernel "on rank r" writes into another rank's buffers exactly
    as it would over NVLink. For the interpreter tests (CPU) and single-GPU kernel benchmarks; the layer's own
    workspaces are symmetric memory (:class:`comet_megatron.buffer.CometBuffer`)."""
    nan = float("nan")
    flags_len = num_local_experts * max_tiles_per_expert * ws + ws
    bufs = {
        "recv": [torch.full((recv_capacity, hidden), nan, dtype=torch.bfloat16, device=device) for _ in range(ws)],
        "recv_probs": [torch.full((recv_capacity,), nan, device=device) for _ in range(ws)],
        "flags": [torch.zeros(flags_len, dtype=torch.int32, device=device) for _ in range(ws)],
        "combine": [
            torch.full((2, slot_capacity, hidden), nan, dtype=torch.bfloat16, device=device) for _ in range(ws)
        ],
        "combine_probs": [torch.full((2, slot_capacity), nan, device=device) for _ in range(ws)],
    }
    tables = {k: peer_table([t.data_ptr() for t in v], device, k) for k, v in bufs.items()}
    return [
        RankViews(
            **{k: v[r] for k, v in bufs.items()},
            counter=torch.zeros(1, dtype=torch.int32, device=device),
            queues=torch.zeros(3, dtype=torch.int32, device=device),
            error=torch.zeros(1, dtype=torch.int32, device=device),
            recv_table=tables["recv"],
            recv_probs_table=tables["recv_probs"],
            flags_table=tables["flags"],
            combine_table=tables["combine"],
            combine_probs_table=tables["combine_probs"],
            max_tiles_per_expert=max_tiles_per_expert,
        )
        for r in range(ws)
    ]


def _dispatch_meta(views, config: KernelConfig, ep, gated, activation, mode, debug, use_tma, backward: bool) -> dict:
    """Compile-time parameters and launch options shared by the forward and backward dispatch kernels; each takes
    its own GEMM tile width and push-program count from ``config`` (``backward``: the fc2 data-gradient's)."""
    return dict(
        WS=ep,
        MAX_T=views.max_tiles_per_expert,
        N_COMM=config.dgrad_comm_programs if backward else config.comm_programs,
        GATED=gated,
        ACT=ACTIVATIONS[activation],
        MODE=mode,
        BM=config.block_m,
        BN=config.dgrad_block_n if backward else config.fc1_block_n,
        BK=config.block_k,
        GROUP_M=config.group_m,
        ROWS=config.comm_rows,
        BH=config.comm_block_h,
        USE_TMA=use_tma,
        DEBUG=debug,
        MAX_SPINS=DEBUG_MAX_SPINS,
        UPCAST=interpreting(),
        PEER_ALIGNED=config.aligned_peer_stores,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )


def dispatch_fc1(
    views: RankViews,
    plan: HostPlan,
    tables: dict[str, torch.Tensor],
    tokens: torch.Tensor,
    token_of_slot: torch.Tensor,
    probs_of_slot: torch.Tensor,
    w1: torch.Tensor,
    *,
    epoch: int,
    ep_rank: int,
    ep: int,
    gated: bool,
    activation: str,
    config: KernelConfig,
    grid: int,
    mode: int = 0,
    save_preact: bool = False,
    debug: bool = False,
    act_out: torch.Tensor | None = None,
    preact_out: torch.Tensor | None = None,
    rows: int | None = None,
    guarded: bool = False,
):
    """layer0 on this rank; returns ``(act [R, F] bf16, preact [R, (2)F] bf16 or None)``.

    ``rows``: the outputs' rows, ``plan.recv_rows`` unless given (``plan`` may then be ``None``). ``guarded``: an
    early launch before the host has read the counts, with ``rows`` a guess — a no-op unless ``tables``' verdict
    (:func:`comet_megatron.fused_plan.device_plan` with ``rows_limit=rows``) says everything fits."""
    num_local_experts, fc1_out, hidden = w1.shape
    ffn = fc1_out // 2 if gated else fc1_out
    if rows is None:
        rows = plan.recv_rows
    if rows > views.recv.shape[0]:
        raise ValueError(f"dispatch_fc1: {rows} rows exceed the workspace's {views.recv.shape[0]} receive rows")
    act = act_out if act_out is not None else torch.empty(rows, ffn, dtype=torch.bfloat16, device=tokens.device)
    preact = preact_out
    if save_preact and preact is None:
        preact = torch.empty(rows, fc1_out, dtype=torch.bfloat16, device=tokens.device)
    descriptors = _tma_descriptors(
        views.received(rows, hidden),
        w1.view(-1, hidden),
        [config.block_m, config.block_k],
        [config.fc1_block_n, config.block_k],
    )
    a_desc, b_desc = descriptors or (views.recv, w1)  # the pointer path ignores the descriptor arguments
    launch(
        dispatch_fc1_kernel,
        (grid,),
        tokens,
        token_of_slot,
        probs_of_slot,
        tables["units"],
        tables["sizes"],
        views.recv_table,
        views.recv_probs_table,
        views.flags_table,
        views.recv,
        views.recv_probs,
        views.flags,
        a_desc,
        w1,
        b_desc,
        act,
        preact if preact is not None else act,
        tables["mtiles"],
        tables["src_table"],
        views.queues,
        views.error,
        epoch,
        ep_rank,
        hidden,
        ffn,
        SAVE_PREACT=save_preact,
        **_dispatch_meta(views, config, ep, gated, activation, mode, debug, descriptors is not None, backward=False),
        GUARDED=guarded,
    )
    return act, preact


def fc2_combine(
    views: RankViews,
    plan: HostPlan,
    tables: dict[str, torch.Tensor],
    act: torch.Tensor,
    w2: torch.Tensor,
    *,
    epoch: int,
    ep_rank: int,
    ep: int,
    config: KernelConfig,
    grid: int,
    weight_kn: bool = False,
    push_probs: torch.Tensor | None = None,
):
    """layer1 on this rank: ``act @ W[e]`` per expert and the push of every row to its token owner's slot.

    ``w2`` is ``[E, N, K]`` (fc2: ``[E, H, F]``), or ``[E, K, N]`` with ``weight_kn`` (the backward's fc1
    data-gradient multiplies by fc1's ``[E, 2F, H]``). ``push_probs``: ``fp32 [R]`` expert-major values (the
    router-probability gradients of the rows) pushed to the same owner slots, in the owners'
    ``combine_probs_slots(epoch, ...)``.
    """
    if push_probs is not None and (
        push_probs.dtype != torch.float32 or push_probs.shape != (act.shape[0],) or not push_probs.is_contiguous()
    ):
        raise ValueError(
            f"fc2_combine: push_probs must be a contiguous fp32 [{act.shape[0]}] tensor (one value per row of act), "
            f"got {push_probs.dtype} {tuple(push_probs.shape)}"
        )
    if weight_kn:
        num_local_experts, k_dim, hidden = w2.shape
        b_block = [config.block_k, config.fc2_block_n]
    else:
        num_local_experts, hidden, k_dim = w2.shape
        b_block = [config.fc2_block_n, config.block_k]
    descriptors = _tma_descriptors(act, w2.view(-1, w2.shape[-1]), [config.block_m, config.block_k], b_block)
    a_desc, b_desc = descriptors or (act, w2)
    launch(
        fc2_combine_kernel,
        (grid,),
        act,
        a_desc,
        w2,
        b_desc,
        tables["mtiles"],
        tables["sizes"],
        tables["src_table"],
        tables["src_first_slot"],
        views.combine_table,
        views.combine_offset(epoch),
        views.flags_table,
        views.done_offset(num_local_experts, ep),
        views.counter,
        act if push_probs is None else push_probs,  # not read without PUSH_PROBS
        views.combine_probs_table,
        views.combine_probs_offset(epoch),
        epoch,
        ep_rank,
        hidden,
        k_dim,
        WS=ep,
        BM=config.block_m,
        BN=config.fc2_block_n,
        BK=config.block_k,
        GROUP_M=config.group_m,
        USE_TMA=descriptors is not None,
        W_KN=weight_kn,
        UPCAST=interpreting(),
        EPI_SPLIT=config.epilogue_split,
        FLATTEN=config.fc2_flatten,
        PUSH_PROBS=push_probs is not None,
        PEER_ALIGNED=config.aligned_peer_stores,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )


def dispatch_dgrad(
    views: RankViews,
    plan: HostPlan,
    tables: dict[str, torch.Tensor],
    grad_out: torch.Tensor,
    token_of_slot: torch.Tensor,
    probs_of_slot: torch.Tensor,
    w2: torch.Tensor,
    preact: torch.Tensor,
    *,
    epoch: int,
    ep_rank: int,
    ep: int,
    gated: bool,
    activation: str,
    config: KernelConfig,
    grid: int,
    mode: int = 0,
    debug: bool = False,
    fc2_input: torch.Tensor | None = None,
):
    """Backward step 1 on this rank: push ``grad_out`` rows like the forward pushed tokens, ``dY @ W2`` and the
    activation backward. Returns ``(d_fc1 [R, (2)F] bf16, d_prob [R] fp32)``; ``dY`` stays readable as
    ``views.received(R, H)`` until the next push into this workspace.

    ``fc2_input``: ``[R, F]`` bf16, filled with the fc2 input ``act·p`` (the fc2 weight gradient's operand) by the
    elementwise activation-backward pass from the loads it makes anyway; only without
    ``config.dgrad_fused_activation`` (the epilogue path does not produce it)."""
    if fc2_input is not None and config.dgrad_fused_activation:
        raise ValueError("dispatch_dgrad: fc2_input is produced only with dgrad_fused_activation=False")
    if fc2_input is not None and (
        fc2_input.shape != (plan.recv_rows, w2.shape[2])
        or fc2_input.dtype != torch.bfloat16
        or not fc2_input.is_contiguous()
    ):
        raise ValueError(
            f"dispatch_dgrad: fc2_input must be a contiguous bf16 [{plan.recv_rows}, {w2.shape[2]}] tensor, got "
            f"{fc2_input.dtype} {tuple(fc2_input.shape)}"
        )
    num_local_experts, hidden, ffn = w2.shape
    rows = plan.recv_rows
    d_fc1 = torch.empty(rows, preact.shape[1], dtype=torch.bfloat16, device=grad_out.device)
    # the fused epilogue adds every N-tile's share atomically; the elementwise kernel stores every row
    d_prob = (torch.zeros if config.dgrad_fused_activation else torch.empty)(
        rows, dtype=torch.float32, device=grad_out.device
    )
    descriptors = _tma_descriptors(
        views.received(rows, hidden),
        w2.view(-1, ffn),
        [config.block_m, config.block_k],
        [config.block_k, config.dgrad_block_n],
    )
    a_desc, b_desc = descriptors or (views.recv, w2)
    launch(
        dispatch_dgrad_kernel,
        (grid,),
        grad_out,
        token_of_slot,
        probs_of_slot,
        tables["units"],
        tables["sizes"],
        views.recv_table,
        views.recv_probs_table,
        views.flags_table,
        views.recv,
        views.recv_probs,
        views.flags,
        a_desc,
        w2,
        b_desc,
        preact,
        d_fc1,
        d_prob,
        tables["mtiles"],
        tables["src_table"],
        views.queues,
        views.error,
        epoch,
        ep_rank,
        hidden,
        ffn,
        EPI_SPLIT=config.epilogue_split,
        FUSE_ACT=config.dgrad_fused_activation,
        **_dispatch_meta(views, config, ep, gated, activation, mode, debug, descriptors is not None, backward=True),
    )
    if not config.dgrad_fused_activation and mode != 1 and rows:
        launch(
            activation_backward_kernel,
            (triton.cdiv(rows, _ACT_BWD_ROWS),),
            d_fc1,
            preact,
            views.recv_probs,
            d_prob,
            d_fc1 if fc2_input is None else fc2_input,  # not written without STORE_FC2_INPUT
            rows,
            ffn,
            GATED=gated,
            ACT=ACTIVATIONS[activation],
            STORE_FC2_INPUT=fc2_input is not None,
            BR=_ACT_BWD_ROWS,
            BF=_ACT_BWD_COLS,
            num_warps=4,
        )
    return d_fc1, d_prob


def combine_reduce(
    views: RankViews,
    slot_of_token: torch.Tensor,
    num_local_experts: int,
    hidden: int,
    *,
    epoch: int,
    ep: int,
    topk: int,
    debug: bool = False,
    block_t: int = 32,
    block_h: int = 256,
    out: torch.Tensor | None = None,
    max_spins: int = DEBUG_MAX_SPINS,
):
    """Top-k sum at the token owner: ``[T, H]`` bf16."""
    tokens = slot_of_token.shape[0]
    if out is None:
        out = torch.empty(tokens, hidden, dtype=torch.bfloat16, device=slot_of_token.device)
    grid = (max(triton.cdiv(tokens, block_t), 1), triton.cdiv(hidden, block_h))
    launch(
        combine_reduce_kernel,
        grid,
        views.combine_slots(epoch, tokens * topk, hidden),
        slot_of_token,
        out,
        views.flags,
        views.done_offset(num_local_experts, ep),
        views.error,
        epoch,
        tokens,
        hidden,
        TOPK=topk,
        WS=ep,
        BT=block_t,
        BH=block_h,
        DEBUG=debug,
        MAX_SPINS=max_spins,
        num_warps=4,
    )
    return out
