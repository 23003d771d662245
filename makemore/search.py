"""Hyper-parameter search on Optuna's ask/tell: the logic behind the project's Hydra sweeper
(hydra_plugins/makemore_optuna), in plain functions that know no Hydra plugin.

The sweeper process asks Optuna for a trial, launches it as one Hydra job (trial number = hydra.job.num) and
tells Optuna how it ended; up to n_jobs trials run at once and a trial that ends frees its slot for the next
at once (no batches). The job itself reports its dev loss at every evaluation to the study's storage and asks
the pruner whether to go on (`TrialReport`). Only a search (its sweeper and its jobs) imports this module and
Optuna; a single run never does.

The study lives in a storage both sides open: by default a journal file in the sweep dir, so rerunning the
same command continues an interrupted search (`open_study`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from .config import ConfigError

log = logging.getLogger("makemore")

JOURNAL = "optuna.journal"  # the default storage, in the sweep dir
PRUNERS = ("none", "median", "hyperband")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# study user attributes: what the search was started with, compared when a command continues it
SPACE_ATTR, FIXED_ATTR = "makemore:space", "makemore:fixed"


class SearchError(ConfigError):
    """A search that cannot start or continue: one line naming the key or the study."""


# -- the search space: Hydra's sweep syntax -> Optuna distributions ------------------------------------------


def search_space(overrides: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """`key=choice(...)`, `key=range(a,b[,step])`, `key=interval(a,b)` (float), `key=int(interval(a,b))`,
    `key=tag(log, interval(a,b))` -> Optuna distributions; plain `key=value` overrides -> fixed values, passed
    to every trial as they are."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        key = o.get_key_element()
        if o.is_sweep_override():
            space[key] = _distribution(o, key)
        else:
            fixed[key] = o.get_value_element_as_str()
    for key in set(space) & set(fixed):  # a command-line value fixes a key of the preset's space
        del space[key]
    return space, fixed


def _distribution(o, key: str) -> BaseDistribution:
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer

    v = o.value()
    if isinstance(v, ChoiceSweep) or (isinstance(v, RangeSweep) and v.shuffle):
        return CategoricalDistribution(list(o.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(v, RangeSweep):
        values = list(o.sweep_iterator())
        if all(isinstance(x, int) for x in values) and len(values) > 1:
            return IntDistribution(min(values), max(values), step=abs(values[1] - values[0]))
        return CategoricalDistribution(values)
    if isinstance(v, IntervalSweep):
        log_scale = "log" in v.tags
        if isinstance(v.start, int) and isinstance(v.end, int):
            return IntDistribution(v.start, v.end, log=log_scale)
        return FloatDistribution(float(v.start), float(v.end), log=log_scale)
    text = (o.input_line or "").partition("=")[2]
    raise SearchError(
        f"{key}: {text} is not a search space; use choice(a,b,...), range(a,b[,step]), interval(a,b), "
        "int(interval(a,b)) or tag(log, interval(a,b))"
    )


# A conditional key's Optuna name carries its condition ("schedule.lr | optimizer=adamw"), so TPE models the
# lr of each optimizer apart (one name would mix their scales) and the dashboard shows which is which.
CONDITION_SEP = " | "

# condition ("key=value") -> {Optuna name: distribution}
Conditional = dict[str, dict[str, BaseDistribution]]


def conditional_space(
    conditional: dict[str, dict[str, Any]], space: dict[str, BaseDistribution], fixed: dict[str, str]
) -> Conditional:
    """hydra.sweeper.conditional, `{"key=value": {key2: space, ...}}`: keys sampled only in the trials whose
    `key` took `value` (`key` a choice of the main space). A plain value there is passed as it is to those trials.
    Where the command line fixes `key`, a block whose value it names joins the main space (moved into `space`)
    and the others are dropped; a key the command line fixes is never sampled."""
    out: Conditional = {}
    for condition, block in conditional.items():
        key, value = _condition(condition)
        where = f"hydra.sweeper.conditional: {condition!r}"
        if not key or not value:
            raise SearchError(f"{where} is not a condition; write key=value, e.g. optimizer=adamw")
        if key in fixed:
            if fixed[key] == value:
                space.update(_block_space(block, fixed, where))
            continue
        dist = space.get(key)
        if not isinstance(dist, CategoricalDistribution):
            raise SearchError(f"{where}: {key} must be a choice(...) of hydra.sweeper.params")
        if value not in [str(c) for c in dist.choices]:
            allowed = ", ".join(str(c) for c in dist.choices)
            raise SearchError(f"{where}: {value} is not one of {key}'s choices ({allowed})")
        names = {f"{k}{CONDITION_SEP}{condition}": d for k, d in _block_space(block, fixed, where).items()}
        for name in names:
            if param_key(name) in space:
                raise SearchError(f"{where}: {param_key(name)} is also in hydra.sweeper.params; keep it in one")
        out[condition] = names
    return out


def _condition(condition: str) -> tuple[str, str]:
    """ "key=value" -> (key, value); an empty part where there is no "="."""
    key, eq, value = condition.partition("=")
    return key.strip(), value.strip() if eq else ""


def _block_space(block: dict[str, Any], fixed: dict[str, str], where: str) -> dict[str, BaseDistribution]:
    if not isinstance(block, dict):
        raise SearchError(f"{where} must map keys to search spaces, got {block!r}")
    space, values = search_space([f"{k}={v}" for k, v in block.items() if k not in fixed])
    return space | {k: CategoricalDistribution([v]) for k, v in values.items()}


def param_key(name: str) -> str:
    """The override key of an Optuna parameter name."""
    return name.partition(CONDITION_SEP)[0]


def suggest_conditional(trial: optuna.Trial, conditional: Conditional) -> None:
    """Sample the keys whose condition the trial's main parameters meet."""
    for condition, names in conditional.items():
        key, value = _condition(condition)
        if str(trial.params.get(key)) == value:
            for name, dist in names.items():
                trial._suggest(name, dist)  # noqa: SLF001  (Optuna's one entry point for any distribution)


def trial_overrides(params: dict[str, Any], fixed: dict[str, str]) -> list[str]:
    """A trial's job overrides: its sampled values, then the fixed ones."""
    text = lambda v: "null" if v is None else str(v)  # noqa: E731  (Hydra's null, not Python's None)
    return [f"{param_key(k)}={text(v)}" for k, v in params.items()] + [f"{k}={v}" for k, v in fixed.items()]


# -- sampler, pruner, storage -------------------------------------------------------------------------------


def make_sampler(seed: int | None, n_startup_trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)


def make_pruner(
    name: str, *, steps: int, min_resource: int | None = None, reduction_factor: int = 3, min_trials: int = 5
) -> optuna.pruners.BasePruner:
    """The pruner of a search whose trials train `steps` steps and report their dev loss at the training step of
    each evaluation. `min_resource`: steps every trial trains before it can be pruned (null: steps // 9), which
    is hyperband's first rung and median's warm-up; `min_trials`: trials median waits for to finish first."""
    if name not in PRUNERS:
        raise SearchError(f"hydra.sweeper.pruner must be one of {', '.join(PRUNERS)}, got {name!r}")
    if reduction_factor < 2:
        raise SearchError(f"hydra.sweeper.reduction_factor must be an integer >= 2, got {reduction_factor}")
    if min_resource is not None and min_resource < 1:
        raise SearchError(f"hydra.sweeper.min_resource must be a number of steps >= 1 (or null), got {min_resource}")
    if min_trials < 0:
        raise SearchError(f"hydra.sweeper.min_trials must be >= 0, got {min_trials}")
    first = min_resource or max(1, steps // 9)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=min_trials, n_warmup_steps=first)
    if name == "hyperband":
        if first >= steps:  # too few steps to have a rung below the end: nothing to prune
            return optuna.pruners.NopPruner()
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=steps, reduction_factor=reduction_factor)
    return optuna.pruners.NopPruner()


def storage_path(storage: str | None, sweep_dir: str | Path) -> str:
    """The storage as a string both the sweeper and its jobs open: a database URL (`sqlite:///...`) as given,
    else a journal file (null: <sweep dir>/optuna.journal), absolute. optuna-dashboard opens either."""
    if storage and "://" in storage:
        return storage
    return str(Path(storage or Path(sweep_dir) / JOURNAL).resolve())


def open_storage(storage: str, expected: bool = False) -> optuna.storages.BaseStorage:
    """The storage; a journal file that is damaged, or missing where a study is `expected` in it: SearchError
    naming the file."""
    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    from optuna.storages.journal import JournalFileBackend

    if expected and not Path(storage).is_file():
        raise SearchError(
            f"the study storage {storage} is missing (deleted?), though the search's jobs are there; restore the "
            "file, or start a new study: hydra.sweeper.study_name=<new name>"
        )
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(storage))
    except ValueError as e:  # json's JSONDecodeError, Optuna's "Invalid log format."
        raise SearchError(damaged(storage, e)) from None


def damaged(storage: str, e: BaseException) -> str:
    """SearchError's line for a journal file that cannot be read."""
    what = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__
    return (
        f"the study storage {storage} is damaged or was replaced while in use ({what}); restore it, or start a new "
        "study: hydra.sweeper.study_name=<new name>"
    )


class StorageWatch:
    """A journal file's identity when the search opened it: `check` raises SearchError naming it once it is gone
    or another file (deleted and made again) took its place, so the search stops rather than lose its trials."""

    def __init__(self, storage: str):
        self.path = None if "://" in storage else Path(storage)
        self.identity = self._identity()

    def _identity(self):
        try:
            st = self.path.stat() if self.path else None
        except FileNotFoundError:
            return None
        return st and (st.st_dev, st.st_ino)

    def check(self) -> None:
        if self.path is not None and self._identity() != self.identity:
            raise SearchError(
                f"the study storage {self.path} was deleted or replaced while the search ran: its trials are not in "
                "it; restore the file to continue, or start a new study: hydra.sweeper.study_name=<new name>"
            )


def has_trial_dirs(sweep_dir: str | Path) -> bool:
    """Whether a search has run in `sweep_dir`: job dirs named `<trial>_<overrides>` (hydra_app.job_name)."""
    return any(p.is_dir() and (p / ".hydra").is_dir() for p in Path(sweep_dir).glob("[0-9]*_*"))


# -- the study: new or continued ------------------------------------------------------------------------------


def open_study(
    *,
    storage: str,
    study_name: str,
    direction: str,
    space: dict[str, BaseDistribution],
    fixed: dict[str, str],
    sampler_seed: int | None,
    n_startup_trials: int,
    pruner: optuna.pruners.BasePruner,
    where: str,
) -> optuna.Study:
    """Create the study, or continue the stored one if it was started with this search space and these fixed
    overrides (else SearchError naming `where`, the sweep dir). Trials an interrupted session left running are
    marked failed and their points queued to run again (requeue_interrupted). A continued study's sampler is
    seeded with seed + its number of trials, so its random start-up points differ from the first session's."""
    storage_obj = open_storage(storage, expected=has_trial_dirs(where))
    space_json = {k: optuna.distributions.distribution_to_json(d) for k, d in space.items()}
    fixed_list = sorted(f"{k}={v}" for k, v in fixed.items())
    try:
        old = optuna.load_study(study_name=study_name, storage=storage_obj)
    except KeyError:
        old = None
    seed = sampler_seed
    if old is not None:
        attrs = old.user_attrs
        if attrs.get(SPACE_ATTR) != space_json or attrs.get(FIXED_ATTR) != fixed_list:
            raise SearchError(
                f"the study {study_name!r} in {where} was started with other overrides or another search space "
                f"({_difference(attrs, space_json, fixed_list)}); continue it with its own command, or start a new "
                f"one with hydra.sweeper.study_name=<new name>"
            )
        n = len(old.get_trials(deepcopy=False))
        seed = None if sampler_seed is None else sampler_seed + n
    study = optuna.create_study(
        study_name=study_name,
        storage=storage_obj,
        sampler=make_sampler(seed, n_startup_trials),
        pruner=pruner,
        direction=direction,
        load_if_exists=True,
    )
    if old is None:
        study.set_user_attr(SPACE_ATTR, space_json)
        study.set_user_attr(FIXED_ATTR, fixed_list)
    else:
        requeue_interrupted(study, where)
    return study


def _difference(attrs: dict, space: dict, fixed: list[str]) -> str:
    was_space, was_fixed = attrs.get(SPACE_ATTR) or {}, attrs.get(FIXED_ATTR) or []
    parts = [f"was {k}={v}" for k, v in sorted(was_space.items()) if space.get(k) != v]
    parts += [f"now {k}" for k in sorted(space) if k not in was_space]
    parts += [f"was {o}" for o in was_fixed if o not in fixed] + [f"now {o}" for o in fixed if o not in was_fixed]
    return "; ".join(parts) or "not started by this project's sweeper"


def requeue_interrupted(study: optuna.Study, sweep_dir: str | Path) -> list[int]:
    """Mark the trials left running as failed and queue their points again (user attr `rerun_of` on the new
    trial); their job dirs (`<number>_<overrides>`, config.job_name) get a metrics.json saying so. Returns
    their numbers."""
    from .results import record

    numbers = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number}, skip_if_exists=False)
        for job in Path(sweep_dir).glob(f"{t.number}_*"):
            if job.is_dir() and record.read(job) is None:
                record.write(job, record.failed("interrupted: the search stopped while it ran; run again"))
        numbers.append(t.number)
    if numbers:
        log.info("interrupted, to run again as new trials: %s", ", ".join(f"#{n}" for n in numbers))
    return numbers


def finished(study: optuna.Study) -> int:
    """Trials that count towards n_trials: completed, pruned and failed ones, not the interrupted (rerun)."""
    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get("rerun_of") for t in trials}
    return sum(t.state in FINISHED and t.number not in rerun for t in trials)


# -- the sweeper's loop ----------------------------------------------------------------------------------------

# launch(trial number, overrides) -> (state, value or None, user attrs to record)
Launch = Callable[[int, list[str]], tuple[TrialState, float | None, dict[str, Any]]]


def optimize(
    study: optuna.Study,
    *,
    n_trials: int,
    n_jobs: int,
    space: dict[str, BaseDistribution],
    fixed: dict[str, str],
    launch: Launch,
    conditional: Conditional | None = None,
    check: Callable[[], None] | None = None,
) -> int:
    """Run trials until the study has n_trials finished ones, at most n_jobs at once: each of n_jobs threads
    asks for a trial, launches its job, waits for it and tells Optuna, then asks for the next, so a short or
    pruned trial frees its slot while a long one runs on. `check` runs before each ask and tell (StorageWatch's:
    the study's file is still there); once it raises, no slot starts a trial. Returns the number of trials
    launched."""
    lock = threading.Lock()  # ask/tell on one Study object from several threads
    todo = [n_trials - finished(study)]

    def checked() -> None:
        if check is not None:
            try:
                check()
            except BaseException:
                todo[0] = 0
                raise

    def worker() -> int:
        launched = 0
        while True:
            with lock:
                if todo[0] <= 0:
                    return launched
                checked()
                todo[0] -= 1
                trial = study.ask(space)
                suggest_conditional(trial, conditional or {})
            overrides = trial_overrides(trial.params, fixed)
            log.info("trial #%d: %s", trial.number, " ".join(overrides[: len(trial.params)]))
            try:
                state, value, attrs = launch(trial.number, overrides)
            except BaseException:  # the launcher itself failed: stop the search, the other slots start nothing new
                with lock:
                    todo[0] = 0
                    study.tell(trial, state=TrialState.FAIL)
                raise
            launched += 1
            with lock:
                checked()
                for k, v in attrs.items():
                    trial.set_user_attr(k, v)
                study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
            log.info("trial #%d %s%s", trial.number, state.name.lower(), f": {value:.4f}" if value is not None else "")

    if todo[0] <= 0:
        log.info("the study %r has its %d trials: nothing to run", study.study_name, n_trials)
        return 0
    threads = max(1, min(n_jobs, todo[0]))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(f.result() for f in [pool.submit(worker) for _ in range(threads)])


def sweep(
    settings: dict[str, Any],
    arguments: Sequence[str],
    *,
    sweep_dir: str,
    steps: int,
    slots: int,
    launch_job: Callable[[int, list[str]], Path | None],
) -> dict[str, Any] | None:
    """A whole search: `settings` are the sweeper's config (hydra.sweeper, plain values), `arguments` the
    command's overrides, `steps` the trials' train.steps, `slots` how many jobs the launcher runs at once and
    `launch_job(number, overrides)` runs trial `number` as a job and returns its dir. Writes
    optimization_results.yaml into the sweep dir and returns its content (None while no trial completed)."""
    import yaml

    from .results import record

    study, space, fixed, conditional = start(settings, arguments, sweep_dir=sweep_dir, steps=steps)
    n_jobs = min(settings["n_jobs"], slots)
    log.info(
        "study %r (%s): %d of %d trials finished; %s pruner; %d trial%s at once",
        study.study_name,
        storage_path(settings["storage"], sweep_dir),
        finished(study),
        settings["n_trials"],
        settings["pruner"],
        n_jobs,
        "s" if n_jobs > 1 else "",
    )

    def launch(number: int, overrides: list[str]) -> tuple[TrialState, float | None, dict[str, Any]]:
        out = launch_job(number, overrides)
        state, value, attrs = job_outcome(record.read(out) if out else None)
        return state, value, attrs | ({"run_dir": str(out.resolve())} if out else {})

    watch = StorageWatch(storage_path(settings["storage"], sweep_dir))
    try:
        optimize(study, n_trials=settings["n_trials"], n_jobs=n_jobs, space=space, fixed=fixed, launch=launch,
                 conditional=conditional, check=watch.check)  # fmt: skip
    except SearchError:
        raise
    except ValueError as e:  # a journal replaced under the study: JSONDecodeError, or Optuna's own
        raise SearchError(damaged(storage_path(settings["storage"], sweep_dir), e)) from None
    best = best_results(study)
    if best is None:
        log.warning("no trial has completed: no optimization_results.yaml")
        return None
    Path(sweep_dir, "optimization_results.yaml").write_text(yaml.safe_dump(best, sort_keys=False))
    log.info("best dev loss %.4f: %s", best["best_value"], best["best_params"])
    return best


def start(settings: dict[str, Any], arguments: Sequence[str], *, sweep_dir: str, steps: int):
    """A search's study, new or continued, with its search space: (study, space, fixed, conditional)."""
    for key in ("n_trials", "n_jobs"):
        if settings[key] < 1:
            raise SearchError(f"hydra.sweeper.{key} must be an integer >= 1, got {settings[key]}")
    params = [f"{k}={v}" for k, v in (settings.get("params") or {}).items()]
    space, fixed = search_space(params + list(arguments))
    conditional = conditional_space(settings.get("conditional") or {}, space, fixed)
    study = open_study(
        storage=storage_path(settings["storage"], sweep_dir),
        study_name=settings["study_name"],
        direction=settings["direction"],
        space=space | {name: d for names in conditional.values() for name, d in names.items()},
        fixed=fixed,
        sampler_seed=settings["sampler"]["seed"],
        n_startup_trials=settings["sampler"]["n_startup_trials"],
        pruner=make_pruner(settings["pruner"], steps=steps, **pruner_settings(settings)),
        where=sweep_dir,
    )
    return study, space, fixed, conditional


def job_outcome(m: dict[str, Any] | None) -> tuple[TrialState, float | None, dict[str, Any]]:
    """A trial's end in Optuna's terms, from its job's metrics.json: ok -> complete with its dev loss,
    pruned -> pruned (Optuna keeps the last reported loss), diverged, failed or no record -> failed."""
    if m is None:
        return TrialState.FAIL, None, {"status": "missing"}
    status = m.get("status")
    attrs = {"status": status} | ({"error": m["error"]} if m.get("error") else {})
    if status == "ok":
        return TrialState.COMPLETE, float(m["dev_loss"]), attrs
    if status == "pruned":
        return TrialState.PRUNED, None, attrs
    return TrialState.FAIL, None, attrs


def best_results(study: optuna.Study) -> dict[str, Any] | None:
    """optimization_results.yaml: the best completed trial (None while no trial has completed)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    params = {param_key(k): v for k, v in best.params.items()}
    return {"name": "optuna", "best_params": params, "best_value": best.value}


# -- a trial's job ----------------------------------------------------------------------------------------------


class TrialReport:
    """In a trial's job: report the dev loss at each evaluation (step = training step) and say whether the
    pruner stops the trial there. The last evaluation (step == steps) is reported and never pruned. `guard` runs
    before each report (the job's check that its sweep dir is still its sweep's). `reruns`: the job dir of the
    interrupted trial this one runs again (requeue_interrupted), whose checkpoint it continues from, or None."""

    def __init__(
        self,
        storage: str,
        study_name: str,
        number: int,
        pruner: str,
        steps: int,
        guard=None,
        sweep_dir: str | Path | None = None,
        **settings: Any,
    ):
        backend = open_storage(storage, expected=True)
        try:
            study = optuna.load_study(
                study_name=study_name,
                storage=backend,
                pruner=make_pruner(pruner, steps=steps, **settings),
                sampler=optuna.samplers.RandomSampler(),  # a job samples nothing: the cheapest sampler to build
            )
            study_id = backend.get_study_id_from_name(study_name)
            self.trial = optuna.trial.Trial(study, backend.get_trial_id_from_study_id_trial_number(study_id, number))
        except KeyError:
            raise SearchError(
                f"the study storage {storage} holds no study {study_name!r} with a trial #{number}"
            ) from None
        self.steps, self.pruner, self.guard, self.storage = steps, pruner, guard, storage
        self.reruns = None
        previous = self.trial.user_attrs.get("rerun_of")
        if previous is not None and sweep_dir is not None:
            dirs = sorted(p for p in Path(sweep_dir).glob(f"{previous}_*") if p.is_dir())
            self.reruns = dirs[0] if dirs else None

    def __call__(self, step: int, dev_loss: float) -> str | None:
        """The reason to stop here, or None to go on."""
        if self.guard is not None:
            self.guard()
        if "://" not in self.storage and not Path(self.storage).is_file():
            raise SearchError(f"the study storage {self.storage} was deleted while this trial ran")
        try:
            self.trial.report(dev_loss, step)
            stop = step < self.steps and self.trial.should_prune()
        except ValueError as e:  # a journal replaced under it: JSONDecodeError, or Optuna's own
            raise SearchError(damaged(self.storage, e)) from None
        return f"stopped at step {step} by the {self.pruner} pruner (dev loss {dev_loss:.4f})" if stop else None

    def replay(self, evals: list[dict]) -> None:
        """Report the evaluations of the run this trial continues (its checkpoint's), as that run did; their
        pruning decisions were taken then."""
        for e in evals:
            self.trial.report(sum(e["dev"]) / len(e["dev"]), e["step"])


def pruner_settings(sweeper: dict[str, Any]) -> dict[str, Any]:
    """make_pruner's settings from the sweeper's config (hydra.sweeper)."""
    return {k: sweeper[k] for k in ("min_resource", "reduction_factor", "min_trials")}


def job_trial(sweeper: dict[str, Any], sweep_dir: str, number: int, steps: int, guard=None) -> TrialReport:
    """The TrialReport of job `number` of a search whose sweeper config (hydra.sweeper) is `sweeper`."""
    storage = storage_path(sweeper.get("storage"), sweep_dir)
    return TrialReport(
        storage, sweeper["study_name"], number, str(sweeper["pruner"]), steps, guard, sweep_dir,
        **pruner_settings(sweeper),
    )  # fmt: skip
