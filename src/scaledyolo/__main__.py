"""`python -m scaledyolo` (and so `torchrun -m scaledyolo train ...`)."""

from scaledyolo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
