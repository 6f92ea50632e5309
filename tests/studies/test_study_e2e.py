"""A tiny study end to end on real data: case9 -> case14, a few dozen AC-OPF-labelled scenarios,
two strategies, one seed. Needs the data engine (pandapower, cvxpy), pre-training and the
fine-tuning entry point (`gridtune.core.api.finetune`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import pandas as pd
import pytest

from gridtune.studies.report import write_report
from gridtune.studies.runner import run_study
from gridtune.studies.spec import load_study

pytestmark = pytest.mark.slow

SPEC = """
name = "ci"
task = "feasibility"
sources = ["case9"]
targets = ["case14"]
strategies = ["full", "linear-probe"]
labels = [10, 20]
seeds = [0]

[data]
samples = 36
[data.overrides]
# a fixed load-scale range around both re-rated grids' boundaries: no calibration solves
loads = { scale = [0.8, 1.5] }
topology = { candidates = 3 }
labels = { dc = false }

[pretrain]
epochs = 15

[finetune]
epochs = 25
patience = 8
"""
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    cache = tmp_path_factory.getbasetemp() / "gridtune-cache"
    old = os.environ.get("GRIDTUNE_CACHE")
    os.environ["GRIDTUNE_CACHE"] = str(cache)
    (root / "ci.toml").write_text(SPEC)
    spec = load_study(root / "ci.toml")
    lines: list[str] = []
    outcome = run_study(spec, root / "out", workers=2, log=lines.append, progress=False)
    yield spec, root / "out", outcome, lines
    if old is None:
        os.environ.pop("GRIDTUNE_CACHE", None)
    else:
        os.environ["GRIDTUNE_CACHE"] = old


def test_results_csv_has_one_row_per_cell_with_metrics_and_gain(study):
    spec, out, outcome, lines = study
    assert outcome.cells == 4 and outcome.failed == 0, "\n".join(lines)
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 4
    for col in ("source", "target", "strategy", "labels", "seed", "constraint", "formulation",
                "status", "auroc", "scratch_auroc", "transfer_gain", "wall_time_s"):
        assert col in frame.columns
    assert set(frame["strategy"]) == {"full", "linear-probe"}
    assert (frame["status"] == "ok").all()
    assert frame["transfer_gain"].notna().all()  # linear-probe borrows full's scratch baseline
    assert ((frame["auroc"] >= 0) & (frame["auroc"] <= 1)).all()
    study_json = json.loads((out / "study.json").read_text())
    assert study_json["spec"]["strategies"] == ["full", "linear-probe"]
    datasets = json.loads((out / "datasets.json").read_text())
    assert set(datasets) == {"case9", "case14"}
    assert all(len(d["content_hash"]) >= 8 for d in datasets.values())


def test_plots_and_report(study):
    _, out, outcome, _ = study
    for name in ("learning_curves", "transfer_matrix", "reliability"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    text = outcome.report_md.read_text()
    assert "`full`" in text or "| full |" in text
    assert "linear-probe" in text
    assert "data:image/png;base64," in outcome.report_html.read_text()
    assert "full" in outcome.summary and "linear-probe" in outcome.summary


def test_rerun_skips_finished_cells_and_records_a_failing_cell(study):
    spec, out, _, _ = study
    records = sorted((out / "results").glob("*.json"))
    before = {p.name: p.read_text() for p in records}
    again = run_study(spec, out, workers=1, log=lambda s: None, progress=False, report=False)
    assert (again.ran, again.skipped) == (0, 4)
    assert {p.name: p.read_text() for p in records} == before
    # a corrupt source checkpoint without a seal (as written before seals existed) makes the
    # cells that still have to run fail, one by one
    victim = records[0]
    victim.unlink()
    weights = next(p for p in (out / "pretrain" / "case9").iterdir() if p.suffix == ".safetensors")
    seal = out / "pretrain" / "case9" / "checksums.json"
    saved, saved_seal = weights.read_bytes(), seal.read_bytes()
    weights.write_bytes(b"not a checkpoint")
    seal.unlink()
    try:
        third = run_study(spec, out, workers=1, log=lambda s: None, progress=False, report=False)
    finally:
        weights.write_bytes(saved)
        seal.write_bytes(saved_seal)
    assert (third.ran, third.skipped, third.failed) == (1, 3, 1)
    rec = json.loads(victim.read_text())
    assert rec["status"] == "failed" and "Checkpoint" in rec["error"]
    frame = pd.read_csv(out / "results.csv")
    assert (frame["status"] == "failed").sum() == 1
    md, _ = write_report(out)
    assert victim.stem in md.read_text().split("## Failed cells")[1]
    shutil.rmtree(out / "cells" / victim.stem, ignore_errors=True)


def test_damaged_files_are_named_and_only_their_part_runs_again(study):
    """A bit-flipped record and truncated source weights: `report --verify` names the first,
    the rerun says what it redoes (one pre-training, one cell) and reuses everything else."""
    from gridtune.cli import main
    from gridtune.studies.store import verify_study

    spec, out, _, _ = study
    assert verify_study(out) > 10
    records = sorted((out / "results").glob("*.json"))
    victim = next(p for p in records if json.loads(p.read_text())["status"] == "ok")
    raw = bytearray(victim.read_bytes())
    raw[raw.index(b'"status"') + 12] ^= 0x01  # "ok" -> "nk": still JSON, no longer true
    victim.write_bytes(bytes(raw))
    assert main(["report", str(out), "--verify"]) == 2
    weights = out / "pretrain" / "case9" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    retried = sum(json.loads(p.read_text())["status"] == "failed" for p in records if p != victim)
    lines: list[str] = []
    again = run_study(spec, out, workers=1, log=lines.append, progress=False, report=False)
    text = "\n".join(lines)
    assert f"record `{victim}` has other content than was written" in text
    assert "model.safetensors` is truncated" in text and "pre-training again" in text
    assert again.failed == 0 and again.ran == 1 + retried, text
    assert verify_study(out) > 10


def _kill_first_ray_task(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running a task (its title is `ray::_run_chunk`)."""
    import psutil

    while not stop.is_set() and not killed:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if (proc.info["cmdline"] or [""])[0].startswith("ray::_run_chunk"):
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed.append(proc.info["pid"])
                break
        time.sleep(0.05)


def test_cells_run_on_ray_and_a_killed_worker_is_retried(study):
    """The documented rule: a Ray worker killed mid-cell is retried on a new worker (up to
    `RAY_TASK_RETRIES` times) and the cell ends with the result it has without the kill."""
    ray = pytest.importorskip("ray")
    spec, out, _, _ = study
    records = sorted((out / "results").glob("*.json"))
    retry = sum(json.loads(p.read_text())["status"] != "ok" for p in records)  # failed cells rerun
    victim = next(p for p in reversed(records) if json.loads(p.read_text())["status"] == "ok")
    before = json.loads(victim.read_text())["metrics"]
    victim.unlink()
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_ray_task, args=(killed, stop), daemon=True)
    killer.start()
    try:
        again = run_study(spec, out, workers=1, backend="ray", log=lambda s: None,
                          progress=False, report=False)
    finally:
        stop.set()
        killer.join()
        ray.shutdown()
    assert killed, "no Ray worker was seen running a cell"
    assert (again.ran, again.skipped, again.failed) == (1 + retry, 3 - retry, 0)
    record = json.loads(victim.read_text())
    assert record["status"] == "ok" and record["metrics"] == before


def test_a_built_dataset_directory_can_be_a_target(study, tmp_path):
    from gridtune.studies.plan import expand, make_plan

    _, out, _, _ = study
    directory = json.loads((out / "datasets.json").read_text())["case14"]["directory"]
    path = tmp_path / "reuse.toml"
    path.write_text(SPEC.replace('targets = ["case14"]', f'targets = ["{directory}"]'))
    spec = load_study(path)
    assert {c.target for c in expand(spec)} == {"case14"}
    assert make_plan(spec).dataset("case14").samples == 36


def test_records_carry_what_the_report_reads(study):
    _, out, _, _ = study
    rec = json.loads(next((out / "results").glob("*__full__*.json")).read_text())
    assert rec["status"] == "ok" and rec["n_test"] > 0
    assert rec["reliability"] and {"lower", "count", "mean_prob", "frac_positive"} <= set(
        rec["reliability"][0])
    assert rec["zero_shot"]["auroc"] is not None  # the source model before fine-tuning
    text = (out / "report.md").read_text()
    zero = text.split("## Zero-shot on the targets")[1].split("##")[0]
    assert f"| case9 | case14 | {rec['zero_shot']['auroc']:.4f} ± 0.0000 | 1 |" in zero
    assert "## Transfer verdicts" in text and "inconclusive (one seed)" in text
    assert "negative transfer" not in text.split("## Results")[1].split("## Transfer")[0]


def test_execution_never_consults_the_spec(study, monkeypatch):
    """The plan is resolved once; running it touches neither the spec module nor resolution."""
    import gridtune.studies.plan as plan_mod
    import gridtune.studies.spec as spec_mod
    from gridtune.studies.plan import make_plan
    from gridtune.studies.runner import run_plan

    spec, out, _, _ = study
    plan = make_plan(spec)
    victim = sorted((out / "results").glob("*.json"))[-1]
    victim.unlink()

    def forbidden(*args, **kwargs):
        raise AssertionError("the spec was consulted while the plan ran")

    for name in ("load_study", "check_files", "check_study", "is_dataset_directory"):
        monkeypatch.setattr(spec_mod, name, forbidden)
    for name in ("resolve", "constraint_path", "to_dict", "headline"):
        monkeypatch.setattr(spec_mod.StudySpec, name, property(forbidden) if name == "headline"
                            else forbidden)
    for name in ("make_plan", "expand", "grid_refs", "grid_label", "recipe_table",
                 "pretrain_config", "transfer_config"):
        monkeypatch.setattr(plan_mod, name, forbidden)
    outcome = run_plan(plan, out, workers=1, log=lambda s: None, progress=False)
    assert (outcome.ran, outcome.skipped, outcome.failed) == (1, 3, 0)
    assert json.loads(victim.read_text())["status"] == "ok"
    assert outcome.report_md.is_file()


# the e2e data (same recipes, hence the same cached datasets) and tiny schedules
REDUCED = ["--set", 'sources=["case9"]', "--set", 'targets=["case14"]',
           "--set", "data.samples=36",
           "--set", "data.overrides={loads={scale=[0.8, 1.5]}, topology={candidates=3}, "
                    "labels={dc=false}}",
           "--set", "seeds=[0]", "--set", "unlabeled=8", "--set", "pretrain.epochs=3",
           "--set", "finetune.epochs=3", "--set", "finetune.patience=2", "--workers", "1"]


@pytest.mark.parametrize("name, labels, cells", [
    ("transfer_curve", 10, 4),
    ("constraints_monotone", 10, 6),
    ("constraints_power_balance", 6, 6),
])
def test_reduced_benchmark_specs_run(study, tmp_path, capsys, name, labels, cells):
    from pathlib import Path

    from gridtune.cli import main

    spec = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.toml"
    out = tmp_path / name
    code = main(["study", "run", str(spec), "--out", str(out), "--set", f"labels=[{labels}]",
                 *REDUCED])
    printed = capsys.readouterr().out
    frame = pd.read_csv(out / "results.csv")
    assert code == 0, frame[["cell_id", "error"]].to_string()
    assert len(frame) == cells and (frame["status"] == "ok").all()
    assert "transfer verdicts" in printed
    text = (out / "report.md").read_text()
    if name == "transfer_curve":
        assert frame["transfer_gain"].notna().all()
        assert "## Label efficiency" not in text  # one budget: nothing to compare
    else:
        cset = "monotone_load" if name == "constraints_monotone" else "power_balance"
        table = text.split(f"## Constraint `{cset}` (test split)")[1].split("##")[0]
        for variant in ("unconstrained", "penalty_w0.1", "penalty", "penalty_w10", "lagrangian",
                        "augmented-lagrangian"):
            assert f"| {variant} |" in table
        if name == "constraints_power_balance":
            assert "## Constraint `nodal_balance` (test split)" in text
            assert "Δ metrics" in table


def test_a_source_set_pretrains_one_model_across_its_grids(study, tmp_path):
    """`[source_sets]`: one checkpoint trained on both grids (its per-source scores name them),
    fine-tuned on the target; rerun, the pre-training is reused."""
    path = tmp_path / "set.toml"
    path.write_text(SPEC.replace('sources = ["case9"]', 'sources = ["both"]')
                    .replace('strategies = ["full", "linear-probe"]', 'strategies = ["full"]')
                    .replace("labels = [10, 20]", 'labels = [10]\npairs = "all"')
                    + '\n[source_sets]\nboth = ["case9", "case14"]\n')
    lines: list[str] = []
    outcome = run_study(load_study(path), tmp_path / "out", workers=1, log=lines.append,
                        progress=False, report=False)
    assert (outcome.ran, outcome.failed) == (1, 0)
    metrics = json.loads((tmp_path / "out" / "pretrain" / "both" / "metrics.json").read_text())
    assert set(metrics["per_source"]) == {"case9", "case14"}
    again: list[str] = []
    rerun = run_study(load_study(path), tmp_path / "out", workers=1, log=again.append,
                      progress=False)
    assert not any(line.startswith("pretrain:") for line in again)
    assert "sources: both (one model across case9 + case14)" in rerun.report_md.read_text()
