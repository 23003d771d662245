"""makemore's Optuna sweeper: Hydra's side of makemore/search.py (which holds the logic).

Written for this project because hydra-optuna-sweeper 1.3 cannot prune (Hydra issue 1954), launches trials in
blocking batches of n_jobs and pins optuna < 3. Hydra finds sweepers only in the `hydra_plugins` namespace
package; importing this module registers the config `hydra/sweeper=makemore_optuna` (the schema below, so a
typo or a wrong type in `hydra.sweeper.*` fails at composition). Optuna and makemore.search are imported only
when a search runs.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules without registering them in sys.modules,
# and dataclasses cannot resolve string annotations there.
import logging
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import configure_log
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from makemore.hydra_app import SEARCH_SWEEPER

log = logging.getLogger("makemore")


class Direction(Enum):
    minimize = "minimize"
    maximize = "maximize"


class PrunerName(Enum):
    none = "none"
    median = "median"
    hyperband = "hyperband"


@dataclass
class SamplerConf:
    """Optuna's TPESampler."""

    seed: Optional[int] = None  # a continued study uses seed + its number of trials
    n_startup_trials: int = 10  # random trials before TPE models the losses


@dataclass
class SweeperConf:
    _target_: str = SEARCH_SWEEPER
    direction: Direction = Direction.minimize  # of the value a job returns (run.py: its dev loss)
    study_name: str = "makemore"
    storage: Optional[str] = None  # null: <sweep dir>/optuna.journal; a path (journal file) or a database URL
    n_trials: int = 20  # finished trials (completed, pruned, failed) the study should have
    n_jobs: int = 2  # trials running at once (at most as many as the launcher runs)
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerName = PrunerName.hyperband
    min_resource: Optional[int] = None  # steps before a trial can be pruned (null: train.steps // 9)
    reduction_factor: int = 3  # hyperband: each rung keeps the best 1/reduction_factor of the trials
    min_trials: int = 5  # median: finished trials before it prunes any
    params: Dict[str, Any] = field(default_factory=dict)  # the search space: key -> choice(...), interval(...), ...
    # keys sampled only where a choice of `params` took a value: "key=value" -> {key2: search space or value}
    conditional: Dict[str, Dict[str, Any]] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="makemore_optuna", node=SweeperConf, provider="makemore")


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        pass  # sweep() reads the same settings, as plain values, from config.hydra.sweeper

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        # one job per launch: the joblib launcher's lines would number every trial #0 and repeat its settings;
        # search.optimize logs each trial's number and values instead
        logging.getLogger("hydra_plugins.hydra_joblib_launcher._core").setLevel(logging.WARNING)
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def slots(self) -> int:
        """Jobs the launcher runs at once: the basic launcher runs them in this process, one at a time."""
        launcher = self.config.hydra.launcher
        if str(launcher.get("_target_", "")).endswith("BasicLauncher"):
            return 1
        n = launcher.get("n_jobs")
        if n is not None and n < 0:  # joblib's -1: one per core
            from joblib import cpu_count

            return cpu_count()
        return n or sys.maxsize

    def launch_job(self, number: int, overrides: List[str]) -> Optional[Path]:
        """Trial `number` as Hydra job `number` (the job finds its trial by it); returns the job's dir."""
        (ret,) = self.launcher.launch([overrides], initial_job_idx=number)
        # a job run in this process (basic launcher, joblib on one core) leaves its run.log handler behind
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return Path(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg is not None else None

    def sweep(self, arguments: List[str]) -> Any:
        from makemore import search
        from makemore.config import ConfigError

        settings = OmegaConf.to_container(self.config.hydra.sweeper, resolve=True, enum_to_str=True)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # as Hydra's sweepers do: resume=<sweep dir> reads it
        try:
            return search.sweep(
                settings,
                arguments,
                sweep_dir=str(self.config.hydra.sweep.dir),
                steps=int(self.config.train.steps),
                slots=self.slots(),
                launch_job=self.launch_job,
            )
        except ConfigError as e:  # one line, no traceback (Hydra would print one for an exception)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
