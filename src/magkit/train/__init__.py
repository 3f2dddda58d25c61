"""The one training engine: epoch loop with early stopping, neighbour sampler, cached propagation."""
