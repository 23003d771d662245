"""The pictures: loss curve, embedding map, lr-finder curve, sweep heatmap. matplotlib is imported
lazily (it adds to every command's start-up) and always with the file-only Agg backend; torch is not imported
here, so the sweep report (heatmap only) stays light."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


MAX_POINTS = 20000


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path


def loss_curve(losses: torch.Tensor, evals: Sequence[dict], title: str = ""):
    """log10 of the minibatch loss per step, as the lecture plots it, with the full train/dev
    evaluations marked. losses: (steps,) or (steps, K) (the replicas' mean is drawn)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if losses.numel():
        y = (losses.float().mean(1) if losses.dim() == 2 else losses.float()).log10()
        bin_ = max(1, len(y) // MAX_POINTS)  # long runs: mean of each `bin_` steps, to keep the plot quick
        n = len(y) // bin_ * bin_
        x = range(bin_, n + 1, bin_)
        label = "minibatch" if bin_ == 1 else f"minibatch (mean of {bin_} steps)"
        ax.plot(list(x), y[:n].view(-1, bin_).mean(1).numpy(), lw=0.5, alpha=0.6, color="tab:blue", label=label)
    for split, color, style, size in (("train", "tab:orange", "s-", 7), ("dev", "tab:green", "o--", 4)):
        pts = [(e["step"], sum(e[split]) / len(e[split])) for e in evals if e.get(split)]
        if pts:
            ax.plot(
                [p[0] for p in pts],
                [math.log10(p[1]) for p in pts],
                style,
                color=color,
                ms=size,
                label=f"{split} (full)",
            )
    ax.set_xlabel("step")
    ax.set_ylabel("log10 loss")
    ax.set_title(title or "training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def project_2d(C: torch.Tensor) -> tuple[torch.Tensor, str]:
    """C (V, E) -> (V, 2): the coordinates themselves for E = 2, else the first two principal components."""
    import torch

    C = C.detach().float().cpu()
    if C.shape[1] == 1:
        return torch.cat([C, torch.zeros_like(C)], 1), "1-D embedding"
    if C.shape[1] == 2:
        return C, "2-D embedding"
    X = C - C.mean(0, keepdim=True)
    _, S, Vh = torch.linalg.svd(X, full_matrices=False)
    var = (S[:2] ** 2).sum() / (S**2).sum()
    return X @ Vh[:2].T, f"PCA projection of the {C.shape[1]}-D embedding ({100 * var:.0f}% of variance)"


def embedding_map(C: torch.Tensor, labels: Sequence[str]):
    """Every character at its (projected) embedding, labeled, as the lecture draws emb = 2."""
    plt = _plt()
    xy, title = project_2d(C)
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.scatter(xy[:, 0], xy[:, 1], s=220, color="tab:blue")
    for (x, y), label in zip(xy.tolist(), labels):
        ax.text(x, y, label, ha="center", va="center", color="white", fontsize=9)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if C.shape[1] > 2:
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.tight_layout()
    return fig


def lr_finder(exponents: Sequence[float], losses: Sequence[float], smooth: Sequence[float], suggested: float | None):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(exponents, losses, lw=0.6, alpha=0.4, color="tab:blue", label="minibatch loss")
    ax.plot(exponents, smooth, lw=2, color="tab:blue", label="smoothed")
    if suggested is not None:
        e = math.log10(suggested)
        ax.axvline(e, color="tab:red", ls="--", label=f"suggested lr {suggested:.3g}")
    ax.set_xlabel("lr exponent (lr = 10^e)")
    ax.set_ylabel("loss")
    finite = [x for x in smooth if math.isfinite(x)]
    if finite:  # keep the diverging tail from flattening the interesting part
        ax.set_ylim(min(finite) * 0.95, min(max(finite), 3 * min(finite)) * 1.05 if min(finite) > 0 else None)
    ax.set_title("learning-rate finder")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def heatmap(grid: list[list[float]], xs: Sequence, ys: Sequence, xlabel: str, ylabel: str, title: str = "dev loss"):
    """A value per (x, y) cell, written in the cell; NaN cells show a dash."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(xs), 1.4 + 0.8 * len(ys)))
    im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    finite = [v for row in grid for v in row if math.isfinite(v)]
    mid = (min(finite) + max(finite)) / 2 if finite else 0
    for j, row in enumerate(grid):
        for i, v in enumerate(row):
            ax.text(
                i,
                j,
                f"{v:.3f}" if math.isfinite(v) else "—",
                ha="center",
                va="center",
                color="white" if math.isfinite(v) and v > mid else "black",
            )
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    _plt().close(fig)
