"""``pathomics view`` and ``pathomics demo``: open napari with the plugin's docks.

napari is imported inside the handlers only, so every other command stays GUI-free.
"""

from __future__ import annotations

import argparse


def _launch(slides: list[str], demo: bool, run: bool) -> int:
    import napari

    from ..resources import SAMPLE_SLIDE
    from ..widgets.viewer import open_window
    from ..widgets.window import after_first_frame

    viewer = open_window([str(SAMPLE_SLIDE)] if demo else slides)

    def finish() -> None:
        from ..widgets.app import finish_viewer  # the docks load the model, signature and plots: after the slide shows

        finish_viewer(viewer, demo=demo, run=run)

    after_first_frame(viewer, finish)
    napari.run()
    return 0


def _view(args: argparse.Namespace) -> int:
    return _launch(args.slides, demo=False, run=False)


def _demo(args: argparse.Namespace) -> int:
    return _launch([], demo=True, run=not args.no_run)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="open napari with the pathomics docks (and slides)")
    p.add_argument("slides", nargs="*", help="slides to open")
    p.set_defaults(handler=_view)
    p = sub.add_parser("demo", help="open the bundled H&E sample, analyse and score it in napari")
    p.add_argument("--no-run", action="store_true", help="open the sample without running the model")
    p.set_defaults(handler=_demo)
