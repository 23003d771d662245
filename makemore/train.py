"""The training loop: batches -> engine step -> evaluate -> log -> checkpoint.

The engine (engine/: fast or autograd, chosen once by engine.resolve) is driven through its small interface:
batches, step, state/load_state; the loop knows nothing else of it.

The loop runs in segments of at most CHUNK steps that end on every multiple of CHUNK, eval_every and
checkpoint_every. A segment draws all its batch indices in one call, runs the fast steps with no host
sync, and only then reads its losses back (one sync per segment) to log them and check for divergence.
Because segment boundaries depend only on the step number and the batch generator is saved in each
checkpoint (always written at a segment boundary), a resumed run draws exactly the batches of an
uninterrupted one and ends with bit-identical losses.

With loop.diagnose_every > 0 the loop also diagnoses the model (diagnostics.py) at step 0, at every multiple of it
and at the last step: the step that ends on a diagnosis runs after a snapshot of the parameters (for its update
ratio), then the probe runs on a fixed probe batch and hooks.on_diagnose gets its report. The segments, the batches
and the steps are the same as without: a run with diagnostics ends bit-identical to one without.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from . import diagnostics
from .data import Dataset
from .schedule import Schedule

CHUNK = 1000
EVAL_POINTS = 20  # train.eval_every=null: this many evaluations per run (200k steps -> every 10k, 3k -> every 150)

# A finite explosion counts as divergence: the mean minibatch loss of a window of DIVERGE_WINDOW steps above
# DIVERGE_FACTOR x max(initial loss, ln vocabulary). A model that predicts uniformly scores ln V; the lecture's
# unscaled init starts near 27 (bound 270); a run at lr 1e6 sits at 1e7.
DIVERGE_WINDOW = 100
DIVERGE_FACTOR = 10.0


class Diverged(RuntimeError):
    def __init__(self, step: int, lr: float, loss: float, bound: float | None = None):
        if bound is None:
            what = f"loss {loss}"
        else:
            what = (
                f"mean minibatch loss {loss:.4g} over the last {DIVERGE_WINDOW} steps exceeds {bound:.4g} "
                f"({DIVERGE_FACTOR:g} x max(initial loss, ln vocabulary)),"
            )
        super().__init__(f"training diverged: {what} at step {step} (lr {lr:g}); try a smaller schedule lr")
        self.step, self.lr, self.loss = step, lr, loss


class Pruned(RuntimeError):
    """Raised by a hook's on_eval to end training at that evaluation (a search's pruner stopped the trial); the
    loop checkpoints that step, as at the end of a run, and re-raises."""

    def __init__(self, step: int, reason: str):
        super().__init__(reason)
        self.step = step


def eval_interval(eval_every: int | None, steps: int) -> int:
    """train.eval_every, or when it is null, steps / EVAL_POINTS rounded up (at least 1)."""
    return eval_every if eval_every else max(1, math.ceil(steps / EVAL_POINTS))


def divergence_bound(initial_loss: float, vocab_size: int) -> float:
    return DIVERGE_FACTOR * max(initial_loss, math.log(vocab_size))


def check_runaway(losses: torch.Tensor, start: int, lrs: list[float], bound: float) -> None:
    """Raise Diverged if a window of DIVERGE_WINDOW steps (windows end on multiples of it) has a mean
    minibatch loss above `bound` in any replica. losses: (S, K), steps start .. start + S - 1."""
    S = losses.shape[0]
    cuts = list(range((start // DIVERGE_WINDOW + 1) * DIVERGE_WINDOW - start, S, DIVERGE_WINDOW)) + [S]
    lo = 0
    for hi in cuts:
        if hi > lo:
            worst = float(losses[lo:hi].mean(0).max())
            if worst > bound:
                raise Diverged(start + hi - 1, lrs[hi - 1], worst, bound)
        lo = hi


@dataclass
class Loop:
    """The loop's settings: the config's train.* resolved (assemble.loop_settings builds them from a config)."""

    steps: int
    batch_size: int  # examples per step and replica; 0 = full batch (every training example every step)
    schedule: Schedule  # step -> lr
    seed: int  # of the batch generator
    eval_every: int  # steps between evaluations (the last step is always evaluated, on every example)
    checkpoint_every: int  # steps between checkpoints (hooks.on_checkpoint)
    eval_examples: int | None = None  # examples per split a periodic evaluation scores (None: all)
    eval_threads: int | None = None  # torch threads for evaluation (None: as training)
    diagnose_every: int = 0  # steps between diagnoses (diagnostics.py; also at step 0 and the last step); 0 = none


@dataclass
class Progress:
    """What the loop has done so far; saved in checkpoints as the plain dict `state()`."""

    step: int = 0
    seconds: float = 0.0  # time spent in training steps (not evaluation)
    batch_rng: torch.Tensor | None = None  # state of the batch generator at `step`
    torch_rng: torch.Tensor | None = None  # state of torch's global generator at `step` (dropout draws from it)
    losses: list[torch.Tensor] = field(default_factory=list)  # per segment (S, K) minibatch losses
    evals: list[dict] = field(default_factory=list)  # {"step", "train": [K], "dev": [K]}
    initial_loss: float | None = None  # the first step's minibatch loss (worst replica), for the runaway bound
    optimizer: dict | None = None  # the engine's optimizer state at `step` (engine.state())
    warnings: list[str] = field(default_factory=list)  # the diagnoses' warnings so far (diagnostics.Health)
    health: dict | None = None  # diagnostics.Health's state

    def minibatch_losses(self) -> torch.Tensor:
        return torch.cat(self.losses) if self.losses else torch.empty(0, 1)

    def state(self) -> dict:
        """Tensors and builtins only: a checkpoint loads with torch.load(weights_only=True)."""
        return {
            "step": self.step,
            "seconds": self.seconds,
            "batch_rng": self.batch_rng,
            "torch_rng": self.torch_rng,
            "losses": list(self.losses),
            "evals": list(self.evals),
            "initial_loss": self.initial_loss,
            "optimizer": self.optimizer,
            "warnings": list(self.warnings),
            "health": self.health,
        }

    @classmethod
    def from_state(cls, state: dict) -> Progress:
        return cls(
            **{k: state[k] for k in ("step", "seconds", "batch_rng", "losses", "evals")},
            initial_loss=state.get("initial_loss"),
            torch_rng=state.get("torch_rng"),
            optimizer=state.get("optimizer"),
            warnings=list(state.get("warnings", [])),
            health=state.get("health"),
        )


class Hooks:
    """Callbacks of the loop; the defaults do nothing (a notebook needs none)."""

    def on_segment(self, start: int, losses: torch.Tensor, lrs: list[float], progress: Progress) -> None: ...

    def on_eval(self, step: int, losses: dict[str, torch.Tensor]) -> None: ...  # may raise Pruned

    def on_checkpoint(self, progress: Progress) -> None: ...

    def on_diagnose(self, step: int, report: diagnostics.Report) -> None: ...  # report.warnings: the new ones


EvalSets = dict[str, tuple[torch.Tensor, torch.Tensor]]


def eval_subsets(data: Dataset, max_examples: int | None, splits=("train", "dev"), seed: int = 0) -> EvalSets:
    """Each split's examples for periodic evaluation: all of them, or a fixed random subset of
    `max_examples` (drawn once, so every evaluation of a run scores the same examples)."""
    out = {}
    for s in splits:
        X, Y = data.X[s], data.Y[s]
        if max_examples and X.shape[0] > max_examples:
            idx = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed))[:max_examples].sort().values
            X, Y = X[idx], Y[idx]
        out[s] = (X, Y)
    return out


def evaluate(
    model, data: Dataset, splits=("train", "dev"), threads: int | None = None, subsets: EvalSets | None = None
) -> dict[str, torch.Tensor]:
    """Losses of each split: over all its examples, or over `subsets` (eval_subsets) where given;
    with `threads`, evaluation (large products) uses that many. A batch-normed model with model.bn_eval=calibrated
    evaluates with the statistics of its current weights over the training examples this evaluation scores (the
    fixed subset of a periodic one, else all of them); its running statistics are left as they were. An ensemble
    (train.ensemble) scores one loss per split, its members' under "<split>_members"."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        sets = subsets or {s: (data.X[s], data.Y[s]) for s in splits}
        calibration = sets["train"][0] if "train" in sets else data.X["train"]
        with model.eval_statistics(calibration):
            if not model.ensemble:
                return {s: model.evaluate(*sets[s]).cpu() for s in splits}
            ev = {s: model.evaluate_ensemble(*sets[s]) for s in splits}
            # the ensemble's loss is the split's loss; its members' follow, as "<split>_members"
            return {s: e[1] for s, e in ev.items()} | {f"{s}_members": e[0] for s, e in ev.items()}
    finally:
        torch.set_num_threads(previous)


def _evaluate_at(
    step: int,
    model,
    data: Dataset,
    progress: Progress,
    hooks: Hooks,
    threads: int | None,
    subsets: EvalSets | None = None,
) -> None:
    """Evaluate (all examples, or `subsets`), record it in progress.evals and tell the hooks."""
    ev = evaluate(model, data, threads=threads, subsets=subsets)
    progress.evals.append({"step": step, **{k: v.tolist() for k, v in ev.items()}})
    hooks.on_eval(step, ev)


def fit(model, engine, data: Dataset, loop: Loop, hooks: Hooks | None = None, progress: Progress | None = None):
    """Train `model` (all its replicas) with `engine` (engine.make's) for loop.steps steps; resume from `progress`
    if given, its optimizer state included. Periodic evaluations score at most loop.eval_examples examples per
    split (a fixed subset); the evaluation at loop.steps always scores every example. A model trained by counting
    (the bigram; engine None) is counted instead, at step 0. Returns the progress."""
    hooks = hooks or Hooks()
    progress = progress or Progress()
    steps = loop.steps
    if model.trainable:
        if progress.optimizer:
            engine.load_state(progress.optimizer)
        _train(engine, data, loop, hooks, progress)
    else:
        model.fit(data.X["train"], data.Y["train"])
        steps = 0
    if not progress.evals or progress.evals[-1]["step"] != steps:  # steps=0, or nothing left to train
        _evaluate_at(steps, model, data, progress, hooks, loop.eval_threads)
        hooks.on_checkpoint(progress)  # so even an untrained model can be sampled and resumed
    return progress


def _global_rng(state: torch.Tensor | None = None, seed: int | None = None) -> torch.Tensor:
    """Restore (a state given) or seed torch's global generator; returns its CPU state. manual_seed seeds the
    accelerators' too; only the CPU's state is kept, so dropout resumes bit for bit on the CPU."""
    if state is not None:
        torch.set_rng_state(state)
    elif seed is not None:
        torch.manual_seed(seed)
    return torch.get_rng_state()


def _train(engine, data: Dataset, loop: Loop, hooks: Hooks, progress: Progress) -> None:
    """The segments of engine steps from progress.step to loop.steps, with their evaluations, diagnoses and
    checkpoints."""
    model = engine.model
    Xtr, Ytr = data.X["train"].to(model.device), data.Y["train"].to(model.device)
    steps, eval_every, checkpoint_every = loop.steps, loop.eval_every, loop.checkpoint_every
    subsets = eval_subsets(data, loop.eval_examples)
    gen = torch.Generator().manual_seed(loop.seed)
    if progress.batch_rng is not None:
        gen.set_state(progress.batch_rng)
    # dropout draws from torch's global generator: seeded at the start, restored on resume, so both repeat
    _global_rng(progress.torch_rng, loop.seed)
    diagnoser = _Diagnoser(model, Xtr, Ytr, loop, hooks, progress) if loop.diagnose_every else None
    if diagnoser is not None and progress.step == 0:
        diagnoser(0)  # the initial model
    while progress.step < steps:
        start = progress.step
        end = min(steps, *(start // every * every + every for every in (CHUNK, eval_every, checkpoint_every)))
        S = end - start
        rows, targets = _batches(engine, Xtr, Ytr, loop.batch_size, S, gen)
        lrs = [loop.schedule(s) for s in range(start, end)]
        picked = torch.empty(S, *engine.slot, device=model.device)  # log p(target) per step (and example)
        t0 = time.perf_counter()
        probing = _run_steps(engine, rows, targets, lrs, picked, start, diagnoser)
        losses = -picked.view(S, model.replicas, -1).mean(2).cpu()  # the segment's one host sync
        progress.seconds += time.perf_counter() - t0 - probing
        _check_losses(losses, start, lrs, progress, model.vocab_size)
        progress.step = end
        progress.batch_rng = gen.get_state()
        progress.torch_rng = _global_rng()
        progress.optimizer = engine.state() if end % checkpoint_every == 0 or end == steps else None
        progress.losses.append(losses)
        hooks.on_segment(start, losses, lrs, progress)
        if end % eval_every == 0 or end == steps:  # the last evaluation scores every example
            try:
                _evaluate_at(end, model, data, progress, hooks, loop.eval_threads, None if end == steps else subsets)
            except Pruned:
                progress.optimizer = engine.state()
                hooks.on_checkpoint(progress)
                raise
        if end % checkpoint_every == 0 or end == steps:
            hooks.on_checkpoint(progress)


def _batches(engine, X: torch.Tensor, Y: torch.Tensor, batch_size: int, S: int, gen: torch.Generator):
    """The engine's arguments of a segment's S steps: batch indices for all of them drawn in one call, or (batch_size
    0) every example at every step."""
    K = engine.model.replicas
    if batch_size:
        ix = torch.randint(0, X.shape[0], (S, K, batch_size), generator=gen).to(X.device)
        return engine.batches(X, Y, ix)
    rows, targets = engine.batches(X, Y, torch.arange(X.shape[0], device=X.device).expand(1, K, X.shape[0]))
    return rows * S, targets * S  # built once


def _run_steps(engine, rows, targets, lrs: list[float], picked: torch.Tensor, start: int, diagnoser) -> float:
    """Engine steps start + 1 .. start + len(lrs), in order on their batches; returns the seconds spent diagnosing
    between them: a step that ends on a diagnosis runs after a snapshot of the parameters, and the probe follows."""
    work = list(zip(rows, targets, lrs, picked.unbind(0)))
    probing, done = 0.0, 0
    for step in diagnoser.due(start, start + len(work)) if diagnoser is not None else ():
        for args in work[done : step - start - 1]:
            engine.step(*args)
        before = diagnoser.snapshot()
        engine.step(*work[step - start - 1])
        t0 = time.perf_counter()
        diagnoser(step, before, lrs[step - start - 1])
        probing += time.perf_counter() - t0
        done = step - start
    for args in work[done:]:
        engine.step(*args)
    return probing


def _check_losses(losses: torch.Tensor, start: int, lrs: list[float], progress: Progress, vocab_size: int) -> None:
    """Raise Diverged on a segment's non-finite or runaway minibatch loss (S, K); note the run's initial loss."""
    bad = ~torch.isfinite(losses)
    if bad.any():
        i = int(bad.any(1).nonzero()[0])
        raise Diverged(start + i, lrs[i], float(losses[i][bad[i]][0]))
    if progress.initial_loss is None:
        progress.initial_loss = float(losses[0].max())
    check_runaway(losses, start, lrs, divergence_bound(progress.initial_loss, vocab_size))


class _Diagnoser:
    """The loop's diagnoses (the module docstring): the probe batch, the health rules, the hooks."""

    def __init__(self, model, X: torch.Tensor, Y: torch.Tensor, loop: Loop, hooks: Hooks, progress: Progress):
        self.model, self.hooks, self.progress = model, hooks, progress
        self.every, self.last = loop.diagnose_every, loop.steps
        self.X, self.Y = diagnostics.probe_batch(X, Y)
        self.health = diagnostics.Health(model, progress.health)

    def due(self, start: int, end: int) -> list[int]:
        """The steps start + 1 .. end that end on a diagnosis: the multiples of diagnose_every and the last step."""
        due = list(range((start // self.every + 1) * self.every, end + 1, self.every))
        return due + [end] if end == self.last and end not in due else due

    def snapshot(self) -> dict[str, torch.Tensor]:
        return diagnostics.snapshot(self.model)

    def __call__(self, step: int, before: dict | None = None, lr: float | None = None) -> None:
        report = diagnostics.probe(self.model, self.X, self.Y, before, step, lr)
        self.progress.warnings += self.health.check(report)
        self.progress.health = self.health.state()
        self.hooks.on_diagnose(step, report)
