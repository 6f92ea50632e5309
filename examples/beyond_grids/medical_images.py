"""Medical images: swap the classification head, and attach a segmentation decoder that finds
small, rare lesions, with the Dice loss against plain cross-entropy.

A CNN encoder is pre-trained on a source task, telling four tissue types apart in 24x24
ultrasound-like images (fine speckle, coarse speckle with small dark vessels, oriented fibres, fat
with bright blobs). It is then reused twice, through the core's strategies:

(a) head swap (`head-swap`): a new label set (healthy, fatty and fibrotic liver: liver speckle
    with fat blobs or fibre bands mixed in), a few labels per class, a new head with the encoder
    fine-tuned or frozen;
(b) segmentation (`decoder`): a convolutional decoder on the encoder's last feature maps, trained
    on masks of lesions that cover about 1 % of the pixels of the images that have one (half of
    them), with cross-entropy, soft Dice, or Dice + cross-entropy (`gridtune.core.segmentation`).

Every adapted model sits beside the same architecture trained from scratch on the same labels and
loss, over several seeds, with the core's verdict.

    python examples/beyond_grids/medical_images.py            # ~2 min on one core
    python examples/beyond_grids/medical_images.py --quick    # smoke run
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from _common import (
    Timer,
    batches,
    mean_interval,
    parser,
    pretrain,
    results_table,
    run_strategy,
    setup,
    write_json,
)
from torch import Tensor, nn

from gridtune.core.adapt import adapt
from gridtune.core.registry import make_strategy
from gridtune.core.segmentation import SegmentationTask, dice_score, hard_masks, iou_score
from gridtune.core.tasks import ClassificationTask
from gridtune.core.trainer import TrainConfig, evaluate, predict
from gridtune.core.verdict import transfer_verdict

SIZE = 24
TISSUES = ("liver", "kidney", "muscle", "fat")
LIVER = ("healthy liver", "fatty liver", "fibrotic liver")  # the new label set of the head swap


def _blur(f: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros_like(f)
    for dy in range(-(k // 2), k // 2 + 1):
        for dx in range(-(k // 2), k // 2 + 1):
            out += np.roll(f, (dy, dx), axis=(-2, -1))
    return out / k**2


def _disk(rng: np.random.Generator, radius: float) -> tuple[np.ndarray, tuple[float, float]]:
    cy, cx = rng.uniform(radius + 1, SIZE - radius - 1, 2)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip(radius + 0.5 - d, 0, 1), (cy, cx)  # soft-edged disk in [0, 1]


def tissue(kind: int, rng: np.random.Generator) -> np.ndarray:
    """One 24x24 background of tissue `kind` (speckle: multiplicative Rayleigh noise)."""
    speckle = rng.rayleigh(0.6, (SIZE, SIZE))
    if kind == 0:  # liver: fine homogeneous speckle
        img = 0.8 * _blur(speckle, 1)
    elif kind == 1:  # kidney: coarser speckle with small dark vessels
        img = 0.8 * _blur(speckle, 3) * 1.3
        for _ in range(rng.integers(1, 4)):
            disk, _ = _disk(rng, rng.uniform(0.6, 1.0))
            img = img * (1 - 0.8 * disk)
    elif kind == 2:  # muscle: oriented fibres
        theta = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[:SIZE, :SIZE]
        fib = 0.5 + 0.5 * np.sin(1.4 * (np.cos(theta) * xx + np.sin(theta) * yy) + rng.uniform(0, 6))
        img = 0.8 * speckle * (0.5 + 0.8 * fib)
    else:  # fat: darker with bright blobs
        img = 0.5 * speckle
        for _ in range(rng.integers(2, 6)):
            disk, _ = _disk(rng, rng.uniform(0.8, 1.5))
            img = img + 0.8 * disk
    return img


def source_images(n: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(TISSUES), n)
    x = np.stack([tissue(int(k), rng) for k in y])[:, None].astype(np.float32)
    return list(zip(torch.from_numpy(x), torch.from_numpy(y), strict=True))


def liver_images(n: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """The head swap's new classes: liver speckle, alone or blended with fat or fibre texture."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(LIVER), n)
    xs = []
    for k in y:
        img = tissue(0, rng)
        if k > 0:
            other = tissue(3 if k == 1 else 2, rng)
            w = rng.uniform(0.3, 0.5)
            img = (1 - w) * img + w * other
        xs.append(img)
    x = torch.from_numpy(np.stack(xs)[:, None].astype(np.float32))
    return list(zip(x, torch.from_numpy(y), strict=True))


def lesion_images(n: int, seed: int, lesion_rate: float) -> tuple[list, list]:
    """(images, lesion class) and (images, mask) pairs of the same images: a lesion in a share
    `lesion_rate` of them, dark or bright, radius 1.2 to 2 pixels (0.8 % to 2 % of the image)."""
    rng = np.random.default_rng(seed)
    xs, ys, masks = [], [], []
    for _ in range(n):
        img = tissue(int(rng.integers(0, len(TISSUES))), rng)
        mask = np.zeros((SIZE, SIZE), dtype=np.int64)
        kind = 0
        if rng.uniform() < lesion_rate:
            kind = int(rng.integers(1, 3))
            disk, _ = _disk(rng, rng.uniform(1.2, 2.0))
            img = img * (1 - 0.7 * disk) if kind == 1 else img + 0.9 * disk
            mask = (disk > 0.5).astype(np.int64)
        xs.append(img)
        ys.append(kind)
        masks.append(mask)
    x = torch.from_numpy(np.stack(xs)[:, None].astype(np.float32))
    return (list(zip(x, torch.tensor(ys), strict=True)),
            list(zip(x, torch.from_numpy(np.stack(masks)), strict=True)))


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, h: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(h)))


class Encoder(nn.Module):
    """Full-resolution feature maps: (B, 1, 24, 24) -> (B, 16, 24, 24)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ConvBlock(1, 8), ConvBlock(8, 16, 2), ConvBlock(16, 16, 4)])

    def forward(self, x: Tensor) -> Tensor:
        for b in self.blocks:
            x = b(x)
        return x


class ScanCNN(nn.Module):
    """A `TransferModel`: pooled features (B, 16) -> class logits."""

    def __init__(self, n_classes: int = len(TISSUES)) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.embed_dim = 16
        self.head = nn.Linear(16, n_classes)

    def embed(self, batch) -> Tensor:
        return self.encoder(batch[0]).amax(dim=(2, 3))  # max pooling: a small lesion anywhere counts

    def forward(self, batch) -> Tensor:
        return self.head(self.embed(batch))


def seg_decoder(channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 1))


def accuracy(out: Tensor, y: Tensor) -> float:
    return float((out.argmax(1) == y).float().mean())


def main() -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    seeds = setup(args)
    clock = Timer()
    q = args.quick
    n_source, n_test = (400, 200) if q else (1200, 500)
    n_cls, n_seg = (30, 40) if q else (30, 120)  # target labels (images) per run
    epochs = 8 if q else 25

    torch.manual_seed(0)
    model = ScanCNN()
    cls_task = ClassificationTask(score="neg_loss")
    src_val = batches(source_images(300, 2), 300, shuffle=False)
    pretrain(model, batches(source_images(n_source, 1), 64, shuffle=True), src_val, cls_task,
             TrainConfig(epochs=4 if q else 12, lr=3e-3, patience=4, seed=0))
    src_acc = evaluate(model, src_val, cls_task)["accuracy"]
    print(f"pre-trained on {n_source} source images (4 tissue types): accuracy {src_acc:.3f} ({clock})")

    test_cls = liver_images(n_test, 4)
    _, test_seg = lesion_images(n_test, 5, lesion_rate=0.5)
    test_cls_loader = batches(test_cls, 256, shuffle=False)
    test_seg_loader = batches(test_seg, 256, shuffle=False)
    payload: dict = {"source_accuracy": src_acc}

    # (a) head swap: a new label set
    strategies = {"scratch": {"head": None},
                  "head-swap": {"head": None},
                  "head-swap frozen": {"head": None, "freeze_encoder": True}}
    scores: dict[str, list[float]] = {k: [] for k in strategies}
    for seed in seeds:
        labelled = liver_images(n_cls, 100 + seed)
        n_tr = n_cls * 2 // 3
        tr = batches(labelled[:n_tr], 16, shuffle=True, seed=seed)
        va = batches(labelled[n_tr:], 256, shuffle=False)
        cfg = TrainConfig(epochs=2 * epochs, lr=3e-3, patience=10, seed=seed)
        for name in strategies:
            if name == "scratch":  # same architecture, fresh weights, the new head
                torch.manual_seed(seed)
                fresh = ScanCNN(len(LIVER))
                fresh, _ = adapt(fresh, make_strategy("full"), tr, va, cls_task, cfg)
                scores[name].append(accuracy(*predict(fresh, test_cls_loader, cls_task)))
                continue
            opts = {"head": nn.Linear(16, len(LIVER)),
                    "freeze_encoder": name.endswith("frozen")}
            acc, _, _ = run_strategy(model, "head-swap", tr, va, test_cls_loader, cls_task, cfg,
                                     accuracy, **opts)
            scores[name].append(acc)
    text_a, summary_a = results_table(
        scores, "accuracy", title=f"(a) head swap: {len(LIVER)} new classes, {n_cls} labelled images "
                                  f"({n_tr} train + {n_cls - n_tr} validation), test: {n_test}")
    print(text_a + f"\n({clock})\n")
    payload["head_swap"] = summary_a

    # (b) segmentation decoder, Dice against cross-entropy
    losses = ("ce", "dice", "dice+ce")
    seg: dict[str, dict[str, list]] = {loss: {"scratch": [], "pre-trained": [], "iou": [],
                                              "per_image": []} for loss in losses}
    examples = {}
    for seed in seeds:
        _, labelled = lesion_images(n_seg, 200 + seed, lesion_rate=0.5)
        n_tr = n_seg * 3 // 4
        tr = batches(labelled[:n_tr], 16, shuffle=True, seed=seed)
        va = batches(labelled[n_tr:], 256, shuffle=False)
        cfg = TrainConfig(epochs=epochs, lr=3e-3, patience=8, seed=seed)
        for loss in losses:
            task = SegmentationTask(loss=loss, smooth=1.0)
            for which in ("scratch", "pre-trained"):
                torch.manual_seed(seed)
                base = ScanCNN() if which == "scratch" else copy.deepcopy(model)
                adapted, _ = adapt(base, make_strategy("decoder", decoder=seg_decoder, feature_dim=1),
                                   tr, va, task, cfg)
                out, tgt = predict(adapted, test_seg_loader, task)
                pred = hard_masks(out)
                seg[loss][which].append(dice_score(pred, tgt))
                if which == "pre-trained":
                    seg[loss]["iou"].append(iou_score(pred, tgt))
                    seg[loss]["per_image"].append(dice_score(pred, tgt, per_image=True))
                    if seed == seeds[0]:
                        examples[loss] = torch.sigmoid(out[:, 0]).numpy()
        examples["target"] = tgt.numpy()
        examples["image"] = torch.stack([x for x, _ in test_seg])[:, 0].numpy()
    lesion_share = float(torch.stack([m for _, m in test_seg]).float().mean())
    lines = [f"(b) segmentation decoder: {n_seg} labelled images ({n_tr} train + {n_seg - n_tr} "
             f"validation), lesions in half the images, {lesion_share:.2%} of all test pixels",
             f"{'loss':<9} {'scratch Dice [95% CI]':<24} {'pre-trained Dice [95% CI]':<26} "
             f"{'IoU':<6} {'Dice/img':<9} {'gain vs scratch [95% CI]':<25} verdict"]
    lines.append("-" * len(lines[-1]))
    summary_b: dict = {}
    for loss in losses:
        s = mean_interval(seg[loss]["scratch"])
        p = mean_interval(seg[loss]["pre-trained"])
        v = transfer_verdict(seg[loss]["pre-trained"], seg[loss]["scratch"], metric="dice")
        lines.append(f"{loss:<9} {s[0]:.3f} [{s[1]:.3f}, {s[2]:.3f}]    {p[0]:.3f} [{p[1]:.3f}, {p[2]:.3f}]      "
                     f"{np.mean(seg[loss]['iou']):.3f}  {np.mean(seg[loss]['per_image']):.3f}     "
                     f"{v.gain_mean:+.3f} [{v.ci_low:+.3f}, {v.ci_high:+.3f}]  {v.label}")
        summary_b[loss] = {**{k: list(map(float, vals)) for k, vals in seg[loss].items()},
                           "verdict": v.to_dict()}
    lines.append("loss against cross-entropy (pre-trained decoder, paired over seeds):")
    for loss in ("dice", "dice+ce"):
        v = transfer_verdict(seg[loss]["pre-trained"], seg["ce"]["pre-trained"], metric="dice")
        lines.append(f"  {loss} vs ce: Dice {v.gain_mean:+.3f} [{v.ci_low:+.3f}, {v.ci_high:+.3f}]")
        summary_b[f"{loss}_vs_ce"] = v.to_dict()
    lines.append(f"({len(seeds)} seeds; Dice and IoU pooled over the test pixels; Dice/img: mean "
                 "over images with a lesion in mask or prediction)")
    text_b = "\n".join(lines)
    print(text_b + f"\n({clock})\n")
    payload["segmentation"] = summary_b
    payload["lesion_pixel_share"] = lesion_share
    write_json(args.out / "medical_images.json", payload)
    plot(summary_b, examples, args.out / "medical_images.png")
    print(f"wrote {args.out / 'medical_images.png'} and medical_images.json; total {clock}")


def plot(summary: dict, examples: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = examples["target"]
    with_lesion = [i for i in range(len(target)) if target[i].any()][:3]
    fig, axes = plt.subplots(len(with_lesion), 5, figsize=(9, 1.9 * len(with_lesion) + 0.4))
    axes = np.atleast_2d(axes)
    for r, i in enumerate(with_lesion):
        panels = [("image", examples["image"][i], "gray"), ("mask", target[i], "Reds")]
        panels += [(f"{loss} (Dice {np.mean(summary[loss]['pre-trained']):.2f})", examples[loss][i], "Reds")
                   for loss in ("ce", "dice", "dice+ce")]
        for c, (title, img, cmap) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=None if c == 0 else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
    fig.suptitle("Lesion probability maps of the pre-trained encoder + decoder, by training loss",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
