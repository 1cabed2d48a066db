"""One training loop for one process or many: torch.distributed under `torchrun`, nothing at all without it.

`torchrun --nproc_per_node N -m explorer train ...` starts N processes and gives each RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT in its environment; `Dist.from_env` reads them and joins the process
group (gloo on CPU, NCCL on CUDA). Without them, `Dist.from_env` is a world of one whose collectives are the
identity, so the single-process path runs exactly the code it always did (bit for bit).

What the ranks agree on, once per step in one all-reduce: the mean loss and whether any rank was asked to
stop (Ctrl-C / SIGTERM on one rank stops all of them after the same step); at the time-budget checkpoints, the
smallest step count any rank can fit. Rank 0 alone writes checkpoints, states and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')
    backend: str | None = None  # None: not distributed

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str | None = None) -> Dist:
        """The process's place in a torchrun job (a world of one outside torchrun), on `device`:
        'cpu', 'cuda' or None (CUDA when there is one). Under torchrun on CUDA, rank r uses GPU LOCAL_RANK."""
        if device not in (None, 'cpu', 'cuda'):
            raise ValueError(f'device {device!r} is not known; choose cpu or cuda')
        if device == 'cuda' and not torch.cuda.is_available():
            raise ValueError('device cuda: this machine has no CUDA GPU that torch can use; use --device cpu')
        cuda = torch.cuda.is_available() if device is None else device == 'cuda'
        world = int(os.environ.get('WORLD_SIZE', '1'))
        if world <= 1:
            return cls(device=torch.device('cuda' if cuda else 'cpu'))
        rank, local = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', '0'))
        if cuda:
            torch.cuda.set_device(local)
        backend = 'nccl' if cuda else 'gloo'
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend)
        dev = torch.device('cuda', local) if cuda else torch.device('cpu')
        return cls(rank=rank, world=world, local_rank=local, device=dev, backend=backend)

    def close(self) -> None:
        if self.backend and torch_dist.is_initialized():
            torch_dist.destroy_process_group()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around `model` (gradients averaged over ranks after each backward);
        `model` itself when alone."""
        if not self.backend:
            return model
        import warnings

        from torch.nn.parallel import DistributedDataParallel

        # 1x1 convolutions' gradients come in another memory layout than DDP's buckets: a copy, not an error
        warnings.filterwarnings('ignore', message='Grad strides do not match bucket view strides')
        ids = [self.device.index] if self.device.type == 'cuda' else None
        return DistributedDataParallel(model, device_ids=ids)

    # ---- agreements (identity for a world of one) ----------------------------------------------------------
    def step_agree(self, loss: torch.Tensor, *flags: bool) -> tuple:
        """(mean loss over ranks, *whether any rank raised each flag)), in one all-reduce."""
        if not self.backend:
            return (loss.item(), *flags)
        t = torch.tensor([0.0, *map(float, flags)], device=loss.device)
        t[0] = loss.detach().float()
        torch_dist.all_reduce(t)
        return (t[0].item() / self.world, *(bool(v > 0) for v in t[1:].tolist()))

    def min_int(self, value: int) -> int:
        """The smallest `value` over ranks (the step count every rank can reach in the time budget)."""
        if not self.backend:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MIN)
        return int(t.item())

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over ranks (evaluation counts)."""
        if self.backend:
            t = t.to(self.device)
            torch_dist.all_reduce(t)
        return t.cpu()

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (a resumed state: only rank 0 needs to be able to read the file)."""
        if not self.backend:
            return obj
        box = [obj if self.main else None]
        torch_dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == 'cuda' else None)
        return box[0]
