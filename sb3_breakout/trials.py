"""
One Optuna trial of ``python -m sb3_breakout.tune``: the plan a worker checked before anything was
opened, the objective (sample, merge into the entry, train through RL Zoo's ``ExperimentManager``,
evaluate on full games with epsilon), and the sampler and pruner it runs under.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from rl_zoo3.callbacks import TrialEvalCallback

from sb3_breakout import checkpoint as ckpt
from sb3_breakout import config as cfg
from sb3_breakout.search_space import Param, apply_values, without_running_reward
from sb3_breakout.study_storage import ClaimLock, StorageSpec
from sb3_breakout.train import BreakoutExperimentManager

#: Trial user attribute: the values this trial put into the entry (sampled and fixed).
HYPERPARAMS_ATTR = "hyperparams"

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "gp")
#: Python packages a sampler needs beyond Optuna's own.
SAMPLER_PACKAGES = {"cmaes": ("cmaes",), "qmc": ("scipy",), "gp": ("scipy",)}
PRUNERS = ("median", "halving", "hyperband", "nop", "none")


# ========================================================================================== trials
class TrialExperimentManager(BreakoutExperimentManager):
    """
    The training CLI's ``ExperimentManager`` for one trial: the trial's entry, its own folder
    ``<study folder>/trials/trial_<n>/`` (Monitor CSV, ``config.yml``, ``evaluations.npz``).
    """

    def __init__(self, *args: Any, trial_dir: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_path = str(trial_dir)
        self.params_path = str(trial_dir / self.env_name)


class EpsilonTrialEvalCallback(TrialEvalCallback):
    """
    RL Zoo's ``TrialEvalCallback`` (evaluate every ``eval_freq`` steps, report the mean score to the
    trial, stop when the pruner says so) playing with epsilon ``eval_eps``: SB3's ``DQN.predict``
    explores with ``model.exploration_rate`` when not deterministic, so that rate is set for the
    evaluation and restored after. Scores are Monitor scores of full games (the env is Monitor-wrapped
    under the profile's wrappers, so SB3's ``evaluate_policy`` counts whole games).

    It also stops training when the loss or the weights stop being finite (``diverged`` says why).

    :param eval_eps: probability of a random action during evaluation (0.05).
    """

    def __init__(self, eval_env: Any, trial: optuna.Trial, n_eval_episodes: int, eval_freq: int,
                 eval_eps: float = 0.05, log_path: str | None = None) -> None:
        super().__init__(eval_env, trial, n_eval_episodes=n_eval_episodes, eval_freq=eval_freq,
                         deterministic=False, log_path=log_path)
        self.eval_eps = float(eval_eps)
        self.scores: list[float] = []
        self.diverged: str | None = None

    def _on_step(self) -> bool:
        loss = self.logger.name_to_value.get("train/loss")
        if loss is not None and not math.isfinite(loss):
            self.diverged = f"training loss became {loss} at step {self.num_timesteps}"
            return False
        if not (self.eval_freq > 0 and self.n_calls % self.eval_freq == 0):
            return True
        if not ckpt.weights_are_finite(self.model):
            self.diverged = f"network weights are not finite at step {self.num_timesteps}"
            return False
        saved = self.model.exploration_rate  # type: ignore[attr-defined]
        self.model.exploration_rate = self.eval_eps  # type: ignore[attr-defined]
        try:
            keep_going = super()._on_step()
        finally:
            self.model.exploration_rate = saved  # type: ignore[attr-defined]
        self.scores.append(float(self.last_mean_reward))
        return keep_going


@dataclass
class Plan:
    """Everything a worker needs, checked before anything is opened or written."""

    entry: dict[str, Any]
    space: dict[str, Param]
    storage: StorageSpec
    study_name: str
    out_dir: Path
    settings: dict[str, Any]
    eval_env_kwargs: dict[str, Any]


class Objective:
    """
    One trial: sample the search space, merge the values into the entry, train and evaluate.

    :param lock: released as soon as the trial exists (it was taken to claim it).
    """

    def __init__(self, args: argparse.Namespace, plan: Plan, lock: ClaimLock) -> None:
        self.args = args
        self.plan = plan
        self.lock = lock
        self.last_number: int | None = None

    def values(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's values of every search-space parameter (fixed ones included)."""
        return {name: param.suggest(trial) for name, param in self.plan.space.items()}

    def __call__(self, trial: optuna.Trial) -> float:
        self.lock.release()
        self.last_number = trial.number
        try:
            return self.run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # recorded as FAIL by study.optimize(catch=...); the reason goes in the CSV
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:1000])
            raise

    def run(self, trial: optuna.Trial) -> float:
        """Train and evaluate ``trial``; its value is the mean score of the last evaluation."""
        values = self.values(trial)
        trial.set_user_attr(HYPERPARAMS_ATTR, values)
        entry = apply_values(self.plan.entry, values)
        args = self.args
        cfg.validate_entry(entry, args.algo)
        trial_dir = self.plan.out_dir / "trials" / f"trial_{trial.number:04d}"
        seed = args.seed + trial.number if args.seed >= 0 else int.from_bytes(os.urandom(4), "little") >> 1
        exp = TrialExperimentManager(
            args, args.algo, args.env, str(trial_dir.parent),
            n_timesteps=args.n_timesteps, eval_freq=-1, seed=seed, verbose=args.verbose, device=args.device,
            config=args.conf_file or str(cfg.default_config(args.algo)), show_progress=args.progress,
            profile=args.profile, entry=without_running_reward(entry), trial_dir=trial_dir,
        )
        model, _ = exp.setup_experiment()
        exp.eval_env_kwargs = dict(self.plan.eval_env_kwargs)
        eval_env = exp.create_envs(1, eval_env=True)
        evaluation = EpsilonTrialEvalCallback(
            eval_env, trial, n_eval_episodes=args.eval_episodes,
            eval_freq=max(args.n_timesteps // args.n_evaluations // exp.n_envs, 1),
            eval_eps=args.eval_eps, log_path=str(trial_dir),
        )
        try:
            model.learn(args.n_timesteps, callback=[*exp.callbacks, evaluation],
                        log_interval=None if args.verbose == 0 else 100)
        finally:
            model.env.close()
            eval_env.close()
        trial.set_user_attr("eval_scores", evaluation.scores)
        if evaluation.diverged:
            trial.set_user_attr("diverged", evaluation.diverged)
            raise optuna.TrialPruned(f"training diverged: {evaluation.diverged}")
        if evaluation.is_pruned:
            raise optuna.TrialPruned(f"pruned after evaluation {evaluation.eval_idx} "
                                     f"(mean score {evaluation.last_mean_reward:.2f})")
        return float(evaluation.last_mean_reward)


# ================================================================================== sampler, pruner
def make_sampler(name: str, seed: int | None, n_startup_trials: int) -> optuna.samplers.BaseSampler:
    """
    Optuna's sampler ``name``: ``tpe`` (multivariate, with the constant liar so that concurrent
    workers do not sample next to each other's running trials), ``random``, ``cmaes``, ``qmc``, ``gp``.
    """
    s = optuna.samplers
    if name == "tpe":
        return s.TPESampler(n_startup_trials=n_startup_trials, seed=seed, multivariate=True,
                            constant_liar=True)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "cmaes":
        return s.CmaEsSampler(n_startup_trials=n_startup_trials, seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        return s.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return s.GPSampler(n_startup_trials=n_startup_trials, seed=seed)
    raise cfg.ConfigError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, n_startup_trials: int, n_evaluations: int) -> optuna.pruners.BasePruner:
    """
    Optuna's pruner ``name``, stepping over evaluations: ``median`` (after ``n_startup_trials`` trials
    and the first third of the evaluations), ``halving`` (successive halving), ``hyperband``,
    ``nop``/``none``.
    """
    p = optuna.pruners
    if name == "median":
        return p.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_evaluations // 3)
    if name == "halving":
        return p.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4, min_early_stopping_rate=0)
    if name == "hyperband":
        return p.HyperbandPruner(min_resource=1, max_resource=n_evaluations, reduction_factor=3)
    if name in ("nop", "none"):
        return p.NopPruner()
    raise cfg.ConfigError(f"unknown pruner {name!r}: choose one of {', '.join(PRUNERS)}")
