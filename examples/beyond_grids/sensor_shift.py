"""Sensor shift: land cover from one satellite sensor to another (a Sentinel-2 -> Landsat-8
analogue), with few target labels and many unlabelled target patches.

Land-cover patches are simulated from class reflectance spectra (water, forest, cropland,
grassland, bare soil, urban) mixed per pixel with class-specific spatial texture, then seen
through two sensors: each band integrates the spectrum under a Gaussian response function. The
target sensor has other band centres and widths, its own radiometric gains and offsets, half the
ground resolution (2x2 pixel blocks averaged) and more noise. A small CNN is pre-trained on source
patches and adapted to the target with a few labels: a linear probe (feature reuse), full
fine-tuning, and domain adaptation with unlabelled target patches (DANN, CORAL), each beside the
same CNN trained from scratch on the same labels, over several seeds and two label budgets.

    python examples/beyond_grids/sensor_shift.py            # ~1.5 min on one core
    python examples/beyond_grids/sensor_shift.py --quick    # smoke run
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from _common import (
    Timer,
    batches,
    comparison_lines,
    parser,
    pretrain,
    results_table,
    run_strategy,
    setup,
    write_json,
)
from torch import Tensor, nn

from gridtune.core.tasks import ClassificationTask
from gridtune.core.trainer import TrainConfig, evaluate

WAVELENGTHS = np.linspace(400, 2500, 211)  # nm
CLASSES = ("water", "forest", "cropland", "grassland", "bare soil", "urban")
PATCH = 12

# (centre nm, FWHM nm): blue, green, red, NIR, SWIR1, SWIR2
SOURCE_BANDS = [(490, 65), (560, 35), (665, 30), (842, 115), (1610, 90), (2190, 180)]
TARGET_BANDS = [(482, 60), (561, 57), (655, 37), (865, 28), (1609, 85), (2201, 187)]
TARGET_GAIN = np.array([1.15, 0.9, 1.1, 0.8, 1.2, 0.85])
TARGET_OFFSET = np.array([0.03, -0.02, 0.02, 0.05, -0.03, 0.02])


def _bump(centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((WAVELENGTHS - centre) / width) ** 2)


def _vegetation(green: float, red_edge: float, swir: float) -> np.ndarray:
    w = WAVELENGTHS
    edge = 1 / (1 + np.exp(-(w - red_edge) / 12))
    water_abs = 1 - 0.5 * _bump(1450, 60) - 0.6 * _bump(1940, 70)
    return (0.04 + green * _bump(550, 35) + 0.45 * edge * (1 - (w > 1300) * (1 - swir))) * water_abs


def signatures() -> np.ndarray:
    """(6 classes, wavelengths) reflectance spectra."""
    w = WAVELENGTHS
    water = 0.08 * np.exp(-(w - 400) / 250) + 0.01
    forest = _vegetation(0.05, 715, 0.35)
    crop = _vegetation(0.09, 705, 0.55) * 1.1
    grass = _vegetation(0.07, 710, 0.6) * 0.95 + 0.03
    soil = 0.1 + 0.25 * (w - 400) / 2100 - 0.05 * _bump(2200, 60)
    urban = 0.18 + 0.04 * np.sin(w / 300) + 0.02 * (w - 400) / 2100
    return np.stack([water, forest, crop, grass, soil, urban])


def response(bands: list[tuple[float, float]]) -> np.ndarray:
    """(bands, wavelengths) normalised Gaussian spectral response functions."""
    r = np.stack([_bump(c, fwhm / 2.355) for c, fwhm in bands])
    return r / r.sum(axis=1, keepdims=True)


def _smooth(field: np.ndarray, k: int) -> np.ndarray:
    """Box blur of (N, H, W) with an odd kernel `k`, wrapping at the borders."""
    if k <= 1:
        return field
    out = np.zeros_like(field)
    for dy in range(-(k // 2), k // 2 + 1):
        for dx in range(-(k // 2), k // 2 + 1):
            out += np.roll(field, (dy, dx), axis=(1, 2))
    return out / k**2


def scenes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (N,), per-pixel class abundances (N, H, W, 6) and per-patch vigour (N,)."""
    y = rng.integers(0, len(CLASSES), n)
    ab = np.zeros((n, PATCH, PATCH, len(CLASSES)))
    scale = {0: 5, 1: 3, 2: 1, 3: 3, 4: 5, 5: 1}  # texture grain per class
    for c in range(len(CLASSES)):
        idx = np.where(y == c)[0]
        if len(idx) == 0:
            continue
        noise = _smooth(rng.normal(size=(len(idx), PATCH, PATCH)), scale[c])
        noise = (noise - noise.mean()) / (noise.std() + 1e-9)
        if c == 2:  # cropland: field stripes in a random direction
            phase = rng.uniform(0, 2 * np.pi, len(idx))[:, None, None]
            xx = np.arange(PATCH)[None, :, None] * rng.choice([0, 1], len(idx))[:, None, None]
            yy = np.arange(PATCH)[None, None, :] * (1 - rng.choice([0, 1], len(idx)))[:, None, None]
            noise = noise * 0.5 + 1.5 * np.sin(1.6 * (xx + yy) + phase)
        dominant = 1 / (1 + np.exp(-(noise + 1.0)))  # share of the patch's class per pixel
        other = rng.integers(0, len(CLASSES), len(idx))  # the mixed-in class
        ab[idx, :, :, c] = dominant
        ab[idx, :, :, other] += 1 - dominant  # other == c leaves a pure patch
    vigour = rng.normal(0, 0.15, n)
    return y, ab, vigour


def observe(y: np.ndarray, ab: np.ndarray, vigour: np.ndarray, sensor: str,
            rng: np.random.Generator) -> np.ndarray:
    """(N, 6 bands, H, W) reflectances of the scenes as seen by `sensor` ("source" / "target")."""
    sig = signatures()
    veg_boost = np.where(WAVELENGTHS > 700, 1.0, 0.0)  # vigour scales the NIR plateau
    bands = SOURCE_BANDS if sensor == "source" else TARGET_BANDS
    r = response(bands)
    base = sig @ r.T  # (6 classes, 6 bands)
    boost = (sig * veg_boost) @ r.T
    per_patch = base[None] + vigour[:, None, None] * boost[None] * np.array([0, 1, 1, 1, 0, 0])[None, :, None]
    x = np.einsum("nhwc,ncb->nbhw", ab, per_patch)
    x *= rng.uniform(0.8, 1.2, (len(y), 1, 1, 1))  # illumination
    if sensor == "target":
        x = x * TARGET_GAIN[None, :, None, None] + TARGET_OFFSET[None, :, None, None]
        n, b, h, w = x.shape  # half the ground resolution: 2x2 blocks
        x = x.reshape(n, b, h // 2, 2, w // 2, 2).mean(axis=(3, 5)).repeat(2, axis=2).repeat(2, axis=3)
        x += rng.normal(0, 0.02, x.shape)
    else:
        x += rng.normal(0, 0.01, x.shape)
    return (x * 5).astype(np.float32)  # reflectance x 5: inputs of order one


def dataset(n: int, sensor: str, seed: int) -> list[tuple[Tensor, Tensor]]:
    rng = np.random.default_rng(seed)
    y, ab, vigour = scenes(n, rng)
    x = observe(y, ab, vigour, sensor, rng)
    return list(zip(torch.from_numpy(x), torch.from_numpy(y), strict=True))


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, h: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(h)))


class Encoder(nn.Module):
    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip(channels, channels[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i == 0:
                x = nn.functional.max_pool2d(x, 2)
        return x


class LandCoverCNN(nn.Module):
    """Patches (B, 6, 12, 12) -> pooled (B, 32) -> class logits (a `TransferModel`)."""

    def __init__(self, n_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.encoder = Encoder((6, 16, 32, 32))
        self.embed_dim = 32
        self.head = nn.Linear(32, n_classes)

    def embed(self, batch) -> Tensor:
        return self.encoder(batch[0]).mean(dim=(2, 3))

    def forward(self, batch) -> Tensor:
        return self.head(self.embed(batch))


def accuracy(out: Tensor, y: Tensor) -> float:
    return float((out.argmax(1) == y).float().mean())


def main() -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    seeds = setup(args)
    clock = Timer()
    q = args.quick
    n_source, n_unlab, n_test = (600, 300, 300) if q else (2500, 1000, 1000)
    budgets = [30] if q else [30, 150]  # target labels per run (2/3 train, 1/3 validation)
    task = ClassificationTask(score="neg_loss")

    source = dataset(n_source, "source", 1)
    src_val = dataset(n_source // 5, "source", 2)
    unlab = dataset(n_unlab, "target", 3)
    test = dataset(n_test, "target", 4)
    test_loader = batches(test, 256, shuffle=False)
    torch.manual_seed(0)
    model = LandCoverCNN()
    pre = TrainConfig(epochs=4 if q else 10, lr=3e-3, patience=5, seed=0, batch_size=64)
    pretrain(model, batches(source, 64, shuffle=True), batches(src_val, 256, shuffle=False), task, pre)
    src_acc = evaluate(model, batches(src_val, 256, shuffle=False), task)["accuracy"]
    zero_shot = evaluate(model, test_loader, task)["accuracy"]
    print(f"pre-trained on {n_source} source patches: source accuracy {src_acc:.3f}, "
          f"target accuracy without adaptation {zero_shot:.3f} ({clock})")

    unlab_loader = batches([(x, torch.tensor(-1)) for x, _ in unlab], 64, shuffle=True)
    strategies = {"scratch": {}, "linear-probe": {}, "full": {},
                  "dann": {"unlabeled": unlab_loader, "weight": 0.3, "warmup_steps": 100},
                  "coral": {"unlabeled": unlab_loader, "weight": 3.0}}
    tables, payload = [], {"zero_shot_accuracy": zero_shot, "source_accuracy": src_acc, "budgets": {}}
    for budget in budgets:
        scores: dict[str, list[float]] = {k: [] for k in strategies}
        for seed in seeds:
            labelled = dataset(budget, "target", 100 + seed)
            n_tr = budget * 2 // 3
            tr = batches(labelled[:n_tr], 16, shuffle=True, seed=seed)
            va = batches(labelled[n_tr:], 256, shuffle=False)
            cfg = TrainConfig(epochs=25 if q else 40, lr=3e-3, patience=8, seed=seed)
            for name, opts in strategies.items():
                acc, _, _ = run_strategy(model, name, tr, va, test_loader, task, cfg, accuracy,
                                         **copy.copy(opts))
                scores[name].append(acc)
        text, summary = results_table(scores, "accuracy",
                                      title=f"target labels: {budget} ({n_tr} train + "
                                            f"{budget - n_tr} validation), test patches: {n_test}")
        extra, versus = comparison_lines(scores, ["dann", "coral"], "full", "accuracy")
        text += "\ndomain adaptation against full fine-tuning on the same labels:\n" + extra
        print(text + f"\n({clock})\n")
        tables.append(text)
        summary["versus_full"] = versus
        payload["budgets"][str(budget)] = summary
    write_json(args.out / "sensor_shift.json", payload)
    plot(payload, budgets, args.out / "sensor_shift.png")
    print(f"wrote {args.out / 'sensor_shift.png'} and sensor_shift.json; total {clock}")


def plot(payload: dict, budgets: list[int], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = [k for k in payload["budgets"][str(budgets[0])] if k != "versus_full"]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        means = [payload["budgets"][str(b)][name]["mean"] for b in budgets]
        lo = [payload["budgets"][str(b)][name]["ci"][0] for b in budgets]
        hi = [payload["budgets"][str(b)][name]["ci"][1] for b in budgets]
        xs = np.arange(len(budgets)) + (i - (len(names) - 1) / 2) * width
        err = np.abs(np.array([np.subtract(means, lo), np.subtract(hi, means)]))
        ax.bar(xs, means, width, yerr=np.nan_to_num(err), capsize=3, label=name)
    ax.axhline(payload["zero_shot_accuracy"], color="black", ls="--", lw=1,
               label="source model, no adaptation")
    ax.set_xticks(range(len(budgets)), [f"{b} target labels" for b in budgets])
    ax.set_ylabel("target test accuracy")
    ax.set_title("Sensor shift: land cover, source sensor -> target sensor")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
