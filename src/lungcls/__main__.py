"""``python -m lungcls`` (what ``torchrun -m lungcls`` runs)."""

from .cli import main

if __name__ == "__main__":
    main()
