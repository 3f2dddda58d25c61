"""GraphMNL: the estimator (:class:`GraphMNL`), its per-epoch guidance state, mini-batch training, diagnostics and
registered ablations. The network is :class:`magkit.models.graphmnl_net.GraphMNLNet`."""

from ...models.graphmnl_net import GraphMNLNet, branch_kind, default_branches
from .ablations import ABLATIONS, PAPER_FORM, register_graphmnl
from .diagnostics import (
           diagnose,
           explain_report,
           guidance_pass,
           kind_logits,
           network_inputs,
           plot_diagnostics,
)
from .estimator import GraphMNL
from .guidance import GuidanceState, guided_pairs, reliability
from .minibatch import GuidedMiniBatch

__all__ = ["ABLATIONS", "PAPER_FORM", "GraphMNL", "GraphMNLNet", "GuidanceState", "GuidedMiniBatch", "branch_kind",
           "default_branches", "diagnose", "explain_report", "guidance_pass", "guided_pairs", "kind_logits", "network_inputs",
           "plot_diagnostics", "register_graphmnl", "reliability"]
