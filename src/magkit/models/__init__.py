"""Neural network modules that know only sizes: backbones, branches, fusion, image encoders."""
