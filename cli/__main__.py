"""`python -m lymph.cli` (torchrun starts each training process so)."""

from lymph.cli import main

if __name__ == "__main__":
    main()
