"""GCond and GCond-X (Jin et al., ICLR 2022, "Graph Condensation for Graph Neural Networks")."""

from __future__ import annotations

from .matching import GradientMatching


class GCond(GradientMatching):
    r"""GCond (Jin et al., ICLR 2022): gradient matching with a learned synthetic structure.

    .. math::
        \min_{X', \Phi} \; \mathbb{E}_{\theta_0} \sum_t \sum_c \frac{n'_c}{n'}
        D\bigl(\nabla_\theta \ell(f_\theta(A', X')_c, Y'_c),\; \nabla_\theta \ell(f_\theta(A, X)_{c}, Y_c)\bigr),
        \qquad A' = \mathrm{PGE}_\Phi(X'),

    with D the sum over output units of 1 − cos between the per-unit gradient rows, Φ and X' updated in
    alternating phases (``structure_epochs``). **GCond-X** is the paper's structure-free variant, A' = 0
    (``structure="none"``; registered as ``gcond-x``).

    The parameters and their defaults are those of :class:`~magkit.condense.matching.GradientMatching`
    (no decoupling, no damping). Two defaults differ from the paper's code and were chosen on validation
    accuracy (docs/condensation.md): X' starts from propagated rows Â^K X (``init="propagated"``), and θ is
    matched at fresh initialisations (``inner_steps=0``; the paper trains θ on S for 10 steps between
    matching steps, ``inner_steps=10``).

    Shapes:
        - **input:** a split multimodal graph, ``x_m [N, d_m]`` per modality
        - **output:** a :class:`~magkit.condense.artifact.CondensedGraph`: ``x.<m> [n', d_m]``,
          ``adj [n', n']`` (zeros for GCond-X), ``y [n']``

    Example::

        S = GCond(ratio=0.01).condense(graph)
        S_x = GCond(ratio=0.01, structure="none").condense(graph)   # GCond-X
    """

    name = "gcond"
