"""Status codes of a tile in a run, and the CAM name of the risk activation map."""

from __future__ import annotations

PENDING, DONE, FAILED, BACKGROUND = 0, 1, 2, 3
STATUS_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed", BACKGROUND: "background"}

#: The CAM name of the risk activation map; any other CAM name is a class name of the bundle.
RISK_CAM = "risk"
