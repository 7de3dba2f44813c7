"""What the pathologist is told: every problem of a moment in one toast, stale ones withdrawn.

napari stacks its toasts in one corner, so a second error hides the first: a problem shown while
an earlier one of the same severity is still up is merged with it into one toast. A notice raised
under a key (e.g. a slide's missing pixel size) is withdrawn when its cause is fixed. Warnings of
libraries (scikit-image, dask, …) name internals a pathologist cannot act on: they go to the log.

What a toast of ours lists is kept on the toast itself (``pathomics_notice``), so nothing here
outlives the toasts napari shows.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

from ..errors import PathomicsError
from ..resources import log_dir

LOG = logging.getLogger("napari_pathomics")
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


@dataclass
class Shown:
    """One toast of ours: the problems it lists, under which keys, and the widget (while it lives)."""

    severity: NotificationSeverity
    messages: list[tuple[str | None, str]] = field(default_factory=list)  # (key, message)
    toast: Any = None  # weakref to the NapariQtNotification


def _toasts() -> list[Any]:
    from napari._qt.dialogs.qt_notification import NapariQtNotification  # no public list of toasts; heavy (Qt)

    return list(NapariQtNotification._instances)  # no public list of the toasts on screen


def shown_notices() -> list[Shown]:
    """Our toasts still on screen."""
    out = []
    for t in _toasts():
        shown = getattr(t, "pathomics_notice", None)
        try:
            visible = shown is not None and bool(t.isVisible())
        except RuntimeError:  # its Qt object went with a closed window
            visible = False
        if visible:
            out.append(shown)
    return out


def _text(messages: list[tuple[str | None, str]]) -> str:
    if len(messages) == 1:
        return messages[0][1]
    return f"{len(messages)} problems:\n" + "\n".join(f"• {m}" for _, m in messages)


def _dispatch(shown: Shown) -> None:
    before = set(map(id, _toasts()))
    notification_manager.dispatch(Notification(_text(shown.messages), severity=shown.severity))
    new = [t for t in _toasts() if id(t) not in before]
    shown.toast = weakref.ref(new[-1]) if new else None
    if new:
        new[-1].pathomics_notice = shown


def _close(shown: Shown) -> None:
    t = shown.toast() if shown.toast is not None else None
    if t is not None:
        try:
            t.pathomics_notice = None
            t.close()
        except RuntimeError:  # already deleted with its window
            pass


def notify(message: str, severity: NotificationSeverity = NotificationSeverity.WARNING, key: str | None = None) -> None:
    """Show ``message``; merged with our toasts of the same severity still on screen; logged too."""
    LOG.log(
        logging.ERROR
        if severity >= NotificationSeverity.ERROR
        else logging.WARNING
        if severity >= NotificationSeverity.WARNING
        else logging.INFO,
        message,
    )
    merged = Shown(severity)
    for s in [s for s in shown_notices() if s.severity == severity]:
        merged.messages.extend(m for m in s.messages if m[0] is None or m[0] != key)
        _close(s)
    merged.messages = [m for m in merged.messages if m[1] != message] + [(key, message)]
    _dispatch(merged)


def withdraw(key: str) -> None:
    """Take back the notices raised under ``key`` (their cause is fixed); other problems stay shown."""
    for s in [s for s in shown_notices() if any(k == key for k, _ in s.messages)]:
        rest = [m for m in s.messages if m[0] != key]
        _close(s)
        if rest:
            _dispatch(Shown(s.severity, rest))


def show_warning(message: str, key: str | None = None) -> None:
    notify(message, NotificationSeverity.WARNING, key)


def show_error(message: str, key: str | None = None) -> None:
    notify(message, NotificationSeverity.ERROR, key)


def show_info(message: str) -> None:
    notify(message, NotificationSeverity.INFO)


def report(exc: BaseException, what: str = "", key: str | None = None) -> None:
    """Show a user error as a notification (never raise into Qt's event loop)."""
    prefix = f"{what}: " if what else ""
    if isinstance(exc, PathomicsError):
        show_error(f"{prefix}{exc}", key)
    else:
        LOG.error("unexpected error", exc_info=exc)
        show_error(f"{prefix}unexpected {type(exc).__name__}: {exc}", key)


def _from_package(filename: Any) -> bool:
    return str(filename).startswith(_PACKAGE_DIR)


def _warnings_to_log(original: Any) -> Any:
    """``original`` (napari's warning receiver) for our own warnings; the log for those of libraries."""

    def receive(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if _from_package(filename):
            original(message, category, filename, lineno, file, line)
        else:
            LOG.warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)

    receive.pathomics = True  # type: ignore[attr-defined]
    return receive


def install() -> None:
    """Route library warnings to the log (idempotent); our own warnings still reach the user."""
    if not getattr(notification_manager.receive_warning, "pathomics", False):
        receive = _warnings_to_log(notification_manager.receive_warning)
        notification_manager.receive_warning = receive  # what warnings from worker threads reach
        if not LOG.handlers:
            try:
                handler: logging.Handler = logging.FileHandler(log_dir() / "viewer.log", encoding="utf-8")
            except OSError:
                handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            LOG.addHandler(handler)
            LOG.setLevel(logging.INFO)
    if getattr(warnings.showwarning, "__self__", None) is notification_manager:
        warnings.showwarning = notification_manager.receive_warning  # napari's hook for warnings of the UI thread
