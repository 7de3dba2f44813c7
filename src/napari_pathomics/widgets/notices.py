"""What the pathologist is told: every problem of a moment in one toast, stale ones withdrawn.

napari stacks its toasts in one corner, so a second error hides the first: a problem shown while
an earlier one of the same severity is still up is merged with it into one toast. A notice raised
under a key (e.g. a slide's missing pixel size) is withdrawn when its cause is fixed. Warnings of
libraries (scikit-image, dask, …) name internals a pathologist cannot act on: they go to the log.
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
class _Shown:
    """One toast of ours: the problems it lists, under which keys, and the widget (while it lives)."""

    severity: NotificationSeverity
    messages: list[tuple[str | None, str]] = field(default_factory=list)  # (key, message)
    toast: Any = None  # weakref to the NapariQtNotification

    def alive(self) -> bool:
        t = self.toast() if self.toast is not None else None
        if t is None or t not in _toasts():
            return False
        try:
            return bool(t.isVisible())
        except RuntimeError:  # its Qt object went with a closed window
            return False


_SHOWN: list[_Shown] = []


def _toasts() -> list[Any]:
    from napari._qt.dialogs.qt_notification import NapariQtNotification  # heavy (Qt): only once a toast exists

    return list(NapariQtNotification._instances)


def _text(messages: list[tuple[str | None, str]]) -> str:
    if len(messages) == 1:
        return messages[0][1]
    return f"{len(messages)} problems:\n" + "\n".join(f"• {m}" for _, m in messages)


def _dispatch(shown: _Shown) -> None:
    before = set(map(id, _toasts()))
    notification_manager.dispatch(Notification(_text(shown.messages), severity=shown.severity))
    new = [t for t in _toasts() if id(t) not in before]
    shown.toast = weakref.ref(new[-1]) if new else None
    _SHOWN.append(shown)


def _close(shown: _Shown) -> None:
    t = shown.toast() if shown.toast is not None else None
    if t is not None:
        try:
            t.close()
        except RuntimeError:  # already deleted with its window
            pass
    if shown in _SHOWN:
        _SHOWN.remove(shown)


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
    _SHOWN[:] = [s for s in _SHOWN if s.alive()]
    merged = _Shown(severity)
    for s in [s for s in _SHOWN if s.severity == severity]:
        merged.messages.extend(m for m in s.messages if m[0] is None or m[0] != key)
        _close(s)
    merged.messages = [m for m in merged.messages if m[1] != message] + [(key, message)]
    _dispatch(merged)


def withdraw(key: str) -> None:
    """Take back the notices raised under ``key`` (their cause is fixed); other problems stay shown."""
    for s in [s for s in _SHOWN if any(k == key for k, _ in s.messages)]:
        rest = [m for m in s.messages if m[0] != key]
        _close(s)
        if rest:
            _dispatch(_Shown(s.severity, rest))


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


_ORIGINAL_RECEIVE: Any = None


def _receive_warning(
    message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    if _from_package(filename):
        _ORIGINAL_RECEIVE(message, category, filename, lineno, file, line)
    else:
        LOG.warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)


def install() -> None:
    """Route library warnings to the log (idempotent); our own warnings still reach the user."""
    global _ORIGINAL_RECEIVE
    if _ORIGINAL_RECEIVE is None:
        _ORIGINAL_RECEIVE = notification_manager.receive_warning
        notification_manager.receive_warning = _receive_warning  # what warnings from worker threads reach
        if not LOG.handlers:
            try:
                handler: logging.Handler = logging.FileHandler(log_dir() / "viewer.log", encoding="utf-8")
            except OSError:
                handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            LOG.addHandler(handler)
            LOG.setLevel(logging.INFO)
    if getattr(warnings.showwarning, "__self__", None) is notification_manager:
        warnings.showwarning = _receive_warning  # napari's hook for warnings of the UI thread
