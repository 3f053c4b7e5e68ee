"""The refiner pack's terms are stated once (refiner/terms.py): the committed card and manifest carry them verbatim,
and the weights are never called MIT-licensed."""
from __future__ import annotations

import json
import os

from refiner.terms import LICENSE_AND_USE, MANIFEST_LICENSE

PACK = os.path.join(os.path.dirname(__file__), "..", "..", "refiner")


def test_committed_card_has_the_terms_paragraph_once() -> None:
    with open(os.path.join(PACK, "MODEL_CARD.md")) as f:
        card = f.read()
    assert card.count(LICENSE_AND_USE) == 1
    assert card.count("**License and use:**") == 1


def test_committed_manifest_has_the_terms() -> None:
    with open(os.path.join(PACK, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["license"] == MANIFEST_LICENSE
    assert "MIT" not in MANIFEST_LICENSE


def test_terms_say_research_only_and_not_mit_for_the_weights() -> None:
    assert "research-only, not MIT" in LICENSE_AND_USE
    assert "non-commercial" in LICENSE_AND_USE
