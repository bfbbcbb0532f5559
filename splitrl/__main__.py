"""``python -m splitrl`` is the ``splitrl`` command."""

from splitrl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
