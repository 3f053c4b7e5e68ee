"""The converter's one error class: every refusal carries a stable code and a message that names what to fix.

The CLI prints refusals as `tfjs_convert: error CODE: message` on stderr and exits with status 2, so scripts and tests
match on the code, never on the wording.
"""
from typing import Final

BAD_MODEL: Final = "BAD_MODEL"  # model.json unreadable, not a graph model, or inconsistent (dangling input, cycle...)
UNSUPPORTED_OP: Final = "UNSUPPORTED_OP"  # an op (or fused op) this converter does not translate
UNSUPPORTED_ATTR: Final = "UNSUPPORTED_ATTR"  # a known op with an attribute value it does not translate
UNSUPPORTED_DTYPE: Final = "UNSUPPORTED_DTYPE"  # a weight or tensor type other than float32 (int32 for shapes)
WEIGHTS_MISSING: Final = "WEIGHTS_MISSING"  # a weight file named by the manifest is not there
WEIGHTS_SIZE: Final = "WEIGHTS_SIZE"  # weight files hold more or fewer bytes than the manifest needs
SOURCE_HASH: Final = "SOURCE_HASH"  # a pinned source file's sha256 differs from its pin
SOURCE_VERSION: Final = "SOURCE_VERSION"  # the installed npm package is not the pinned version
SOURCE_FETCH: Final = "SOURCE_FETCH"  # a pinned npm tarball is not cached and `npm pack` could not fetch it
ONNX_HASH: Final = "ONNX_HASH"  # the converter's output differs from the pinned ONNX sha256
UNKNOWN_NODE: Final = "UNKNOWN_NODE"  # a node name asked for (capture, expected output) is not in the graph
CHECK_FAILED: Final = "CHECK_FAILED"  # `check`: an output is off by more than the tolerance
BAD_ARGUMENT: Final = "BAD_ARGUMENT"  # CLI input files missing or malformed


class ConvertError(Exception):
    """A refusal with a stable `code` (one of the constants above) and a message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
