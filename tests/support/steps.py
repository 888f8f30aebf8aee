"""The msonline profile's steps by index (the example package's steps), for tests that name a step by its number."""

from __future__ import annotations

from psbridge.catalogue import MSONLINE_STEPS

STEP = {s.index: s for s in MSONLINE_STEPS}
