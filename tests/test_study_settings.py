"""The study choice's settings: the model's slice thickness from its spec (read without torch)
and the site's kernel table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import model
from dicom_edge import KernelFamily
from listener.config import DEFAULT_MODEL_SLICE_THICKNESS_MM, ListenerConfig
from stroke_triage.settings import Settings, model_slice_thickness_mm
from tests.helpers import REPO_ROOT, run_cli


def _checkpoint(folder: Path, **spec: object) -> Path:
    folder.mkdir(parents=True)
    shipped = json.loads((Path(model.__file__).parent / "weights" / "spec.json").read_text())
    (folder / "spec.json").write_text(json.dumps({**shipped, **spec}))
    return folder


def test_the_default_checkpoint_folder_is_the_shipped_one() -> None:
    from model.checkpoint import DEFAULT_CHECKPOINT_DIR

    assert Path(model.__file__).parent / "weights" == DEFAULT_CHECKPOINT_DIR
    shipped = json.loads((DEFAULT_CHECKPOINT_DIR / "spec.json").read_text())
    expected = shipped.get("slice_thickness_mm") or DEFAULT_MODEL_SLICE_THICKNESS_MM
    assert model_slice_thickness_mm(None) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"slice_thickness_mm": 1.0}, 1.0),
        ({"slice_thickness_mm": 2.5}, 2.5),
        ({}, 5.0),
        ({"slice_thickness_mm": None}, 5.0),
        ({"slice_thickness_mm": -3}, 5.0),
        ({"slice_thickness_mm": "thin"}, 5.0),
        ({"slice_thickness_mm": 1.0, "threshold": 2.0}, 5.0),
    ],
)
def test_the_listener_gets_the_models_thickness_from_its_spec(
    tmp_path: Path, spec: dict[str, object], expected: float
) -> None:
    folder = _checkpoint(tmp_path / "ckpt", **spec)
    if "slice_thickness_mm" not in spec:
        saved = json.loads((folder / "spec.json").read_text())
        saved.pop("slice_thickness_mm", None)
        (folder / "spec.json").write_text(json.dumps(saved))
    settings = Settings(data_dir=tmp_path / "data", worker={"checkpoint": folder})
    assert settings.listener_runtime().model_slice_thickness_mm == expected


def test_a_missing_or_broken_spec_gives_the_default(tmp_path: Path) -> None:
    assert model_slice_thickness_mm(tmp_path / "nowhere") == DEFAULT_MODEL_SLICE_THICKNESS_MM
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "spec.json").write_text("{not json")
    assert model_slice_thickness_mm(broken) == DEFAULT_MODEL_SLICE_THICKNESS_MM
    (broken / "spec.json").write_text("[1, 2]")
    assert model_slice_thickness_mm(broken) == DEFAULT_MODEL_SLICE_THICKNESS_MM


def test_the_listeners_runtime_is_resolved_without_torch(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path / "ckpt", slice_thickness_mm=1.25)
    code = (
        "import sys; from stroke_triage.settings import Settings; "
        f"r = Settings(worker={{'checkpoint': {str(folder)!r}}}).listener_runtime(); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(r.model_slice_thickness_mm)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.25"


def test_site_kernels_are_a_listener_setting(tmp_path: Path) -> None:
    config = ListenerConfig(kernel_families={"FC4?": "soft", "XB*": "bone"})
    assert config.kernel_families == {"FC4?": KernelFamily.SOFT, "XB*": KernelFamily.BONE}
    with pytest.raises(ValidationError, match="soft"):
        ListenerConfig(kernel_families={"FC43": "medium"})
    env = {
        "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
        "STROKE_TRIAGE_LISTENER__KERNEL_FAMILIES": json.dumps({"FC43": "soft"}),
    }
    shown = run_cli(["settings"], env)
    assert shown.returncode == 0, shown.stderr
    assert "FC43" in shown.stdout
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
