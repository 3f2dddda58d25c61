"""Mini-batch GraphMNL: one optimiser step per batch of labelled seeds, with guided seeds drawn alongside.

Each epoch starts with one eval-mode pass over the whole graph that sets the reliability, arbitration, gate and
teacher (:meth:`GuidanceState.step`). A step trains on a batch of labelled seeds plus ``batch_size`` guided
nodes (g(i) > 0 with a guided branch) drawn uniformly from all U of them, which join the batch's neighbourhood
sample. Its loss is the supervised terms on the labelled seeds plus λ (U / N) · mean over the m guided seeds of
Σ_b g(i) L(i, b): an unbiased estimate of the full-batch guidance term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ... import distributed as D
from ...train.sampler import NeighborSampler
from .guidance import GuidanceState, guided_pairs


class GuidedMiniBatch:
    """The guided seeds' own random draws and neighbourhood sampler for mini-batch training.

    Data-parallel: each rank draws its own guided seeds and samples its own neighbourhoods (the ranks' steps are
    independent unbiased estimates, which DDP averages); one process uses the seeds ``seed + 1`` and ``seed + 2``.

    Args:
        graph (MultimodalGraph): the training graph.
        fanouts (Sequence[int]): neighbours sampled per hop.
        batch_size (int): labelled seeds per step, and guided seeds drawn per step.
        seed (int): the fit's seed.
        ddp (bool): whether the fit is data-parallel.
    """

    def __init__(self, graph, fanouts, batch_size: int, seed: int, ddp: bool):
        s_gen = D.derive_seed(seed, D.rank(), 3) if ddp else seed + 1
        s_smp = D.derive_seed(seed, D.rank(), 4) if ddp else seed + 2
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(s_gen)
        self.sampler = NeighborSampler(graph.edge_index, graph.num_nodes, fanouts, batch_size, shuffle=False,
                                       generator=torch.Generator().manual_seed(s_smp))

    def steps(self, model, net, inputs, ycpu: Tensor, batches, opt, device, state: GuidanceState,
              lam: float) -> tuple[dict[str, float], int]:
        """One optimiser step per batch of ``batches`` (``model``: the trained module, possibly DDP-wrapped;
        ``net``: the GraphMNLNet itself). Returns the loss terms summed with weight = labelled seeds, and their
        number."""
        st = state.epoch
        inputs.extra["reliability"] = st["r"].detach().cpu()
        n = st["g"].shape[0]
        cand = torch.zeros(0, dtype=torch.long)
        if st["active"]:
            cand = ((st["g"] > 0).unsqueeze(1) & st["targets"]).any(1).nonzero().view(-1).cpu()
        totals: dict[str, float] = {}
        count = 0
        for batch in batches:
            seeds = batch.n_id[:batch.batch_size]
            nl = seeds.numel()
            if cand.numel():
                pick = cand[torch.randperm(cand.numel(), generator=self.generator)[: self.batch_size]]
                pick = pick[~torch.isin(pick, seeds)]
                if pick.numel():
                    batch = self.sampler.sample(torch.cat([seeds, pick]))
            sub = inputs.subset(batch.n_id, batch.edge_index).to(device)
            out = model(sub)
            loss, parts = self.loss(out, net, batch, nl, ycpu, state, int(cand.numel()), n, device, lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v * nl
            count += nl
        return totals, count

    @staticmethod
    def loss(out: dict, net, batch, nl: int, ycpu: Tensor, state: GuidanceState, n_guided: int, n: int, device,
             lam: float) -> tuple[Tensor, dict]:
        """The loss of one mini-batch: seeds ``0..nl-1`` are labelled, seeds ``nl..batch_size-1`` guided."""
        st = state.epoch
        z, present = out["branches"], out["present"]
        nb, c = z.shape[1], z.shape[2]
        y = ycpu[batch.n_id[:nl]].to(device)
        pi = present[:nl].float()
        ce_b = F.cross_entropy(z[:nl].reshape(-1, c), y.repeat_interleave(nb), reduction="none").view(-1, nb)
        ce_branches = ((ce_b * pi).sum(0) / pi.sum(0).clamp(min=1)).sum()
        ce_fused = F.cross_entropy(out["logits"][:nl], y)
        loss = ce_branches + ce_fused
        guide = z.new_zeros(())
        m = batch.batch_size - nl
        if m > 0 and n_guided > 0:
            gid = batch.n_id[nl:batch.batch_size].to(st["g"].device)
            ns = z.shape[0]
            g_loc = z.new_zeros(ns)
            g_loc[nl:batch.batch_size] = st["g"][gid].to(device)
            teach = z.new_zeros(ns, c)
            teach[nl:batch.batch_size] = st["teacher"][gid].to(device)
            targets = torch.zeros(ns, nb, dtype=torch.bool, device=device)
            targets[nl:batch.batch_size] = st["targets"][gid].to(device)
            rows, cols = guided_pairs(g_loc, targets)
            if rows.numel():
                zg = net.guided_logits(out, rows, cols)
                ids = batch.n_id.to(state.labelled.device)
                # (U / N) · mean over the m guided seeds: the loss divides its sum by n_total = m N / U
                guide = state.loss(zg, rows, teach, g_loc, m * n / n_guided,
                                   labelled=state.labelled[ids].to(device), y_train=state.y_train[ids].to(device))
                loss = loss + lam * guide
        stats = {"loss": float(loss.detach()), "ce": float((ce_branches + ce_fused).detach()),
                 "guide": float(guide.detach()), "gate_rate": st["gate_rate"], "inferior_rate": st["inferior_rate"]}
        return loss, stats
