"""SR-GM: structure-regularised gradient matching for multimodal graph condensation (Shen et al., arXiv 2511.20222)."""

from __future__ import annotations

from typing import Literal

from .matching import EvalBackbone, GradientMatching


class SRGM(GradientMatching):
    r"""SR-GM (Shen et al., arXiv 2511.20222): GCond's gradient matching with gradient decoupling and
    structural damping, for graphs whose nodes carry two modalities.

    The matching loss L and the synthetic graph S = (A' = PGE_Φ(X'), X', Y') are GCond's
    (:class:`~magkit.condense.matching.GradientMatching`). SR-GM changes two things:

    * **Decoupling.** The feature update G = ∂L/∂X' is split into its modality blocks G_a, G_b. Where a
      node's blocks conflict (⟨g_a, g_b⟩ < 0, in the input space or in the first layer's output space),
      each is projected off the other (PCGrad):

      .. math::
          g_a \leftarrow g_a - \frac{\langle g_a, g_b \rangle}{\lVert g_b \rVert^2} g_b, \qquad
          g_b \leftarrow g_b - \frac{\langle g_b, g_a \rangle}{\lVert g_a \rVert^2} g_a

    * **Damping.** The Dirichlet energy of the (decoupled) update field over S's normalised Laplacian is
      added to the structure's objective with weight λ:

      .. math::
          \mathcal{L}_\Phi = L + \lambda \, \frac{\mathrm{tr}(G^\top L_{A'} G)}
          {(\sum_{ij} A'_{ij} / 2) \cdot \mathrm{mean}_i \lVert g_i \rVert^2}

      so Φ prefers edges between synthetic nodes whose updates agree (``damping_norm="edge"``; see
      :func:`~magkit.condense.problem.damping_term`).

    **SR-GM-X** (registered as ``srgm-x``: ``structure="none"``, ``damping="proximal"``,
    ``damping_graph="knn"``) keeps decoupling and damping on GCond-X's structure-free path: S has no edges,
    and the damping acts on the feature update itself, over the within-class k-nearest-neighbour graph
    K of the current X' (cosine similarity, k = ``damping_k``, rebuilt every epoch,
    :func:`~magkit.functional.knn_graph`): the proximal step of the Dirichlet energy

    .. math::
        \tilde G = \operatorname*{argmin}_H \tfrac12 \lVert H - G \rVert^2 + \tfrac{\lambda}{2}
        \mathrm{tr}(H^\top L_K H) = (I + \lambda L_K)^{-1} G

    damps the disagreement of neighbouring synthetic nodes' updates by 1/(1 + λμ) along each eigenvector
    of L_K (eigenvalue μ) (:func:`~magkit.functional.dirichlet_prox`).

    Args:
        decouple (bool, optional): gradient decoupling. (default: :obj:`True`)
        damping (str, optional): ``"structure"`` (R's gradient reaches Φ only, as the official code),
            ``"field"`` (also X'), ``"proximal"`` (the X' update becomes (I + λL)⁻¹G), or ``None``.
            (default: :obj:`"structure"`)
        damping_graph (str, optional): the damping's graph, ``"learned"`` (A') or ``"knn"`` (within-class
            kNN graph of X'). (default: :obj:`"learned"`)
        damping_k (int, optional): k of the ``"knn"`` graph. (default: :obj:`3`)
        damping_weight (float, optional): λ. (default: :obj:`1.0`)
        **every other parameter**: as :class:`~magkit.condense.matching.GradientMatching`, same defaults.

    Shapes:
        - **input:** a split multimodal graph with two modalities ``x_m [N, d_m]``
        - **output:** a :class:`~magkit.condense.artifact.CondensedGraph`: ``x.<m> [n', d_m]``,
          ``adj [n', n']`` (zeros for SR-GM-X), ``y [n']`` with n' = Σ_c max(⌊n_c·r⌋, 1)

    Example::

        S = SRGM(ratio=0.01).condense(graph)
        S_x = make_condenser("srgm-x", ratio=0.01).condense(graph)   # SR-GM-X
        evaluate_condensed(S, graph, ["gcn", "sgc"], runs=5)
    """

    name = "srgm"

    def __init__(
        self,
        *,
        ratio: float = 0.01,
        setting: Literal["transductive", "inductive"] = "transductive",
        seed: int = 0,
        backbone: Literal["sgc", "gcn"] = "sgc",
        k: int = 2,
        hidden: int = 256,
        structure: Literal["pge", "none"] = "pge",
        pge_hidden: int = 128,
        pge_init_bias: float = -5.0,
        init: Literal["propagated", "raw", "auto"] = "propagated",
        feature_through_pge: bool = False,
        structure_epochs: tuple[int, int] = (10, 50),
        distance: Literal["gcond", "mse", "cos"] = "gcond",
        decouple: bool = True,
        decouple_space: Literal["auto", "input", "shared"] = "auto",
        damping: Literal["structure", "field", "proximal"] | None = "structure",
        damping_graph: Literal["learned", "knn"] = "learned",
        damping_k: int = 3,
        damping_weight: float = 1.0,
        damping_norm: Literal["edge", "trace", "none"] = "edge",
        epochs: int = 200,
        outer_steps: int = 20,
        inner_steps: int = 0,
        lr_feat: float = 5e-4,
        lr_adj: float = 1e-3,
        lr_model: float = 0.01,
        real_batch: int | None = None,
        eval_every: int = 10,
        eval_backbone: EvalBackbone = "gcn",
        eval_epochs: int = 200,
        checkpoint_every: int = 10,
        distributed: bool | Literal["auto"] = False,
        device: str = "cpu",
    ):
        self._store(locals())
