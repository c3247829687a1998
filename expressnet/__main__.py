"""``python -m expressnet`` (also what ``torchrun -m expressnet train ...`` runs)."""

from .cli import main

main()
