"""``pathomics import-model``: peers' model folders become validated bundles, and nothing from them runs.

* a folder written by timm's own ``save_for_hf(model, dir, safe_serialization=True)`` (random init,
  nothing downloaded) imports, validates, gives the same logits as the model it came from and runs
  ``infer`` on a synthetic slide;
* a WSInfer-style folder (``spacing_um_px``, ``patch_size_pixels``, ``class_names``, a transform
  with Resize and Normalize, safetensors weights) keeps its geometry and normalisation;
* pickled (``.pt``/``.bin``) and TorchScript weights are refused with the command that converts
  them on a trusted machine, and are never unpickled: their ``__reduce__`` would create a marker
  file, which must not exist after the API and the CLI have refused them;
* that command is a fixed program taking the paths as shell-quoted arguments: a file named to
  break out of Python or shell quoting runs nothing when the printed line is pasted into a shell;
* a config's ``num_classes`` of 1e9 or a string ``drop_rate`` in ``model_args`` is one line.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models._hub import save_for_hf

from _slides import small_slide
from napari_pathomics.bundle import Bundle, validate_bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.errors import BundleError
from napari_pathomics.inference.backbones import build_model
from napari_pathomics.inference.checks import runtime_problems
from napari_pathomics.inference.importers import ImportOptions, import_model


class _Marker:
    """Unpickling this creates ``marker``: proof that something from the source ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    src = tmp_path_factory.mktemp("hf") / "my-hf-model"
    save_for_hf(model, str(src), model_config={"label_names": ["tumour", "stroma", "normal"]}, safe_serialization=True)
    return src, model


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_slide(tmp_path_factory.mktemp("slide") / "case.svs")


def test_timm_save_for_hf_folder_imports_and_runs(hf_model, slide, tmp_path, capsys) -> None:
    src, model = hf_model
    assert sorted(p.name for p in src.iterdir()) == ["config.json", "model.safetensors"]
    out = tmp_path / "bundle"
    assert cli_main(["import-model", str(src), "--out", str(out), "--color", "tumour=#D62728", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    b = Bundle.load(out)
    assert summary["bundle_id"] == b.bundle_id
    assert b.architecture == "test_resnet" and b.class_names == ["tumour", "stroma", "normal"]
    assert b.high_risk_classes == ["tumour"] and b.class_colors[0] == "#D62728"
    assert b.input_size == 160 and b.mpp == 0.5 and b.tile_um == pytest.approx(80.0)
    assert b.mean == [0.5, 0.5, 0.5] and b.std == [0.5, 0.5, 0.5]
    assert validate_bundle(out) == [] and runtime_problems(b) == []
    assert cli_main(["validate-bundle", str(out)]) == 0
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(build_model(b).module(x), model(x))
    capsys.readouterr()
    assert (
        cli_main(
            [
                "infer",
                str(slide),
                "--bundle",
                str(out),
                "--out",
                str(tmp_path / "res"),
                "--device",
                "cpu",
                "--cam",
                "tumour",
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["tiles"] > 0 and res["done"] == res["tiles"] - res["background"] and res["failed"] == 0


def _wsinfer_folder(folder: Path, weights_name: str = "model.safetensors") -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(1)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2).eval()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "spec_version": "1.0",
                "architecture": "test_resnet",
                "num_classes": 2,
                "class_names": ["notumor", "tumor"],
                "patch_size_pixels": 350,
                "spacing_um_px": 0.25,
                "transform": [
                    {"name": "Resize", "arguments": {"size": 64}},
                    {"name": "ToTensor"},
                    {"name": "Normalize", "arguments": {"mean": [0.7, 0.6, 0.75], "std": [0.1, 0.12, 0.11]}},
                ],
            }
        )
    )
    if weights_name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / weights_name))
    return folder, model


def test_wsinfer_folder_keeps_geometry_and_normalisation(tmp_path, slide, capsys) -> None:
    src, model = _wsinfer_folder(tmp_path / "wsinfer-model")
    b = import_model(src, tmp_path / "bundle", ImportOptions(name="tcga-tumor"))
    assert b.name == "tcga-tumor" and b.class_names == ["notumor", "tumor"] and b.high_risk_classes == ["tumor"]
    assert b.input_size == 64 and b.mpp == 0.25 and b.tile_um == pytest.approx(87.5)
    assert b.mean == [0.7, 0.6, 0.75] and b.std == [0.1, 0.12, 0.11]
    assert b.gradcam_target_layer and runtime_problems(b) == []
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(build_model(b).module(x), model(x))
    assert (
        cli_main(
            ["infer", str(slide), "--bundle", str(b.path), "--out", str(tmp_path / "res"), "--device", "cpu", "--quiet"]
        )
        == 0
    )


@pytest.mark.parametrize(
    "name, kind", [("pytorch_model.bin", "pickled"), ("model.pt", "pickled"), ("model_torchscript.pt", "TorchScript")]
)
def test_pickled_and_torchscript_weights_are_refused_unopened(tmp_path, capsys, name: str, kind: str) -> None:
    marker = tmp_path / f"RAN-{name}"
    src, _ = _wsinfer_folder(tmp_path / "src", weights_name=name)
    (src / name).write_bytes(pickle.dumps({"state_dict": _Marker(marker)}, protocol=4))
    out = tmp_path / "bundle"
    with pytest.raises(BundleError) as info:
        import_model(src, out)
    msg = str(info.value)
    assert f"{kind} weights are refused" in msg and "\n" not in msg
    assert "save_file" in msg and ("weights_only=True" in msg or "torch.jit.load" in msg)  # how to convert them
    assert cli_main(["import-model", str(src), "--out", str(out)]) == BundleError.exit_code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and kind in err[0], err
    assert not marker.exists() and not out.exists()
    pickle.loads((src / name).read_bytes())  # the marker works: its absence above means something
    assert marker.exists()


@pytest.mark.parametrize("name", ["model.pt", "pytorch_model.bin"])
def test_real_torch_and_torchscript_files_get_the_right_conversion(tmp_path, name: str) -> None:
    """What torch itself writes: a state_dict checkpoint, and a traced TorchScript module under a plain name."""
    src, model = _wsinfer_folder(tmp_path / "ckpt", weights_name=name)
    torch.save(model.state_dict(), src / name)
    with pytest.raises(BundleError, match=r"pickled weights are refused.*weights_only=True"):
        import_model(src, tmp_path / "b1")
    jit_src, _ = _wsinfer_folder(tmp_path / "jit", weights_name=name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated in favour of torch.export
        torch.jit.trace(model, torch.zeros(1, 3, 64, 64)).save(str(jit_src / name))
    with pytest.raises(BundleError, match=r"TorchScript weights are refused.*torch\.jit\.load"):
        import_model(jit_src, tmp_path / "b2")
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()


@pytest.mark.parametrize(
    "name",
    [
        "evil'); __import__('os').system('touch PWNED'); ('.pt",
        'evil"; touch PWNED; ".pt',
        "$(touch PWNED).pt",
        "`touch PWNED`.bin",
    ],
)
def test_the_conversion_hint_runs_no_code_from_the_file_name(tmp_path, name: str) -> None:
    """Pasting the printed command converts the checkpoint and runs nothing the file name says."""
    src, model = _wsinfer_folder(tmp_path / "src", weights_name=name)
    torch.save(model.state_dict(), src / name)
    with pytest.raises(BundleError) as info:
        import_model(src, tmp_path / "bundle")
    msg = str(info.value)
    assert "\n" not in msg
    command = msg.split("convert them with: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-c"] and argv[3:] == [
        str((src / name).resolve()),
        str(src.resolve() / "model.safetensors"),
    ]
    assert "touch" not in argv[2] and name not in argv[2]  # the program is fixed: no input inside it
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list(tmp_path.rglob("PWNED")) and not list(Path.cwd().glob("PWNED"))
    assert (src / "model.safetensors").is_file()
    assert import_model(src, tmp_path / "bundle").num_classes == 2  # the converted weights import


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda c: c.update(num_classes=1e9), "num_classes must be a whole number from 1 to 10000"),
        (lambda c: c.update(num_classes=2.5), "num_classes must be a whole number"),
        (lambda c: c.setdefault("model_args", {}).update(drop_rate="0.5"), "model_args.drop_rate"),
        (lambda c: c.setdefault("model_args", {}).update(drop_path_rate=5.0), "model_args.drop_path_rate"),
        (lambda c: c.setdefault("model_args", {}).update(embed_dim=1e9), "model_args.embed_dim"),
        (lambda c: c.update(model_args=["x"]), "model_args must be an object"),
        (lambda c: c["pretrained_cfg"].update(input_size=[3, "a", "a"]), "input_size"),
    ],
)
def test_unbounded_or_mistyped_config_values_are_one_line(tmp_path, hf_model, capsys, edit, words: str) -> None:
    src = tmp_path / "src"
    shutil.copytree(hf_model[0], src)
    cfg = json.loads((src / "config.json").read_text())
    edit(cfg)
    (src / "config.json").write_text(json.dumps(cfg))
    assert cli_main(["import-model", str(src), "--out", str(tmp_path / "bundle")]) == BundleError.exit_code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "bundle").exists()


def test_a_pickle_named_safetensors_is_refused_unopened(tmp_path, hf_model) -> None:
    src = tmp_path / "src"
    shutil.copytree(hf_model[0], src)
    marker = tmp_path / "RAN"
    (src / "model.safetensors").write_bytes(pickle.dumps(_Marker(marker), protocol=2))
    with pytest.raises(BundleError, match="named .safetensors"):
        import_model(src, tmp_path / "bundle")
    assert not marker.exists() and not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda c: c.update(architecture="no_such_net_xyz"), "timm cannot build"),
        (lambda c: c.update(num_classes=5), "class names for 5 classes"),
        (lambda c: c["pretrained_cfg"].update(mean=[float("nan"), 0.5, 0.5]), "finite"),
        (lambda c: c["pretrained_cfg"].update(input_size=[3, 4096, 4096]), "input_size"),
    ],
)
def test_a_bad_config_is_one_line_and_leaves_no_bundle(tmp_path, hf_model, edit, words: str) -> None:
    src = tmp_path / "src"
    shutil.copytree(hf_model[0], src)
    cfg = json.loads((src / "config.json").read_text())
    edit(cfg)
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError) as info:
        import_model(src, tmp_path / "bundle")
    assert words in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "bundle").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_what_the_source_lacks_is_supplied_by_the_user(hf_model, tmp_path, capsys) -> None:
    """Tile µm, µm/px, colours, Grad-CAM layer, high-risk classes and Macenko from the command line."""
    src, _ = hf_model
    out = tmp_path / "bundle"
    assert (
        cli_main(
            [
                "import-model",
                str(src),
                "--out",
                str(out),
                "--name",
                "peer model",
                "--tile-um",
                "100",
                "--mpp",
                "0.25",
                "--gradcam-layer",
                "layer3",
                "--high-risk",
                "stroma,normal",
                "--color",
                "stroma=#00ff00",
                "--color",
                "normal=#0000FF",
                "--macenko",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    b = Bundle.load(out)
    assert summary["gradcam_target_layer"] == b.gradcam_target_layer == "layer3"
    assert b.name == "peer model" and b.tile_um == pytest.approx(100.0) and b.mpp == 0.25
    assert b.high_risk_classes == ["stroma", "normal"] and b.macenko is not None
    assert [c.lower() for c in b.class_colors[1:]] == ["#00ff00", "#0000ff"]
    assert len(set(b.class_colors)) == 3  # the unnamed class gets a colour of its own
    assert validate_bundle(out) == [] and runtime_problems(b) == []


def test_the_default_gradcam_layer_is_the_last_feature_stage(hf_model, tmp_path) -> None:
    b = import_model(hf_model[0], tmp_path / "bundle")
    assert b.gradcam_target_layer == "layer4" and runtime_problems(b) == []


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--gradcam-layer", "fc.weight"], "gradcam"),
        (["--gradcam-layer", "__class__"], "gradcam"),
        (["--gradcam-layer", "no_such_layer"], "gradcam"),
        (["--color", "tumour=red-ish"], "tumour"),
        (["--color", "tumour"], "CLASS=#RRGGBB"),
        (["--color", "nosuchclass=#ff0000"], "nosuchclass"),
        (["--high-risk", "nosuchclass"], "nosuchclass"),
        (["--tile-um", "-5"], "--tile-um"),
        (["--tile-um", "100000"], "--tile-um"),
    ],
)
def test_bad_user_values_are_one_line_and_leave_no_bundle(hf_model, tmp_path, argv, words: str, capsys) -> None:
    out = tmp_path / "bundle"
    try:
        code = cli_main(["import-model", str(hf_model[0]), "--out", str(out), *argv])
    except SystemExit as exc:  # argparse's range checks
        code = exc.code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code not in (0, None) and len(err) == 1 and words in err[0] and "Traceback" not in err[0], (code, err)
    assert "internal error" not in err[0], err  # a refusal, not a crash caught by the top level
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]
