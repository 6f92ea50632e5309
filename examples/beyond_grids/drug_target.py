"""Drug-target affinity across species: a frozen drug encoder, adapters on the protein encoder, and
an alignment prior that pulls the embeddings of orthologous proteins together.

Affinities of (drug, protein) pairs come from a bilinear interaction of latent drug and protein
properties plus a non-linear term. Drugs are seen as 64-bit fingerprints; proteins as 48
composition-like features. The source species has thousands of measured pairs; each target-species
protein is an ortholog of a source protein (nearly the same latent properties), but the species
maps them to features differently (composition bias), and only a few target pairs are measured.

A two-tower model (drug MLP, protein MLP, interaction head) is pre-trained on the source pairs.
On the target, the drug encoder stays frozen (drugs are the same molecules) and bottleneck
adapters on the protein encoder train with the head (`adapter`); the alignment prior
(`gridtune.core.alignment.PairedAlignment`) adds a loss that pulls each target protein's
embedding towards its source ortholog's embedding under the pre-trained model, using all
orthologs, measured or not. Beside: full fine-tuning and the same model from scratch, at three
label budgets, over seeds.

    python examples/beyond_grids/drug_target.py            # ~1 min on one core
    python examples/beyond_grids/drug_target.py --quick    # smoke run
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from _common import (
    Timer,
    batches,
    comparison_lines,
    learning_curve_plot,
    parser,
    pretrain,
    results_table,
    setup,
    write_json,
)
from torch import Tensor, nn

from gridtune.core.adapt import adapt
from gridtune.core.alignment import PairedAlignment
from gridtune.core.registry import make_strategy
from gridtune.core.trainer import TrainConfig, evaluate, predict

LATENT, N_DRUGS, N_PROTEINS, DRUG_BITS, PROT_FEATURES = 8, 200, 80, 64, 48


class World:
    """Latent drugs and proteins of both species, their observed features and true affinities."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.u = rng.normal(size=(N_DRUGS, LATENT))
        z_src = rng.normal(size=(N_PROTEINS, LATENT))
        z_tgt = z_src + 0.25 * rng.normal(size=z_src.shape)  # orthologs: nearly the same protein
        self.z = {"source": z_src, "target": z_tgt}
        w_drug = rng.normal(size=(LATENT, DRUG_BITS))
        self.drug_x = (1 / (1 + np.exp(-(self.u @ w_drug + 0.5 * rng.normal(size=(N_DRUGS, DRUG_BITS)))))
                       > 0.5).astype(np.float32)
        a = rng.normal(size=(LATENT, PROT_FEATURES)) / np.sqrt(LATENT)
        b = a + 0.8 * rng.normal(size=a.shape) / np.sqrt(LATENT)  # the species' composition bias
        self.prot_x = {
            "source": np.tanh(z_src @ a + 0.1 * rng.normal(size=(N_PROTEINS, PROT_FEATURES))),
            "target": np.tanh(z_tgt @ b + 0.3 + 0.1 * rng.normal(size=(N_PROTEINS, PROT_FEATURES)))}
        self.m = rng.normal(size=(LATENT, LATENT)) / np.sqrt(LATENT)
        self.v = rng.normal(size=LATENT)

    def affinity(self, species: str, d: np.ndarray, p: np.ndarray) -> np.ndarray:
        u, z = self.u[d], self.z[species][p]
        return (np.einsum("ni,ij,nj->n", u, self.m, z) / 1.5 + 0.8 * np.tanh(u @ self.v) * np.tanh(z[:, 0])
                + 0.5 * np.tanh(z[:, 1]))

    def pairs(self, species: str, n: int, seed: int) -> list[tuple[Tensor, Tensor, Tensor]]:
        rng = np.random.default_rng(seed)
        d = rng.integers(0, N_DRUGS, n)
        p = rng.integers(0, N_PROTEINS, n)
        y = self.affinity(species, d, p) + 0.15 * rng.normal(size=n)
        return [(torch.from_numpy(self.drug_x[i]), torch.tensor(self.prot_x[species][j], dtype=torch.float32),
                 torch.tensor(v, dtype=torch.float32)) for i, j, v in zip(d, p, y, strict=True)]

    def proteins(self, species: str) -> tuple[Tensor, Tensor, Tensor]:
        """A batch holding every protein of `species` once (drug inputs unused by alignment)."""
        x = torch.tensor(self.prot_x[species], dtype=torch.float32)
        return torch.zeros(N_PROTEINS, DRUG_BITS), x, torch.zeros(N_PROTEINS)


class Block(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, h: Tensor) -> Tensor:
        return F.gelu(self.lin(h))


class Tower(nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for b in self.blocks:
            x = b(x)
        return x


class InteractionHead(nn.Module):
    """(protein embedding, drug embedding) -> affinity: a bilinear term and an MLP."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d
        self.bilinear = nn.Bilinear(d, d, 1)
        self.mlp = nn.Sequential(nn.Linear(2 * d, 32), nn.GELU(), nn.Linear(32, 1))

    def forward(self, h: Tensor) -> Tensor:
        p, q = h[:, :self.d], h[:, self.d:]
        return (self.bilinear(p, q) + self.mlp(h)).squeeze(-1)


class DrugTarget(nn.Module):
    """A `TransferModel` whose `encoder` is the protein tower; the drug tower sits beside it
    (frozen by `adapter`, which freezes everything but the adapters and the head)."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.drug = Tower((DRUG_BITS, 64, d))
        self.encoder = Tower((PROT_FEATURES, 64, d))
        self.embed_dim = 2 * d
        self.head = InteractionHead(d)

    def embed(self, batch) -> Tensor:
        return torch.cat([self.encoder(batch[1]), self.drug(batch[0])], dim=1)

    def forward(self, batch) -> Tensor:
        return self.head(self.embed(batch))


class AffinityTask:
    """Affinity regression on `(drug, protein, affinity)` batches: MSE loss, RMSE (lower is
    better) and Pearson r; validation score -RMSE."""

    name = "affinity"

    def target(self, batch) -> Tensor:
        return batch[2]

    def loss(self, output: Tensor, batch) -> Tensor:
        return F.mse_loss(output, batch[2])

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        rmse = float(torch.sqrt(F.mse_loss(outputs, targets)))
        r = float(torch.corrcoef(torch.stack([outputs, targets]))[0, 1])
        return {"loss": rmse**2, "rmse": rmse, "pearson": r}

    def val_score(self, metrics: dict[str, float]) -> float:
        return -metrics["rmse"]


def rmse(out: Tensor, y: Tensor) -> float:
    return float(torch.sqrt(F.mse_loss(out, y)))


def main() -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    seeds = setup(args, default_seeds=5)
    clock = Timer()
    q = args.quick
    world = World(0)
    n_source, n_test = (2000, 500) if q else (8000, 2000)
    budgets = [30] if q else [30, 100, 300]
    task = AffinityTask()

    torch.manual_seed(0)
    model = DrugTarget()
    src_val = batches(world.pairs("source", 1000, 2), 1000, shuffle=False)
    pretrain(model, batches(world.pairs("source", n_source, 1), 128, shuffle=True), src_val, task,
             TrainConfig(epochs=10 if q else 40, lr=2e-3, patience=10, seed=0))
    test = batches(world.pairs("target", n_test, 4), 1000, shuffle=False)
    src_rmse = evaluate(model, src_val, task)["rmse"]
    zero_shot = evaluate(model, test, task)["rmse"]
    spread = float(torch.stack([y for _, _, y in world.pairs("target", n_test, 4)]).std())
    print(f"pre-trained on {n_source} source-species pairs: source RMSE {src_rmse:.3f}; target RMSE "
          f"without adaptation {zero_shot:.3f}; target affinities' standard deviation {spread:.3f} ({clock})")

    source_proteins, target_proteins = world.proteins("source"), world.proteins("target")
    orthologs = torch.stack([torch.arange(N_PROTEINS), torch.arange(N_PROTEINS)], dim=1)
    names = ["scratch", "full", "adapter", "adapter + alignment"]
    payload = {"zero_shot_rmse": zero_shot, "source_rmse": src_rmse, "target_std": spread, "budgets": {}}
    for budget in budgets:
        scores: dict[str, list[float]] = {k: [] for k in names}
        for seed in seeds:
            labelled = world.pairs("target", budget, 100 + seed)
            n_tr = budget * 3 // 4
            tr = batches(labelled[:n_tr], 32, shuffle=True, seed=seed)
            va = batches(labelled[n_tr:], 256, shuffle=False)
            cfg = TrainConfig(epochs=40 if q else 100, lr=3e-3, patience=15, seed=seed)
            for name in names:
                extra = []
                if name == "adapter + alignment":
                    extra = [PairedAlignment(model, source_proteins, target_proteins, orthologs,
                                             weight=0.05, level="elements")]
                strategy = make_strategy("adapter", bottleneck=16) if name.startswith("adapter") \
                    else make_strategy(name)
                adapted, _ = adapt(copy.deepcopy(model), strategy, tr, va, task, cfg, extra_losses=extra)
                scores[name].append(rmse(*predict(adapted, test, task)))
        text, summary = results_table(scores, "RMSE", higher_is_better=False, title=(
            f"target species: {budget} measured pairs ({n_tr} train + {budget - n_tr} validation), "
            f"test: {n_test} pairs (gain = RMSE reduction)"))
        extra_text, versus = comparison_lines(scores, ["adapter + alignment"], "adapter", "RMSE",
                                              higher_is_better=False)
        text += "\nthe alignment prior's gain (RMSE reduction) over adapters alone:\n" + extra_text
        summary["prior_vs_adapter"] = versus
        print(text + f"\n({clock})\n")
        payload["budgets"][str(budget)] = summary
    write_json(args.out / "drug_target.json", payload)
    plot(payload, budgets, names, args.out / "drug_target.png")
    print(f"wrote {args.out / 'drug_target.png'} and drug_target.json; total {clock}")


def plot(payload: dict, budgets: list[int], names: list[str], path) -> None:
    learning_curve_plot(payload, budgets, names, path, reference=payload["zero_shot_rmse"],
                        reference_label="source model, no adaptation", xlabel="measured target-species pairs",
                        ylabel="RMSE on target-species pairs (lower is better)", title="Drug-target affinity across species")


if __name__ == "__main__":
    main()
