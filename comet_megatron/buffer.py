"""CometBuffer: one symmetric workspace per EP group, sized for the largest batch seen, grown on demand.

Holds, in symmetric memory (every rank can store into every other rank's copy over NVLink):
``recv`` (expert-major token rows, bf16), ``recv_probs`` (fp32), ``flags`` (int32: layer0's per
(expert, M-tile, source) flags, then layer1's per-source done flags), ``combine`` (bf16 top-k slots,
two copies selected by epoch parity) and ``combine_probs`` (fp32, one per slot and parity: the backward's
router-probability gradients); with one rank (EP=1), ordinary device memory. Growth is decided from
the counts matrix, which every rank holds identically, so all ranks grow together; growth ends with a
barrier before any peer can write.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from comet_megatron.fused_ops import RankViews, peer_table

MIN_BLOCK_M = 64  # flag arrays are sized for M-tiles at least this tall
_TOKEN_GRANULE = 256


def _symmetric_module():
    import torch.distributed._symmetric_memory as symm_mem

    return symm_mem


def _select_backend(symm_mem) -> str:
    """NVSHMEM when this torch build has it (its device API is the inter-node path's future)."""
    try:
        if symm_mem.is_nvshmem_available():
            symm_mem.set_backend("NVSHMEM")
    except (RuntimeError, AttributeError):
        pass  # already chosen by someone else in this process, or not switchable
    try:
        return str(symm_mem.get_backend(torch.device("cuda", torch.cuda.current_device())))
    except (RuntimeError, AttributeError):
        return "default"


class CometBuffer:
    """Symmetric workspace of one EP group on this process's GPU (use :meth:`for_group`)."""

    _by_group: dict[tuple[str, int], CometBuffer] = {}

    @classmethod
    def for_group(cls, group: dist.ProcessGroup) -> CometBuffer:
        key = (group.group_name, torch.cuda.current_device())
        if key not in cls._by_group:
            cls._by_group[key] = cls(group)
        return cls._by_group[key]

    def __init__(self, group: dist.ProcessGroup):
        self.group = group
        self.ep = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.tokens_capacity = 0
        self.hidden = 0
        self.num_local_experts = 0
        self.topk = 0
        self.epoch = 0
        self.views: RankViews | None = None
        self.symmetric_backend: str | None = None
        self._handles = []

    def next_epoch(self) -> int:
        """Call number; flags compare against it, so they never need resetting."""
        self.epoch += 1
        return self.epoch

    def fits(self, max_tokens_per_rank: int, hidden: int, num_local_experts: int, topk: int) -> bool:
        """Whether the current views serve a call of this shape without growing."""
        return (
            self.views is not None
            and max_tokens_per_rank <= self.tokens_capacity
            and hidden <= self.hidden
            and num_local_experts == self.num_local_experts
            and topk <= self.topk
        )

    def ensure(self, max_tokens_per_rank: int, hidden: int, num_local_experts: int, topk: int) -> RankViews:
        """Views large enough for this call; grows (collectively) when any rank brought more tokens."""
        if self.fits(max_tokens_per_rank, hidden, num_local_experts, topk):
            return self.views
        tokens = max(self.tokens_capacity, math.ceil(max(max_tokens_per_rank, 1) / _TOKEN_GRANULE) * _TOKEN_GRANULE)
        self._allocate(tokens, max(hidden, self.hidden), num_local_experts, max(topk, self.topk))
        return self.views

    def _allocate(self, tokens: int, hidden: int, num_local_experts: int, topk: int) -> None:
        symm_mem = _symmetric_module()
        if self.symmetric_backend is None:
            self.symmetric_backend = _select_backend(symm_mem)
        ep = self.ep
        recv_rows = ep * tokens * min(topk, num_local_experts)
        max_tiles = math.ceil(ep * tokens / MIN_BLOCK_M)
        flags_len = num_local_experts * max_tiles * ep + ep
        slots = tokens * topk

        group = self.group
        if dist.get_world_size(group) == dist.get_world_size():
            group = dist.group.WORLD  # same ranks; some symmetric-memory backends only know the world group

        needed = recv_rows * hidden * 2 + recv_rows * 4 + flags_len * 4 + 2 * slots * hidden * 2 + 2 * slots * 4

        def symmetric(shape, dtype, name):
            if ep == 1:  # no peer to share with (symmetric-memory rendezvous needs two ranks): plain device memory
                t = torch.empty(shape, dtype=dtype, device=self.device)
                return t, None, peer_table([t.data_ptr()], self.device, name)
            try:
                t = symm_mem.empty(shape, dtype=dtype, device=self.device)
            except RuntimeError as exc:  # NVSHMEM's heap is fixed at init (1 GiB unless the env says more)
                raise RuntimeError(
                    f"CometBuffer: could not allocate {needed / 2**30:.2f} GiB of symmetric memory for "
                    f"{tokens} tokens per rank, hidden {hidden}, top-{topk}, {num_local_experts} local experts "
                    f"(backend {self.symmetric_backend}): raise NVSHMEM_SYMMETRIC_SIZE (e.g. "
                    f"NVSHMEM_SYMMETRIC_SIZE={max(2, math.ceil(2 * needed / 2**30))}G) before the process starts"
                ) from exc
            handle = symm_mem.rendezvous(t, group.group_name)
            return t, handle, peer_table(list(handle.buffer_ptrs), self.device, name)

        recv, h1, recv_table = symmetric((recv_rows, hidden), torch.bfloat16, "recv")
        recv_probs, h2, probs_table = symmetric((recv_rows,), torch.float32, "recv_probs")
        flags, h3, flags_table = symmetric((flags_len,), torch.int32, "flags")
        combine, h4, combine_table = symmetric((2, slots, hidden), torch.bfloat16, "combine")
        combine_probs, h5, combine_probs_table = symmetric((2, slots), torch.float32, "combine_probs")
        flags.zero_()
        torch.cuda.synchronize(self.device)
        dist.barrier(group=self.group)  # every rank's flags are zero before anyone publishes
        self._handles = [h1, h2, h3, h4, h5]
        self.views = RankViews(
            recv=recv,
            recv_probs=recv_probs,
            flags=flags,
            combine=combine,
            combine_probs=combine_probs,
            counter=torch.zeros(1, dtype=torch.int32, device=self.device),
            queues=torch.zeros(3, dtype=torch.int32, device=self.device),
            error=torch.zeros(1, dtype=torch.int32, device=self.device),
            recv_table=recv_table,
            recv_probs_table=probs_table,
            flags_table=flags_table,
            combine_table=combine_table,
            combine_probs_table=combine_probs_table,
            max_tiles_per_expert=max_tiles,
        )
        self.tokens_capacity, self.hidden = tokens, hidden
        self.num_local_experts, self.topk = num_local_experts, topk
