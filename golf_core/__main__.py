"""``python -m golf_core STACK [options]`` runs ``golf train``; so does ``torchrun ... -m golf_core STACK``."""

from __future__ import annotations

import sys


def main() -> None:
    from cli import cli

    cli.main(args=["train", *sys.argv[1:]], prog_name="python -m golf_core")


if __name__ == "__main__":
    main()
