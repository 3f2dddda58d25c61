"""``python -m magkit ...`` runs the command line (as ``torchrun -m magkit fit --distributed ...`` needs)."""

from .cli import main

if __name__ == "__main__":
    main()
