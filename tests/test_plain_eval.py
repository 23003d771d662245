"""plain_eval.c through models/plain_eval.py: the lecture MLP's exact evaluation on the CPU. It gives torch's path's
loss to float rounding (any block, vocabulary, width, replicas and chunking), the same bits on one thread and two,
refuses an index outside the vocabulary as torch does, and leaves the other MLPs to torch's path."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from makemore.models import MLP, plain_eval

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler: the evaluation runs torch's kernels"
)


def torch_path(model: MLP) -> MLP:
    """The same model with plain_eval.c switched off (what MAKEMORE_FUSED=0 or a failed build runs)."""
    model._plain_eval_library = lambda: None
    return model


def drawn(V=27, B=3, E=10, H=200, K=1, seed=0):
    model = MLP(V, B, E, H, replicas=K, init="scaled", seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # away from the init's small weights: saturated units and confident logits
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return model


def data(V, B, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n, B), generator=g), torch.randint(0, V, (n,), generator=g)


def test_the_kernel_builds_and_the_lecture_mlp_uses_it():
    assert plain_eval.library() is not None
    assert drawn()._plain_eval_library() is not None


@pytest.mark.parametrize(("V", "B", "E", "H", "K"), [(27, 3, 10, 200, 1), (11, 1, 4, 7, 3), (40, 8, 3, 33, 2),
                                                     (27, 16, 24, 128, 1), (70, 2, 5, 17, 1)])  # fmt: skip
def test_it_gives_torch_paths_loss(V, B, E, H, K):
    X, Y = data(V, B, 2500)  # chunks of 1024 + 1024 + 452
    fast = drawn(V, B, E, H, K).evaluate(X, Y, chunk=1024)
    reference = torch_path(drawn(V, B, E, H, K)).evaluate(X, Y, chunk=1024)
    assert fast.shape == (K,)
    torch.testing.assert_close(fast, reference, rtol=2e-6, atol=0)


def test_the_chunks_do_not_matter_and_two_threads_give_the_same_bits():
    model = drawn()
    X, Y = data(27, 3, 5000)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = model.evaluate(X, Y, chunk=1024)
        torch.set_num_threads(2)
        two = model.evaluate(X, Y, chunk=1024)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, two)
    torch.testing.assert_close(model.evaluate(X, Y, chunk=4096), one, rtol=1e-7, atol=0)


@pytest.mark.parametrize("where", ["context", "target"])
def test_an_index_outside_the_vocabulary_is_refused(where):
    X, Y = data(27, 3, 100)
    if where == "context":
        X[17, 1] = 27
    else:
        Y[5] = -2
    with pytest.raises(IndexError, match=r"outside \[0, 27\)"):
        drawn().evaluate(X, Y)


def test_the_other_mlps_run_torchs_path():
    assert MLP(27, 3, 10, 20, direct=True)._plain_eval_library() is None
    assert MLP(27, 3, 10, 20, layers=2).evaluate(*data(27, 3, 50)).isfinite().all()
    big = MLP(5000, 8, 2, 200)  # 8 x 5000 x 200 table elements: more than the product they would replace
    assert big._plain_eval_library() is None
