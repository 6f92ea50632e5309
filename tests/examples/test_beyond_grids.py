"""Each beyond-grids example runs end to end at reduced size (`--quick`) and writes its plot and
results; the numbers are the examples' own business, the plumbing is checked here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "beyond_grids"

pytestmark = pytest.mark.slow


def run_example(name: str, out: Path) -> str:
    run = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=out)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (out / f"{name}.png").stat().st_size > 1000
    return run.stdout


def verdict_labels(summary: dict) -> set[str]:
    return {row["verdict"]["label"] for name, row in summary.items()
            if isinstance(row, dict) and "verdict" in row}


def test_sensor_shift(tmp_path):
    stdout = run_example("sensor_shift", tmp_path)
    assert "scratch" in stdout and "dann" in stdout and "coral" in stdout
    payload = json.loads((tmp_path / "sensor_shift.json").read_text())
    for summary in payload["budgets"].values():
        assert set(summary) >= {"scratch", "linear-probe", "full", "dann", "coral"}
        assert verdict_labels(summary) <= {"positive transfer", "negative transfer", "inconclusive"}
        assert all(0 <= v <= 1 for v in summary["scratch"]["values"])


def test_survival(tmp_path):
    stdout = run_example("survival", tmp_path)
    assert "C-index" in stdout
    payload = json.loads((tmp_path / "survival.json").read_text())
    for summary in payload["sizes"].values():
        assert set(summary) >= {"scratch", "linear-probe", "full", "l2sp", "linear_cox"}
        assert all(0 <= v <= 1 for v in summary["full"]["values"])


def test_medical_images(tmp_path):
    stdout = run_example("medical_images", tmp_path)
    assert "head swap" in stdout and "segmentation decoder" in stdout
    payload = json.loads((tmp_path / "medical_images.json").read_text())
    assert set(payload["head_swap"]) == {"scratch", "head-swap", "head-swap frozen"}
    for loss in ("ce", "dice", "dice+ce"):
        row = payload["segmentation"][loss]
        assert len(row["scratch"]) == len(row["pre-trained"]) >= 2
        assert all(0 <= v <= 1 for v in row["pre-trained"] + row["iou"])
    assert 0 < payload["lesion_pixel_share"] < 0.05  # rare, small structures
