"""`python3 -m refiner [flags]` (from models/tools, or with it on PYTHONPATH): one training / export run (pipeline.py)
with the flags of config.py (`--help`). Refusals print `refiner: error CODE: message` on stderr and exit 2."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

import torch

from .config import parse_args
from .errors import cli_exit_code
from .pipeline import run


def main(argv: Optional[Sequence[str]] = None) -> int:
    torch.set_num_threads(2)
    return cli_exit_code("refiner", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
