"""One training process's view of a torchrun job (or of a single process): rank, device, and the few
collectives the trainers use (gradient averaging, broadcasts, gathers, a shared stop flag).

Backend: nccl on GPUs, gloo on CPUs. The trainers average gradients with one all-reduce per phase
(see :mod:`.loop`), so a job of any size computes what one process with the global batch would.
"""
from __future__ import annotations

import os

import torch


class Dist:
    """torchrun's environment, or a single process."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.device = torch.device("cpu")
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_grads(self, module: torch.nn.Module) -> None:
        if not self.enabled:
            return
        params = [p for p in module.parameters() if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.flatten() for p in params])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        torch.nan_to_num_(flat, 0, 1e5, -1e5)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p))

    def broadcast_module(self, module: torch.nn.Module) -> None:
        if self.enabled:
            for t in list(module.parameters()) + list(module.buffers()):
                torch.distributed.broadcast(t.data, src=0)

    def gather_object(self, obj):
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.enabled:
            torch.distributed.barrier()

    def any_flag(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t)
        return bool(t.item() > 0)

    def close(self):
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
