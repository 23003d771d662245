"""What a full-batch run tells about the data: which examples no model can fit, and the lowest loss any can reach.

The lecture's overfit check (experiment=overfit_batch) trains on 32 examples and asks why the loss does not
reach 0: some contexts appear with several next characters ('...' -> e, o, a, ...).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger("makemore")


def fit_report(model, data) -> dict[str, Any]:
    """How well a full-batch run fit its training examples, and which it cannot fit: a context seen
    with several different next characters has no single right answer (the lecture's '...' -> e, o, a)."""
    X, Y = data.X["train"], data.Y["train"]
    ctx, inverse = torch.unique(X, dim=0, return_inverse=True)
    pairs, counts = torch.unique(torch.stack([inverse, Y], 1), dim=0, return_counts=True)
    per_ctx = torch.bincount(pairs[:, 0], minlength=len(ctx))  # distinct next chars per context
    ambiguous = per_ctx[inverse] > 1
    # the best any model can do on these examples: -mean log of each pair's empirical frequency
    ctx_total = torch.bincount(inverse, minlength=len(ctx)).float()
    floor = -(counts.float() * (counts.float() / ctx_total[pairs[:, 0]]).log()).sum() / len(Y)
    with torch.no_grad():
        x = X.to(model.device).unsqueeze(0).expand(model.replicas, -1, -1)
        pred = model.forward(x).argmax(-1)[0].cpu()  # replica 0
    vocab = data.vocab
    rows = []
    for c in torch.nonzero(per_ctx > 1).flatten().tolist():
        nexts = pairs[pairs[:, 0] == c, 1].tolist()
        rows.append(
            "".join(vocab.label(i) for i in ctx[c].tolist()) + " -> " + ", ".join(vocab.label(i) for i in nexts)
        )
    report = {
        "examples": len(Y),
        "ambiguous_examples": int(ambiguous.sum()),
        "loss_floor": float(floor),
        "correct_top1": int((pred == Y).sum()),
        "ambiguous_contexts": rows,
    }
    log.info(
        "fit: %d/%d examples predicted exactly; %d examples have an ambiguous context (no model can fit "
        "them all; the lowest possible loss is %.4f): %s",
        report["correct_top1"],
        len(Y),
        report["ambiguous_examples"],
        report["loss_floor"],
        "; ".join(rows),
    )
    return report
