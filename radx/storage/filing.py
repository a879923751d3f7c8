# -*- test-case-name: tests.test_app_config,tests.test_organize -*-
"""How an instance is filed below the output folder: Filing, shared by the server and `radx dicom organize`, and what --on-duplicate may say."""

from __future__ import annotations

from dataclasses import dataclass

from radx.storage.layout import FLAT_LAYOUT, ORGANIZED_LAYOUT, Layout

# --on-duplicate: what becomes of an instance whose file exists already.
REPLACE, KEEP, UNIQUE, REJECT = "replace", "keep", "unique", "reject"
ON_DUPLICATE = (REPLACE, KEEP, UNIQUE, REJECT)


@dataclass(frozen=True)
class Filing:
    """Where each instance goes (--layout, --organize) and what is done when its file exists (--on-duplicate)."""

    organize: bool = True
    # --layout, compiled. Left out (None), --organize's: the
    # Study/Series/Instance layout, or the flat one with organize false.
    layout: Layout | None = None
    # One of ON_DUPLICATE.
    on_duplicate: str = REPLACE

    def __post_init__(self) -> None:
        if self.layout is None:
            # Frozen: set once, here, as the dataclass's own __init__ does.
            object.__setattr__(self, "layout", ORGANIZED_LAYOUT if self.organize else FLAT_LAYOUT)
