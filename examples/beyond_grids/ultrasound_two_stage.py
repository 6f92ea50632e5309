"""Two-stage adaptation of an ultrasound-style classifier to a new scanner, with a verdict,
temperature scaling and a decision curve.

A lesion classifier (benign: round, smooth-edged mass; malignant: lobulated, spiculated margin
with posterior shadowing) is pre-trained on images of scanner A. Scanner B has another gain,
coarser speckle, depth attenuation and an offset: the source model's scores shift. Stage one
(`gridtune.core.ssl.pre_adapt`) trains the encoder to reconstruct masked pixels of unlabelled
scanner-B images (masked image modelling); stage two fine-tunes on a few labelled scanner-B
images (`full`). Beside it: full fine-tuning without stage one, a linear probe, and the same CNN
from scratch, over several seeds, judged by the core's verdict (negative transfer is flagged when
the whole interval of the gain lies below zero). The two-stage model is then calibrated by
temperature scaling on the validation labels (ECE before and after on the test images) and its
decision curve (net benefit of referring a patient when P(malignant) exceeds a threshold) is drawn
against refer-all and refer-none.

    python examples/beyond_grids/ultrasound_two_stage.py            # ~1.5 min on one core
    python examples/beyond_grids/ultrasound_two_stage.py --quick    # smoke run

The CNN reads an image as rows of pixels (B*H*W, 1), so that masked pixels are rows that the
core's masked-feature pre-adaptation replaces and reconstructs; its blocks reshape to
(B, C, H, W) around each convolution.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from _common import (
    Timer,
    comparison_lines,
    parser,
    pretrain,
    results_table,
    run_strategy,
    setup,
    write_json,
)
from torch import Tensor, nn

from gridtune.core.calibration import calibrate, probabilities
from gridtune.core.decision import net_benefit, useful_thresholds
from gridtune.core.ssl import pre_adapt
from gridtune.core.tasks import ClassificationTask, binary_auroc
from gridtune.core.trainer import TrainConfig, evaluate, predict

SIZE = 24


class Scans:
    """A batch: pixel rows `x` (B*H*W, 1) and labels `y` (B,); `batch[0]`, `batch[1]` as a
    tuple would give them (what `ClassificationTask` reads)."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __getitem__(self, i: int) -> Tensor:
        return (self.x, self.y)[i]


class ScanLoader:
    """Re-iterable batches of `Scans`, reshuffled each pass with its own seeded generator."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, shuffle: bool, seed: int = 0):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.gen = torch.Generator().manual_seed(seed)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.gen) if self.shuffle else torch.arange(n)
        for s in range(0, n, self.batch_size):
            idx = order[s:s + self.batch_size]
            yield Scans(self.images[idx].reshape(-1, 1), self.labels[idx])

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)


def _blur(f: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return f
    out = np.zeros_like(f)
    for dy in range(-(k // 2), k // 2 + 1):
        for dx in range(-(k // 2), k // 2 + 1):
            out += np.roll(f, (dy, dx), axis=(-2, -1))
    return out / k**2


def scans(n: int, scanner: str, seed: int, prevalence: float = 0.35) -> tuple[Tensor, Tensor]:
    """(N, H, W) images and (N,) labels (1 = malignant) from scanner "A" or "B"."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < prevalence).astype(np.int64)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(float)
    imgs = []
    for label in y:
        cy, cx = rng.uniform(8, 16, 2)
        r0 = rng.uniform(3.0, 5.0)
        ang = np.arctan2(yy - cy, xx - cx)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        if label:  # lobulated, spiculated margin
            k = rng.integers(3, 7)
            radius = r0 * (1 + 0.25 * np.sin(k * ang + rng.uniform(0, 6))
                           + 0.12 * np.sin(3 * k * ang + rng.uniform(0, 6)))
        else:  # round or slightly oval, smooth
            radius = r0 * (1 + 0.1 * np.cos(2 * (ang - rng.uniform(0, 3))))
        mass = 1 / (1 + np.exp((d - radius) / 0.6))
        tissue = 1.0 - 0.65 * mass
        if label and rng.uniform() < 0.7:  # posterior acoustic shadowing
            below = (yy > cy) & (np.abs(xx - cx) < r0)
            tissue = tissue * np.where(below, 0.75, 1.0)
        speck_k = 1 if scanner == "A" else 3
        speckle = _blur(rng.rayleigh(0.7, (SIZE, SIZE)), speck_k) * (1 if speck_k == 1 else 1.6)
        img = tissue * speckle
        if scanner == "B":
            img = 0.5 * img * np.exp(-yy / 20) + 0.3  # gain, depth attenuation, offset
        imgs.append(img)
    return torch.tensor(np.stack(imgs), dtype=torch.float32), torch.from_numpy(y)


class PixelConv(nn.Module):
    """Conv + BatchNorm + ReLU on pixel rows: (B*H*W, C_in) -> (B*H*W, C_out)."""

    def __init__(self, c_in: int, c_out: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, h: Tensor) -> Tensor:
        b = h.shape[0] // (SIZE * SIZE)
        z = h.reshape(b, SIZE, SIZE, -1).permute(0, 3, 1, 2)
        z = torch.relu(self.bn(self.conv(z)))
        return z.permute(0, 2, 3, 1).reshape(b * SIZE * SIZE, -1)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([PixelConv(1, 8), PixelConv(8, 16, 2), PixelConv(16, 16, 4)])

    def forward(self, h: Tensor) -> Tensor:
        for b in self.blocks:
            h = b(h)
        return h


class ScanCNN(nn.Module):
    """A `TransferModel`: pixel rows -> (B, 32) (mean and max pooled) -> malignancy logit (B,)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.embed_dim = 32
        self.head = nn.Linear(32, 1)

    def embed(self, batch) -> Tensor:
        h = self.encoder(batch.x)
        h = h.reshape(-1, SIZE * SIZE, h.shape[-1])
        return torch.cat([h.mean(1), h.amax(1)], dim=1)

    def forward(self, batch) -> Tensor:
        return self.head(self.embed(batch)).squeeze(-1)


def auroc(out: Tensor, y: Tensor) -> float:
    return binary_auroc(out.numpy(), y.numpy())


def main() -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    seeds = setup(args, default_seeds=5)
    clock = Timer()
    q = args.quick
    n_source, n_unlab, n_test, n_lab = (400, 200, 300, 60) if q else (1500, 800, 800, 60)
    task = ClassificationTask(score="auroc")

    torch.manual_seed(0)
    model = ScanCNN()
    xs, ys = scans(n_source, "A", 1)
    xv, yv = scans(300, "A", 2)
    pretrain(model, ScanLoader(xs, ys, 64, True), ScanLoader(xv, yv, 300, False), task,
             TrainConfig(epochs=4 if q else 12, lr=3e-3, patience=4, seed=0))
    src_auc = evaluate(model, ScanLoader(xv, yv, 300, False), task)["auroc"]
    xt, yt = scans(n_test, "B", 4)
    test = ScanLoader(xt, yt, 400, False)
    zero_shot = evaluate(model, test, task)["auroc"]
    print(f"pre-trained on {n_source} scanner-A images: AUROC {src_auc:.3f}; on scanner B without "
          f"adaptation: AUROC {zero_shot:.3f} ({clock})")

    xu, _ = scans(n_unlab, "B", 3)
    unlab = list(ScanLoader(xu, torch.zeros(n_unlab, dtype=torch.long), 32, True, seed=0))
    stage_one = copy.deepcopy(model)
    ssl = pre_adapt(stage_one, unlab, epochs=2 if q else 4, lr=5e-4, mask_rate=0.3, seed=0)
    print(f"stage one: masked-pixel reconstruction on {n_unlab} unlabelled scanner-B images, loss "
          f"{ssl.history[0]:.3f} -> {ssl.history[-1]:.3f} ({clock})")

    names = ["scratch", "linear-probe", "full", "ssl + full"]
    scores: dict[str, list[float]] = {k: [] for k in names}
    calib: dict[str, list] = {"full": [], "ssl + full": []}
    curves = {}
    for seed in seeds:
        xl, yl = scans(n_lab, "B", 100 + seed)
        n_tr = n_lab * 2 // 3
        tr = ScanLoader(xl[:n_tr], yl[:n_tr], 16, True, seed=seed)
        va = ScanLoader(xl[n_tr:], yl[n_tr:], 256, False)
        cfg = TrainConfig(epochs=20 if q else 50, lr=3e-3, patience=12, seed=seed)
        for name in names:
            start, strategy = (stage_one, "full") if name == "ssl + full" else (model, name)
            value, adapted, _ = run_strategy(start, strategy, tr, va, test, task, cfg, auroc)
            scores[name].append(value)
            if name in ("scratch", "full", "ssl + full"):
                vo, vy = predict(adapted, va, task)
                to, ty = predict(adapted, test, task)
                report = calibrate(vo, vy, to, ty)
                if name in calib:
                    calib[name].append(report)
                if seed == seeds[0]:
                    curves[name] = net_benefit(probabilities(to, report["temperature"]), ty.numpy())
                    if name == "ssl + full":
                        np.savez(args.out / "ultrasound_two_stage_predictions.npz",
                                 probs=probabilities(to, report["temperature"]), labels=ty.numpy())
                        reliability = report
    text, summary = results_table(scores, "AUROC", title=(
        f"scanner B: {n_lab} labelled images ({n_tr} train + {n_lab - n_tr} validation), "
        f"{n_unlab} unlabelled, test: {n_test}"))
    extra, versus = comparison_lines(scores, ["ssl + full"], "full", "AUROC")
    text += "\ndoes stage one help? two-stage against full fine-tuning on the same labels:\n" + extra
    summary["ssl_vs_full"] = versus
    print(text)
    lines, cal_summary = [], {}
    for name, reports in calib.items():
        t = np.array([r["temperature"] for r in reports])
        before = np.array([r["ece_before"] for r in reports])
        after = np.array([r["ece_after"] for r in reports])
        lines.append(f"temperature scaling of {name} (fitted on the {n_lab - n_tr} validation images): "
                     f"T = {t.mean():.2f} (range {t.min():.2f}-{t.max():.2f}); test ECE "
                     f"{before.mean():.3f} -> {after.mean():.3f} (mean over seeds)")
        cal_summary[name] = {"temperature": t.tolist(), "ece_before": before.tolist(),
                             "ece_after": after.tolist()}
    useful = {name: useful_thresholds(c) for name, c in curves.items()}
    for name, u in useful.items():
        lines.append(f"decision curve of {name} (seed {seeds[0]}, calibrated): beats refer-all and "
                     f"refer-none at {len(u)} of 99 thresholds"
                     + (f", between {min(u):.2f} and {max(u):.2f}" if u else ""))
    print("\n".join(lines) + f"\n({clock})\n")
    payload = {"zero_shot_auroc": zero_shot, "source_auroc": src_auc, "ssl_history": ssl.history,
               "results": summary, "calibration": cal_summary, "useful_thresholds": useful}
    write_json(args.out / "ultrasound_two_stage.json", payload)
    plot(curves, reliability, args.out / "ultrasound_two_stage.png")
    print(f"wrote {args.out / 'ultrasound_two_stage.png'}, ultrasound_two_stage.json and the "
          f"test predictions (ultrasound_two_stage_predictions.npz); total {clock}")


def plot(curves: dict, report: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    first = curves["ssl + full"]
    for name, c in curves.items():
        ax1.plot(c["threshold"], c["model"], label=f"{name} (calibrated)")
    ax1.plot(first["threshold"], first["treat_all"], color="grey", ls="--", label="refer all")
    ax1.plot(first["threshold"], first["treat_none"], color="black", lw=1, label="refer none")
    ax1.set_ylim(-0.05, max(max(first["model"]), max(first["treat_all"])) * 1.1)
    ax1.set_xlabel("threshold probability of malignancy")
    ax1.set_ylabel("net benefit")
    ax1.set_title("Decision curve on scanner-B test images")
    ax1.legend(fontsize=8)
    ax2.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    for key, label in (("reliability_before", f"before (ECE {report['ece_before']:.3f})"),
                       ("reliability_after", f"T = {report['temperature']:.2f} (ECE {report['ece_after']:.3f})")):
        rows = report[key]
        ax2.plot([r["mean_prob"] for r in rows], [r["frac_positive"] for r in rows], marker="o", label=label)
    ax2.set_xlabel("predicted P(malignant)")
    ax2.set_ylabel("observed share malignant")
    ax2.set_title("Reliability of ssl + full, temperature scaling")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
