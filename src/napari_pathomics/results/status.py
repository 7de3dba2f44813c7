"""Status codes of a tile in a run."""

from __future__ import annotations

PENDING, DONE, FAILED, BACKGROUND = 0, 1, 2, 3
STATUS_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed", BACKGROUND: "background"}
