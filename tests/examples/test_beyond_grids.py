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


def _dcurves_net_benefit(probs, labels, thresholds):
    pd = pytest.importorskip("pandas")
    dcurves = pytest.importorskip("dcurves")
    df = dcurves.dca(data=pd.DataFrame({"y": labels, "model": probs}), outcome="y",
                     modelnames=["model"], thresholds=list(thresholds))
    return {name: df[df["model"] == name].sort_values("threshold")["net_benefit"].to_numpy()
            for name in ("model", "all", "none")}


def _assert_matches_dcurves(probs, labels):
    import numpy as np

    from gridtune.core.decision import net_benefit

    thresholds = np.arange(1, 100) / 100
    ours = net_benefit(probs, labels, thresholds)
    ref = _dcurves_net_benefit(probs, labels, thresholds)
    np.testing.assert_allclose(ours["model"], ref["model"], atol=1e-12)
    np.testing.assert_allclose(ours["treat_all"], ref["all"], atol=1e-12)
    np.testing.assert_allclose(ours["treat_none"], ref["none"], atol=1e-12)


def test_ultrasound_two_stage_and_its_decision_curve_against_dcurves(tmp_path):
    import numpy as np

    stdout = run_example("ultrasound_two_stage", tmp_path)
    assert "ssl + full" in stdout and "ECE" in stdout
    payload = json.loads((tmp_path / "ultrasound_two_stage.json").read_text())
    assert verdict_labels(payload["results"]) <= {"positive transfer", "negative transfer", "inconclusive"}
    assert payload["ssl_history"][-1] < payload["ssl_history"][0]  # stage one learnt something
    assert all(t > 0 for t in payload["calibration"]["ssl + full"]["temperature"])
    # the decision curve the example draws, on its own test predictions, is dcurves' curve
    saved = np.load(tmp_path / "ultrasound_two_stage_predictions.npz")
    _assert_matches_dcurves(saved["probs"], saved["labels"])


def test_decision_curve_matches_dcurves_with_ties_at_thresholds():
    import numpy as np

    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=400) < 0.3).astype(int)
    probs = np.round(np.clip(0.3 * labels + rng.uniform(0, 0.7, 400), 0.01, 0.99), 2)
    _assert_matches_dcurves(probs, labels)  # probabilities equal to thresholds: ">=" on both


def test_clinical_text(tmp_path):
    stdout = run_example("clinical_text", tmp_path)
    assert "hospital B" in stdout
    payload = json.loads((tmp_path / "clinical_text.json").read_text())
    for summary in payload["budgets"].values():
        assert set(summary) >= {"scratch", "full", "coral", "dann"}
        assert verdict_labels(summary) <= {"positive transfer", "negative transfer", "inconclusive"}


def test_drug_target(tmp_path):
    stdout = run_example("drug_target", tmp_path)
    assert "alignment" in stdout
    payload = json.loads((tmp_path / "drug_target.json").read_text())
    for summary in payload["budgets"].values():
        assert set(summary) >= {"scratch", "full", "adapter", "adapter + alignment"}
        # RMSE: the verdict's gain is the reduction (higher_is_better=False)
        row = summary["adapter + alignment"]
        assert row["verdict"]["gain_mean"] == pytest.approx(
            summary["scratch"]["mean"] - row["mean"], abs=1e-9)


def test_clinical_text_hospitals_share_a_tokenizer_but_not_most_finding_words():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import clinical_text
    finally:
        sys.path.remove(str(EXAMPLES))
    a = {t for x, _ in clinical_text.notes(300, "A", 0) for t in x.tolist() if t}
    b = {t for x, _ in clinical_text.notes(300, "B", 0) for t in x.tolist() if t}
    assert a & b and b - a  # shared words, and words only hospital B writes
    labels = [int(y) for _, y in clinical_text.notes(500, "B", 1)]
    assert 0.2 < sum(labels) / len(labels) < 0.8
