"""The refiner pack's terms of use, stated once: the model card's "License and use" paragraph and the manifest's
license field are both made from here (no torch import, so tests read it cheaply)."""
from __future__ import annotations

from typing import Final

# The code that trains and runs the pack is MIT (the repository's LICENSE); the weights are not: they are trained on
# third-party clips whose terms are non-commercial research only (../shared/train/MANIFEST.md).
LICENSE_AND_USE: Final[str] = (
    "**License and use:** research-only, not MIT. The code that trains and runs this pack is this project's (MIT, see\n"
    "LICENSE); these weights are not under that license. They are trained on third-party clips (`../shared/train`, its\n"
    "MANIFEST.md) whose terms allow internal, non-commercial research only (CC BY-NC, S-Lab 1.0, the DH-FaceVid-1K\n"
    "agreement, samples of research datasets such as MEAD, HDTF and VoxCeleb), so use the weights only for\n"
    "non-commercial research and evaluation, and do not ship them in a product or a release. `AVATAR_REFINER_PACK=none`\n"
    "runs the server without them.\n"
)

MANIFEST_LICENSE: Final[str] = (
    "research-only (non-commercial; trained on third-party research clips): see MODEL_CARD.md, License and use"
)
