"""Small helpers for data-parallel training on ``torch.distributed`` (processes launched by torchrun).

magkit's distributed training is plain DistributedDataParallel (DDP): every process (rank) holds the whole
graph and a replica of the model; the *training seed nodes* are sharded over the ranks; gradients are
averaged by DDP after every backward pass; validation metrics and logged loss terms are all-reduced, so
every rank takes the same early-stopping decision and ends with the same parameters. See
docs/scaling.md, section "Distributed training (torchrun)".

Typical use (what ``magkit fit --distributed`` does)::

    from magkit import distributed as D
    D.init_from_env()                 # reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
    est = create("gcn-early", distributed=True).fit(graph)
    if D.is_rank0():
        ...                           # write results once
    D.cleanup()

Every helper is a no-op (or answers for a single process) when ``torch.distributed`` is not initialised,
so library code can call them unconditionally. Device choice: ``device="auto" | "cpu" | "cuda"``; on CUDA
each process uses ``cuda:LOCAL_RANK`` (:func:`local_device`), with the NCCL backend; on CPU, gloo.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from .exceptions import ConfigError

#: the variables torchrun sets for every process it starts
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("auto", "gloo", "nccl")
LAUNCH_HINT = "torchrun --nproc_per_node=2 -m magkit.cli fit ... --distributed"


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the process group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device


# ---------------------------------------------------------------------------------------------- set-up
def missing_env() -> list[str]:
    """The torchrun variables absent from the environment (empty list: launched by torchrun)."""
    return [k for k in TORCHRUN_ENV if not os.environ.get(k)]


def _device_kind(device: str | torch.device) -> str:
    """``cuda`` or ``cpu`` for a device spec (``auto`` -> cuda when available)."""
    text = str(device)
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {text!r} requested but CUDA is not available; allowed here: cpu, auto")
        return "cuda"
    if text == "cpu":
        return "cpu"
    raise ConfigError(f"device: {text!r}; allowed: auto, cpu, cuda")


def local_device(device: str | torch.device = "auto") -> torch.device:
    """The device of this process: ``cpu``, or ``cuda:LOCAL_RANK`` for ``cuda``/``auto`` on a CUDA machine
    (an explicit ``cuda:N`` is kept). ``LOCAL_RANK`` comes from the environment (0 when unset)."""
    if _device_kind(device) == "cpu":
        return torch.device("cpu")
    dev = torch.device(device) if str(device) not in ("auto", "cuda") else torch.device("cuda", local_rank())
    if dev.index is None:
        dev = torch.device("cuda", local_rank())
    return dev


def init(rank: int, world_size: int, *, init_method: str = "env://", backend: str = "auto",
         device: str | torch.device = "cpu", local_rank_: int | None = None) -> DistInfo:
    """Join a process group explicitly (tests use a ``file://`` ``init_method``). ``backend="auto"``: nccl
    when ``device`` resolves to CUDA, else gloo. Idempotent: an initialised group is left as it is."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend: {backend!r}; allowed: {', '.join(BACKENDS)}")
    if not dist.is_available():
        raise ConfigError("distributed: this torch build has no torch.distributed; allowed: a single process")
    if local_rank_ is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank_))
    kind = _device_kind(device)
    if backend == "auto":
        backend = "nccl" if kind == "cuda" else "gloo"
    dev = local_device(device)
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, init_method=init_method, rank=int(rank), world_size=int(world_size))
    return info(dev)


def init_from_env(backend: str = "auto", device: str | torch.device = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT). Raises :class:`ConfigError` saying how to launch when they are missing."""
    if dist.is_available() and dist.is_initialized():
        return info(local_device(device))
    missing = missing_env()
    if missing:
        raise ConfigError(
            f"distributed: --distributed needs the environment torchrun sets (missing {', '.join(missing)}); "
            f"launch with: {LAUNCH_HINT}"
        )
    return init(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), init_method="env://", backend=backend,
                device=device)


def info(device: str | torch.device = "cpu") -> DistInfo:
    """This process's :class:`DistInfo` (rank 0 of 1, backend ``none``, when not distributed)."""
    dev = device if isinstance(device, torch.device) else torch.device(str(device).replace("auto", "cpu"))
    return DistInfo(rank(), world_size(), local_rank(), backend() or "none", dev)


def cleanup() -> None:
    """Leave the process group (no-op when none is initialised)."""
    if is_distributed():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- queries
def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """The process's index on its machine (torchrun's LOCAL_RANK; 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_rank0() -> bool:
    return rank() == 0


def backend() -> str | None:
    return str(dist.get_backend()) if is_distributed() else None


def describe() -> dict:
    """What results files record: ``{"world_size": W, "backend": "gloo" | "nccl" | None}``."""
    return {"world_size": world_size(), "backend": backend()}


def barrier() -> None:
    if is_distributed():
        dist.barrier()


# ---------------------------------------------------------------------------------------------- collectives
def _comm_device() -> torch.device:
    if backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce_tensor(x: Tensor, mean: bool) -> Tensor:
    if not is_distributed():
        return x
    buf = x.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    if mean:
        buf = buf / world_size()
    return buf.to(x.device)


def _reduce(x, mean: bool):
    if isinstance(x, Tensor):
        return _reduce_tensor(x, mean)
    if isinstance(x, Mapping):
        keys = sorted(x)  # every rank must pass the same keys; the order is fixed here
        packed = torch.tensor([float(x[k]) for k in keys], dtype=torch.float64)
        reduced = _reduce_tensor(packed, mean).tolist()
        return dict(zip(keys, reduced))
    raise TypeError(f"all_reduce: a Tensor or a dict of floats, not {type(x).__name__}")


def all_reduce_sum(x: Tensor | Mapping[str, float]) -> Tensor | dict[str, float]:
    """The sum over ranks of a tensor (a new tensor) or of a dict of floats (packed in one float64
    all-reduce; keys sorted). Every rank receives the same result. Identity when not distributed."""
    return _reduce(x, mean=False)


def all_reduce_mean(x: Tensor | Mapping[str, float]) -> Tensor | dict[str, float]:
    """The mean over ranks (see :func:`all_reduce_sum`)."""
    return _reduce(x, mean=True)


def broadcast_floats(x: Mapping[str, float], src: int = 0) -> dict[str, float]:
    """Rank ``src``'s dict of floats on every rank (keys sorted; every rank passes the same keys). Identity
    when not distributed. Used where one rank computes a result (e.g. an evaluation) the others must share."""
    keys = sorted(x)
    if not is_distributed():
        return {k: float(x[k]) for k in keys}
    buf = torch.tensor([float(x[k]) for k in keys], dtype=torch.float64).to(_comm_device())
    dist.broadcast(buf, src=src)
    return dict(zip(keys, buf.cpu().tolist()))


def check_same(what: str, values: Sequence[float]) -> None:
    """Raise :class:`ConfigError` on every rank when the ranks hold different ``values`` (e.g. a graph
    fingerprint: ranks training on different data would silently average unrelated gradients)."""
    if not is_distributed():
        return
    v = torch.tensor([float(a) for a in values], dtype=torch.float64)
    buf = torch.cat([v, -v]).to(_comm_device())
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    buf = buf.cpu()
    hi, lo = buf[: v.numel()], -buf[v.numel():]
    if not torch.equal(hi, lo):
        raise ConfigError(f"distributed: the ranks disagree on {what} (min {lo.tolist()}, max {hi.tolist()}); "
                          "allowed: the same data and settings on every rank")


# ---------------------------------------------------------------------------------------------- sharding
def shard_size(n: int, world: int) -> int:
    """Length of the largest shard: ``ceil(n / world)`` (every shard has that length when ``pad``)."""
    return -(-int(n) // int(world))


def shard(indices: Tensor, rank: int, world: int, pad: bool = True) -> Tensor:
    """This rank's share of ``indices``: positions ``rank, rank + world, rank + 2 world, ...``.

    ``pad=True`` (default): the sequence is first extended by wrapping around to a multiple of ``world``,
    so every rank gets exactly ``ceil(n / world)`` indices (every rank runs the same number of steps); the
    shards then cover ``indices``, and only the first ``ceil(n / world) * world - n`` entries appear twice.
    ``pad=False``: the shards are disjoint and cover ``indices`` exactly; sizes differ by at most one.
    Deterministic: no randomness (shuffle before sharding, with a generator every rank seeds alike).
    """
    world = int(world)
    if world < 1:
        raise ConfigError(f"world: {world}; allowed: >= 1")
    if not 0 <= int(rank) < world:
        raise ConfigError(f"rank: {rank}; allowed: 0 <= rank < world ({world})")
    n = indices.numel()
    if pad and n > 0 and n % world:
        total = shard_size(n, world) * world
        reps = -(-total // n)
        indices = indices.repeat(reps)[:total]
    return indices[int(rank)::world]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (e.g. ``(seed, epoch)`` or ``(seed, rank)``), the same on every
    rank and every platform, and unrelated for different tuples."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)
