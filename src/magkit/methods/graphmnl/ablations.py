"""GraphMNL's registered names: the method and its one-switch ablations."""

from __future__ import annotations

from .estimator import GraphMNL

#: multimodal negative learning's form of the transfer (Gong et al. 2025): the per-node dominant branch teaches the
#: inferior ones, one threshold ρ, through the instability gate
PAPER_FORM = {"teacher": "dominant", "gate": True}

#: name -> (fixed parameters, description)
ABLATIONS = {
    "graphmnl": ({}, "GraphMNL (full)"),
    "graphmnl-no-smoothing": ({"beta": 0.0}, "GraphMNL without graph-aware smoothing of reliability (β = 0)"),
    "graphmnl-gate": ({"gate": True}, "GraphMNL with the instability-aware transfer gate"),
    "graphmnl-kd": ({"guidance": "kd"}, "GraphMNL with positive distillation (KL to the teacher) instead of NL"),
    "graphmnl-mnl-loss": ({"guidance": "mnl"}, "GraphMNL with MNL's non-target soft CE (not target-preserving)"),
    "graphmnl-fixed-dominant": ({"fixed_dominant": "auto"}, "GraphMNL with one global dominant modality"),
    "graphmnl-no-guidance": ({"guidance": "none"}, "GraphMNL branches + reliability fusion only (λ = 0)"),
    "graphmnl-ntkd": ({"guidance": "ntkd", **PAPER_FORM},
                      "GraphMNL with target-preserving non-target distillation instead of NL, in multimodal negative "
                      "learning's form (dominant teacher, inferior targets, gated)"),
    "graphmnl-dominant-teacher": (PAPER_FORM,
                                  "GraphMNL in multimodal negative learning's form: only the inferior branches "
                                  "taught, by the dominant branch, one NL threshold, gated"),
}


def register_graphmnl(register) -> None:
    """Register every name of :data:`ABLATIONS` with ``register(name, cls, description, group=..., **fixed)``."""
    for name, (fixed, desc) in ABLATIONS.items():
        register(name, GraphMNL, desc, group="graphmnl", **fixed)
