"""Clinical text across institutions: a small transformer pre-trained on one hospital's notes,
adapted to another hospital that writes the same findings with other words and abbreviations.

Notes are generated from templates: clauses that mention findings, some negated ("denies chest
pain"), between filler words. A note is positive (suspected acute coronary syndrome) when it
mentions chest pain, raised troponin, ST elevation or sweating without negating it. Hospital A
writes "patient reports chest pain ... no fever"; hospital B writes "pt c/o cp ... afebrile", with
its own abbreviations for most findings ("cp", "trop up", "stemi", "htn") that never occur at
hospital A, another negation word ("neg") and other filler. The tokenizer is shared.

A two-block transformer is pre-trained on labelled notes of hospital A, then adapted to hospital B
with a few labelled notes: full fine-tuning, and feature alignment with unlabelled hospital-B notes
(CORAL; DANN's adversarial alignment), beside the same transformer from scratch, over seeds.

    python examples/beyond_grids/clinical_text.py            # ~1.5 min on one core
    python examples/beyond_grids/clinical_text.py --quick    # smoke run
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from _common import (
    Timer,
    batches,
    comparison_lines,
    learning_curve_plot,
    parser,
    pretrain,
    results_table,
    run_strategy,
    setup,
    write_json,
)
from torch import Tensor, nn

from gridtune.core.tasks import ClassificationTask, binary_auroc
from gridtune.core.trainer import TrainConfig, evaluate

MAX_LEN = 28
# concept -> (hospital A phrase, hospital B phrase); the first four make a note positive
FINDINGS = {
    "chest_pain": ("chest pain", "cp"),
    "troponin": ("troponin elevated", "trop up"),
    "st_elevation": ("st elevation", "stemi"),
    "sweating": ("sweating", "diaphoretic"),
    "cough": ("cough", "cough"),
    "fever": ("fever", "febrile"),
    "headache": ("headache", "ha"),
    "diabetes": ("diabetes", "dm"),
    "hypertension": ("hypertension", "htn"),
    "smoker": ("smoker", "smoker"),
}
POSITIVE = ("chest_pain", "troponin", "st_elevation", "sweating")
NEGATION = (("no", "denies", "without"), ("neg", "denies", "no"))
OPENERS = (("patient reports", "patient seen today with", "history of", "presents with"),
           ("pt c/o", "pt seen in ed w/", "hx of", "pres w/"))
FILLER = (("and", "in clinic", "today", "also", "noted"), ("and", "in ed", "today", "also", "noted"))


def vocabulary() -> dict[str, int]:
    words = set()
    for a, b in FINDINGS.values():
        words.update(a.split() + b.split())
    for group in (NEGATION, OPENERS, FILLER):
        for side in group:
            for phrase in side:
                words.update(phrase.split())
    return {w: i + 1 for i, w in enumerate(sorted(words))}  # 0 = padding


VOCAB = vocabulary()


def notes(n: int, hospital: str, seed: int) -> list[tuple[Tensor, Tensor]]:
    """`n` tokenised notes of hospital "A" or "B" with labels (1 = suspected ACS)."""
    rng = np.random.default_rng(seed)
    side = 0 if hospital == "A" else 1
    concepts = list(FINDINGS)
    out = []
    for _ in range(n):
        words: list[str] = rng.choice(OPENERS[side]).split()
        label = 0
        for k in range(rng.integers(2, 5)):
            c = concepts[rng.integers(len(concepts))] if rng.uniform() > 0.3 else \
                POSITIVE[rng.integers(len(POSITIVE))]
            negated = rng.uniform() < 0.45
            if k:
                words += rng.choice(FILLER[side]).split()
            if negated:
                words.append(str(rng.choice(NEGATION[side])))
            words += FINDINGS[c][side].split()
            label |= int(c in POSITIVE and not negated)
        ids = [VOCAB[w] for w in words][:MAX_LEN]
        tokens = torch.zeros(MAX_LEN, dtype=torch.long)
        tokens[:len(ids)] = torch.tensor(ids)
        out.append((tokens, torch.tensor(label)))
    return out


class TokenBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=2 * d, dropout=0.0,
                                                batch_first=True)

    def forward(self, h: Tensor, pad_mask: Tensor) -> Tensor:
        return self.layer(h, src_key_padding_mask=pad_mask)


class TextEncoder(nn.Module):
    def __init__(self, vocab: int, d: int = 32, n_blocks: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d, padding_idx=0)
        self.pos = nn.Embedding(MAX_LEN, d)
        self.blocks = nn.ModuleList(TokenBlock(d) for _ in range(n_blocks))

    def forward(self, tokens: Tensor) -> Tensor:
        pad = tokens == 0
        h = self.tok(tokens) + self.pos.weight[: tokens.shape[1]]
        for b in self.blocks:
            h = b(h, pad)
        keep = (~pad).unsqueeze(-1).float()
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)


class NoteTransformer(nn.Module):
    """A `TransferModel`: token ids (B, T) -> mean-pooled (B, 32) -> logit (B,)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = TextEncoder(len(VOCAB) + 1)
        self.embed_dim = 32
        self.head = nn.Linear(32, 1)

    def embed(self, batch) -> Tensor:
        return self.encoder(batch[0])

    def forward(self, batch) -> Tensor:
        return self.head(self.embed(batch)).squeeze(-1)


def auroc(out: Tensor, y: Tensor) -> float:
    return binary_auroc(out.numpy(), y.numpy())


def main() -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    seeds = setup(args)
    clock = Timer()
    q = args.quick
    n_source, n_unlab, n_test = (600, 300, 300) if q else (1500, 1000, 600)
    budgets = [45] if q else [45, 150]
    task = ClassificationTask(score="auroc")

    torch.manual_seed(0)
    model = NoteTransformer()
    src_val = batches(notes(500, "A", 2), 500, shuffle=False)
    pretrain(model, batches(notes(n_source, "A", 1), 64, shuffle=True), src_val, task,
             TrainConfig(epochs=5 if q else 12, lr=2e-3, patience=5, seed=0))
    test = batches(notes(n_test, "B", 4), 500, shuffle=False)
    src_auc = evaluate(model, src_val, task)["auroc"]
    zero_shot = evaluate(model, test, task)["auroc"]
    print(f"pre-trained on {n_source} hospital-A notes: AUROC {src_auc:.3f}; on hospital B without "
          f"adaptation: AUROC {zero_shot:.3f} ({clock})")

    unlab = batches([(x, torch.tensor(-1)) for x, _ in notes(n_unlab, "B", 3)], 64, shuffle=True)
    strategies = {"scratch": {}, "full": {},
                  "coral": {"unlabeled": unlab, "weight": 3.0},
                  "dann": {"unlabeled": unlab, "weight": 0.3, "warmup_steps": 100}}
    payload = {"zero_shot_auroc": zero_shot, "source_auroc": src_auc, "budgets": {}}
    for budget in budgets:
        scores: dict[str, list[float]] = {k: [] for k in strategies}
        for seed in seeds:
            labelled = notes(budget, "B", 100 + seed)
            n_tr = budget * 2 // 3
            tr = batches(labelled[:n_tr], 16, shuffle=True, seed=seed)
            va = batches(labelled[n_tr:], 256, shuffle=False)
            cfg = TrainConfig(epochs=25 if q else 30, lr=2e-3, patience=8, seed=seed)
            for name, opts in strategies.items():
                value, _, _ = run_strategy(model, name, tr, va, test, task, cfg, auroc, **copy.copy(opts))
                scores[name].append(value)
        text, summary = results_table(scores, "AUROC", title=(
            f"hospital B: {budget} labelled notes ({n_tr} train + {budget - n_tr} validation), "
            f"{n_unlab} unlabelled, test: {n_test}"))
        extra, versus = comparison_lines(scores, ["coral", "dann"], "full", "AUROC")
        text += "\nfeature alignment against full fine-tuning on the same labels:\n" + extra
        summary["versus_full"] = versus
        print(text + f"\n({clock})\n")
        payload["budgets"][str(budget)] = summary
    write_json(args.out / "clinical_text.json", payload)
    plot(payload, budgets, list(strategies), args.out / "clinical_text.png")
    print(f"wrote {args.out / 'clinical_text.png'} and clinical_text.json; total {clock}")


def plot(payload: dict, budgets: list[int], names: list[str], path) -> None:
    learning_curve_plot(payload, budgets, names, path, reference=payload["zero_shot_auroc"],
                        reference_label="hospital-A model, no adaptation", xlabel="labelled hospital-B notes",
                        ylabel="AUROC on hospital-B test notes", title="Clinical notes: hospital A -> hospital B")


if __name__ == "__main__":
    main()
