"""Shared fixtures: locations of the real MAGB data kept next to the repository (``../shared/data/magb``)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_MAGB = Path(__file__).parents[1].parent / "shared" / "data" / "magb"
GROCERY_GRAPH = SHARED_MAGB / "Grocery" / "GroceryGraph.pt"


@pytest.fixture(scope="session")
def magb_root() -> Path:
    """The folder holding the real MAGB graphs (``<root>/Grocery/GroceryGraph.pt``); skips when absent."""
    if not SHARED_MAGB.is_dir():
        pytest.skip(f"real MAGB data not available: folder {SHARED_MAGB} does not exist")
    return SHARED_MAGB


@pytest.fixture(scope="session")
def grocery_path() -> Path:
    """The real MAGB Grocery graph file (DGL binary); skips when absent."""
    if not GROCERY_GRAPH.is_file():
        pytest.skip(f"real MAGB data not available: {GROCERY_GRAPH} does not exist")
    return GROCERY_GRAPH


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_torch():
    """The suite's graphs are small: intra-op threads gain nothing there and oversubscribe a shared
    2-core machine badly (a 100-epoch MLP fit on 500 nodes: ~0.7 s with one thread, ~25 s with two under
    load). Benchmarks, not tests, measure speed."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_ranks(worker, directory: Path, world: int = 2) -> list:
    """Run ``worker(rank, world, rendezvous_file, out_dir)`` in ``world`` spawned processes (gloo, file://
    rendezvous in ``directory``); each rank saves its results to ``out_dir/rank{r}.pt``, returned in rank
    order."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(world, str(directory / "rendezvous"), str(directory)), nprocs=world, join=True)
    return [torch.load(directory / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="session")
def spawn_ranks():
    """The distributed tests' launcher: ``spawn_ranks(worker, directory, world=2) -> [rank0, rank1, ...]``."""
    return _run_ranks
