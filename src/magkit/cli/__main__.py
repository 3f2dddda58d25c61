"""``python -m magkit.cli ...`` runs the command line (as ``torchrun -m magkit.cli fit --distributed ...`` needs)."""

from . import main

if __name__ == "__main__":
    main()
