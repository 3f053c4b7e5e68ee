"""The refiner tools' one error class: every refusal carries a stable code and a message that names what to fix.

The command line prints refusals as `refiner: error CODE: message` on stderr and exits with status 2 (as
tfjs_convert does), so scripts and tests match on the code, never on the wording.
"""
import sys
from typing import Callable, Final

BAD_ARGUMENT: Final = "BAD_ARGUMENT"  # a command-line value out of range, malformed, or in conflict with another
NO_DATA: Final = "NO_DATA"  # none of the named clips is in the cache (or packed folder) with samples
BAD_CACHE: Final = "BAD_CACHE"  # a cache or packed clip whose files do not match its metadata (size, crop, frames)
OLD_CACHE: Final = "OLD_CACHE"  # an aligned-source network on a version 1 cache (no portrait canvas, no alignments)
NOT_A_PACK: Final = "NOT_A_PACK"  # --finetune-from names a folder without an exported refiner pack
PACK_WEIGHTS: Final = "PACK_WEIGHTS"  # an exported pack's ONNX files lack a parameter of the networks
UNKNOWN_LOSS: Final = "UNKNOWN_LOSS"  # a loss term name that losses.py does not register, or one missing its input
NO_FACE_MODEL: Final = "NO_FACE_MODEL"  # a face network a loss term needs is not pinned, fetched or convertible


class RefinerError(Exception):
    """A refusal with a stable `code` (one of the constants above) and a message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def cli_exit_code(prog: str, body: Callable[[], object]) -> int:
    """Runs a command line's body: 0, or 2 with `PROG: error CODE: message` on stderr for a RefinerError."""
    try:
        body()
    except RefinerError as e:
        sys.stderr.write(f"{prog}: error {e}\n")
        return 2
    return 0
