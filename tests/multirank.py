"""Run a function on N spawned ranks (gloo on CPU, NCCL on GPU) and collect each rank's result.

``COMET_TEST_DEVICE=cuda`` selects NCCL and one GPU per rank (the device machine); otherwise ranks
run on the CPU over gloo with :mod:`tests.megatron_cpu` shims applied.
"""

from __future__ import annotations

import os
import socket
import tempfile
import traceback

import torch
import torch.multiprocessing as mp


def selected_device() -> str:
    return os.environ.get("COMET_TEST_DEVICE", "cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, result_dir, fn, args):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        CUDA_DEVICE_MAX_CONNECTIONS="1",
    )
    torch.set_num_threads(1)
    path = os.path.join(result_dir, f"rank{rank}.pt")
    try:
        import torch.distributed as dist

        if selected_device() == "cuda":
            torch.cuda.set_device(rank)
            dist.init_process_group("nccl", rank=rank, world_size=world_size, device_id=torch.device("cuda", rank))
        else:
            from tests.megatron_cpu import apply_cpu_shims

            apply_cpu_shims()
            dist.init_process_group("gloo", rank=rank, world_size=world_size)
        result = fn(rank, world_size, *args)
        torch.save({"ok": result}, path)
    except BaseException:
        torch.save({"error": traceback.format_exc()}, path)
        raise
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(world_size: int, fn, *args, timeout: float = 900.0):
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` fresh processes; return their results."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as result_dir:
        port = _free_port()
        procs = [
            ctx.Process(target=_entry, args=(r, world_size, port, result_dir, fn, args)) for r in range(world_size)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout)
        results, errors = [], []
        for r, p in enumerate(procs):
            if p.is_alive():
                p.kill()
                errors.append(f"rank {r} timed out after {timeout} s")
                continue
            path = os.path.join(result_dir, f"rank{r}.pt")
            if not os.path.exists(path):
                errors.append(f"rank {r} exited with code {p.exitcode} and no result")
                continue
            out = torch.load(path, weights_only=False)
            if "error" in out:
                errors.append(f"rank {r}:\n{out['error']}")
            else:
                results.append(out["ok"])
        if errors:
            raise RuntimeError("\n".join(errors))
        return results
