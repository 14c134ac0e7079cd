"""
Finding a run and loading its model, whatever the algorithm: the one place the package's tools
(``evaluate``, ``record``, ``plot``, ``tune``, ``scripts/learning_curve.py``) ask "which model, which
env, which settings".

A run is RL Zoo's folder ``<log>/<algo>/<env>_<id>/`` (final model ``<env>.zip``, ``<env>/config.yml``
and ``args.yml``, ``checkpoints/step_<N>/``, Monitor CSVs). The algorithm is read from ``args.yml``
(``algo``) and its class from RL Zoo's ``ALGOS`` table, so a run of SB3's DQN and one of sb3-contrib's
QR-DQN are found and loaded the same way; an algorithm is added in :data:`sb3_breakout.config.ALGORITHMS`,
not here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_breakout import checkpoint_files as ckpt
from sb3_breakout import config as cfg
from sb3_breakout import zoo_links
from sb3_breakout.atomic_write import write_text_atomically
from sb3_breakout.cli import check_device, check_num_threads, exists, is_dir, whole_number
from sb3_breakout.envs import ENV_ID


@dataclass
class Target:
    """
    What to evaluate: a model zip and how its env was built.

    :param model_path: the SB3 zip.
    :param run_dir: the RL Zoo run folder it belongs to; None for a zip outside any run.
    :param env_id: the gymnasium id the run trained on.
    :param algo: RL Zoo's algorithm name (``args.yml``'s ``algo``; ``dqn`` by default).
    :param hyperparams: the run's ``config.yml`` (or the package YAML entry of ``--profile``).
    :param env_kwargs: ``gym.make`` keyword arguments of the run (``config.yml``, then ``args.yml``).
    :param label: a short name for outputs: ``final``, ``best``, ``step_<N>`` or the zip's stem.
    :param profile: the YAML entry it trained with (``deepmind``, ``keras``, ``fast``...): ``args.yml``'s
        ``profile`` in a run folder of ``sb3_breakout.train`` (None in one of ``rl_zoo3.train``, whose
        args have none), the ``--profile`` given (``deepmind`` by default) for a zip outside any run.
    """

    model_path: Path
    run_dir: Path | None
    env_id: str
    algo: str
    hyperparams: dict[str, Any]
    env_kwargs: dict[str, Any]
    label: str
    profile: str | None = None

    @property
    def preprocessing(self) -> str | None:
        """The ``profile`` argument of the run's ``env_wrapper`` (``deepmind`` or ``keras``: the
        preprocessing, which the ``fast`` entry shares with ``deepmind``), when it has one."""
        wrappers = self.hyperparams.get("env_wrapper") or []
        for item in wrappers if isinstance(wrappers, list) else [wrappers]:
            if isinstance(item, dict):
                kwargs = next(iter(item.values())) or {}
                if "profile" in kwargs:
                    return str(kwargs["profile"])
        return None


def read_run_yaml(path: Path) -> dict[str, Any]:
    """
    A run's ``config.yml`` or ``args.yml`` as a dict.

    :raises cfg.ConfigError: unreadable, not YAML, or not a mapping (a damaged file).
    """
    # RL Zoo writes args.yml as a python OrderedDict and reads both files with the unsafe loader.
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=yaml.UnsafeLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise cfg.ConfigError(f"cannot read the run file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except yaml.YAMLError as exc:
        line = cfg.yaml_error_line(exc)
        raise cfg.ConfigError(f"the run file {path} is not valid YAML{line}: repair it or train again") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise cfg.ConfigError(f"the run file {path} must map names to values, got {type(data).__name__}: "
                              "repair it or train again")
    return dict(data)


def run_dir_of_zip(zip_path: Path) -> Path | None:
    """The run folder of a model zip: its folder, or ``<run>`` for ``<run>/checkpoints/step_N/model.zip``."""
    parent = zip_path.parent
    if parent.name.startswith(ckpt.STEP_PREFIX) and parent.parent.name == ckpt.CHECKPOINT_DIR:
        parent = parent.parent.parent
    return parent if config_dirs(parent) else None


def config_dirs(run_dir: Path) -> list[Path]:
    """Sub-folders of a run holding RL Zoo's ``config.yml`` (one: ``<run>/<env id>/``)."""
    if not is_dir(run_dir, "run folder"):
        return []
    return sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "config.yml").is_file())


def latest_run(folder: Path, algo: str | None, env_id: str) -> Path | None:
    """
    RL Zoo's "latest experiment" (``--exp-id 0``: the highest ``<env>_<id>``) of a log folder (``logs``
    or ``logs/<algo>``). With ``algo`` None, a log folder holding runs of several algorithms
    (``logs/dqn/``, ``logs/qrdqn/``) gives the latest run of the one trained most recently (the
    newest ``config.yml``).
    """
    from rl_zoo3.utils import get_latest_run_id

    found = []
    for name in [algo] if algo else cfg.ALGORITHMS:
        for base in (folder / name, folder):
            if base.is_dir():
                run_id = get_latest_run_id(str(base), env_id)
                if run_id > 0:
                    found.append(base / f"{env_id}_{run_id}")
                    break
    if not found:
        return None
    return max(found, key=lambda run: max((c.stat().st_mtime for c in run.glob("*/config.yml")), default=0.0))


#: The record of how a run's last training process ended (``train`` writes it beside the final model).
RUN_END = "run_end.json"
#: Its reasons: all ``n_timesteps`` trained; a callback stopped training (solved, a game limit); a signal.
RUN_END_REASONS = ("done", "stopped", "interrupted")


def write_run_end(run_dir: Path, reason: str, steps: int, target: int) -> None:
    """Record how training ended (``reason`` in :data:`RUN_END_REASONS`), atomically (rename)."""
    write_text_atomically(run_dir / RUN_END,
                          json.dumps({"reason": reason, "steps": int(steps), "target": int(target)}) + "\n")


def clear_run_end(run_dir: Path) -> None:
    """Training (re)starts: the run has not ended."""
    (run_dir / RUN_END).unlink(missing_ok=True)


def run_end(run_dir: Path) -> dict[str, Any] | None:
    """
    How the run's last training process ended: ``{"reason", "steps", "target"}``, or None while it
    trains, after a crash, or for a run trained before this record existed (then: ``trained_steps``).
    """
    try:
        end = json.loads((run_dir / RUN_END).read_text())
        return end if isinstance(end, dict) and end.get("reason") in RUN_END_REASONS else None
    except (OSError, ValueError):
        return None


def trained_steps(run_dir: Path) -> tuple[int | None, int | None]:
    """
    How far a run has trained, from its files alone: (agent steps of its final model ``<env>.zip``, the
    steps it trains to). For runs without a :data:`RUN_END` record (trained by an older version).

    The first is None while no final model exists; the second is None when the run files do not say
    (``args.yml``'s ``n_timesteps`` when given, else ``config.yml``'s; a resume with ``-n`` is not
    recorded there). Only the zip's small ``data`` member is read (SB3's JSON, ``num_timesteps``).
    """
    dirs = config_dirs(run_dir)
    if not dirs:
        return None, None
    config_dir = dirs[0]
    try:
        saved = read_run_yaml(config_dir / "args.yml") if (config_dir / "args.yml").is_file() else {}
        given = int(float(saved.get("n_timesteps") or -1))
        target = given if given > 0 else int(float(read_run_yaml(config_dir / "config.yml")["n_timesteps"]))
    except (cfg.ConfigError, KeyError, TypeError, ValueError):
        target = None
    try:
        with zipfile.ZipFile(run_dir / f"{config_dir.name}.zip") as archive:
            steps = int(json.loads(archive.read("data"))["num_timesteps"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # not written yet, or being written
        steps = None
    return steps, target


def resolve_target(
    path: str,
    *,
    load_best: bool = False,
    load_checkpoint: int | None = None,
    load_last_checkpoint: bool = False,
    env_id: str = ENV_ID,
    algo: str | None = None,
    profile: str | None = None,
) -> Target:
    """
    Find the model zip and the run's settings from what the user gave, without loading anything big.

    ``path`` is a run folder (RL Zoo layout, ``<log>/<algo>/<env>_<id>``), a log folder (its latest
    run, as RL Zoo's ``--exp-id 0``), or a model zip. In a run folder the model is
    ``<env>.zip`` (the final model), ``best_model.zip`` (``load_best``, RL Zoo's ``EvalCallback``),
    ``checkpoints/step_<N>/model.zip`` (``load_checkpoint=N``; RL Zoo's ``rl_model_<N>_steps.zip``
    is accepted too) or the newest checkpoint (``load_last_checkpoint``). A zip outside any run
    folder is evaluated with the package YAML entry of ``profile``.

    ``algo`` is needed only where the run cannot say it: a zip outside any run (``dqn`` when None), or
    a log folder with runs of several algorithms (None: the most recent run of any).

    :raises cfg.ConfigError: one line naming the bad value and what is allowed.
    """
    if not str(path).strip():
        raise cfg.ConfigError(f"{path!r} is not allowed: give a run folder, a log folder or a model .zip")
    given = Path(path)
    if not exists(given, "run"):
        raise cfg.ConfigError(f"{path!r} does not exist: give a run folder, a log folder or a model .zip")
    flags = (("--load-best", load_best), ("--load-checkpoint", load_checkpoint is not None),
             ("--load-last-checkpoint", load_last_checkpoint))
    picks = [name for name, on in flags if on]
    if len(picks) > 1:
        raise cfg.ConfigError(f"{' and '.join(picks)} exclude each other: choose one")
    if given.is_file():
        if given.suffix != ".zip":
            raise cfg.ConfigError(f"{path!r} is not a model .zip nor a run folder")
        if picks:
            raise cfg.ConfigError(f"{picks[0]} needs a run folder, not the model file {path!r}")
        model_path, run_dir = given, run_dir_of_zip(given)
        label = given.parent.name if given.name == "model.zip" else given.stem
        step = zoo_links.zoo_name_step(given)
        if run_dir is not None and step is not None and (ckpt.checkpoint_dir(run_dir, step) / "model.zip").is_file():
            # RL Zoo's name of a checkpoint: the checkpoint itself (its label, its Monitor copies)
            model_path, label = ckpt.checkpoint_dir(run_dir, step) / "model.zip", f"{ckpt.STEP_PREFIX}{step}"
    else:
        run_dir = given
        if not config_dirs(run_dir) and not (run_dir / f"{env_id}.zip").is_file():
            latest = latest_run(given, algo, env_id)
            if latest is None:
                raise cfg.ConfigError(f"{path!r} is not a run folder (no <env>/config.yml) nor a log folder "
                                      f"with {algo or '<algo>'}/{env_id}_<id> runs")
            print(f"Using the latest run {latest}")
            run_dir = latest
        dirs = config_dirs(run_dir)
        if len(dirs) == 1:
            env_id = dirs[0].name
        if load_best:
            model_path, label = run_dir / "best_model.zip", "best"
            if not model_path.is_file():
                raise cfg.ConfigError(f"--load-best: {model_path} does not exist (it is written by RL Zoo's "
                                      "EvalCallback: train with --eval-freq > 0)")
        elif load_checkpoint is not None or load_last_checkpoint:
            steps = [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(run_dir) if (p / "model.zip").is_file()]
            if load_last_checkpoint:
                if not steps:
                    raise cfg.ConfigError(
                        f"--load-last-checkpoint: no checkpoint in {ckpt.checkpoint_root(run_dir)}")
                # the newest whole model, as RL Zoo's names give it (newest first: one read when it is whole)
                load_checkpoint = next((step for step in reversed(steps)
                                        if ckpt.model_is_whole(ckpt.checkpoint_dir(run_dir, step))), None)
                if load_checkpoint is None:
                    raise cfg.ConfigError(f"--load-last-checkpoint: no checkpoint in {ckpt.checkpoint_root(run_dir)} "
                                          f"has a whole model (damaged: steps {', '.join(map(str, steps))})")
                if load_checkpoint != steps[-1]:
                    print(f"--load-last-checkpoint: step_{steps[-1]}'s model is damaged; "
                          f"using step_{load_checkpoint}", file=sys.stderr)
            model_path = ckpt.checkpoint_dir(run_dir, load_checkpoint) / "model.zip"
            zoo_path = run_dir / f"rl_model_{load_checkpoint}_steps.zip"
            if not model_path.is_file() and zoo_path.is_file():
                model_path = zoo_path
            if not model_path.is_file():
                available = ", ".join(map(str, steps)) or "none"
                raise cfg.ConfigError(f"--load-checkpoint {load_checkpoint}: no checkpoint "
                                      f"step_{load_checkpoint} in {ckpt.checkpoint_root(run_dir)}; "
                                      f"available steps: {available}")
            label = f"step_{load_checkpoint}"
        else:
            model_path, label = run_dir / f"{env_id}.zip", "final"
            if not model_path.is_file():
                raise cfg.ConfigError(f"no model zip {model_path} in run folder {str(run_dir)!r} (training "
                                      "not finished? use --load-checkpoint N or --load-last-checkpoint)")
    if run_dir is not None and config_dirs(run_dir):
        config_dir = config_dirs(run_dir)[0]
        env_id = config_dir.name
        hyperparams = read_run_yaml(config_dir / "config.yml")
        args_file = config_dir / "args.yml"
        saved_args = read_run_yaml(args_file) if args_file.is_file() else {}
        algo = str(saved_args.get("algo") or algo or "dqn")
        for file, saved in ((config_dir / "config.yml", hyperparams), (args_file, saved_args)):
            try:
                cfg.check_mappings(saved)
            except cfg.ConfigError as exc:
                raise cfg.ConfigError(f"the run file {file}: {exc}; repair it or train again") from None
        env_kwargs = {**(hyperparams.get("env_kwargs") or {}), **(saved_args.get("env_kwargs") or {})}
        # sb3_breakout.train writes profile (None: the default entry); rl_zoo3.train has no such argument
        profile = str(saved_args.get("profile") or cfg.DEFAULT_PROFILE) if "profile" in saved_args else None
    else:
        run_dir = None
        algo = algo or "dqn"
        hyperparams = cfg.load_entry(cfg.default_config(algo), env_id, profile)
        env_kwargs = dict(hyperparams.get("env_kwargs") or {})
        profile = profile or cfg.DEFAULT_PROFILE
    if env_id not in gym.registry:
        raise cfg.ConfigError(f"unknown env id {env_id!r}: not registered with gymnasium")
    return Target(model_path, run_dir, env_id, algo, hyperparams, env_kwargs, label, profile)


def load_model(target: Target, device: str = "auto") -> BaseAlgorithm:
    """
    Load the model for acting only, as RL Zoo's ``enjoy`` does: a replay buffer of one transition
    (no memory for 100,000 frames) and no learning-rate schedule to unpickle.

    :raises cfg.ConfigError: the zip cannot be loaded.
    """
    cfg.check_algo(target.algo)
    custom_objects = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0,
                      "exploration_schedule": lambda _: 0.0}
    try:
        return cfg.learner_class(target.algo).load(
            target.model_path, device=device, custom_objects=custom_objects,
            buffer_size=1, replay_buffer_class=None, replay_buffer_kwargs={}, optimize_memory_usage=False,
        )
    except Exception as exc:  # a damaged or foreign zip: say which file
        reason = " ".join(str(exc).split())[:300]
        raise cfg.ConfigError(f"cannot load {target.algo} model {target.model_path} (damaged, or not a "
                              f"{target.algo} model): {type(exc).__name__}: {reason}") from None


# ----------------------------------------------------------------------------------------- CLI
def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that pick a model, shared by :mod:`sb3_breakout.evaluate` and :mod:`sb3_breakout.record`."""
    parser.add_argument("path", help="run folder (logs/dqn/BreakoutNoFrameskip-v4_1), log folder (its latest "
                        "run) or model .zip")
    parser.add_argument("--load-best", action="store_true",
                        help="the run's best_model.zip (RL Zoo's EvalCallback) instead of the final model")
    parser.add_argument("--load-checkpoint", type=whole_number, metavar="N", default=None,
                        help="the checkpoint <run>/checkpoints/step_N/model.zip instead of the final model")
    parser.add_argument("--load-last-checkpoint", action="store_true", help="the newest checkpoint")
    parser.add_argument("--env", default=None,
                        help=f"env id when the run folder does not say (default: {ENV_ID}); a run folder's "
                        "own must match")
    parser.add_argument("--algo", default=None, choices=cfg.ALGORITHMS,
                        help="algorithm when the run folder does not say: of a model zip outside any run "
                        "(default: dqn), of the latest run in a log folder (default: the most recent of any)")
    parser.add_argument("--profile", default=None,
                        help="YAML profile for a model zip outside any run folder (default: deepmind); a run "
                        "folder's own must match")
    parser.add_argument("--device", default="auto", help="PyTorch device (default: auto)")
    parser.add_argument("--num-threads", type=int, default=1,
                        help="torch CPU threads (default: 1: a forward pass on one observation gains nothing "
                        "from more, and extra threads slow it down many times on a busy CPU; <= 0: torch's)")


def target_from(args: argparse.Namespace) -> Target:
    """The model the flags name (after ``--num-threads`` is applied to torch)."""
    check_num_threads(args.num_threads)
    check_device(args.device)
    if args.load_checkpoint is not None and args.load_checkpoint < 0:
        raise cfg.ConfigError(
            f"--load-checkpoint={args.load_checkpoint} is not allowed: must be a step count >= 0")
    target = resolve_target(args.path, load_best=args.load_best, load_checkpoint=args.load_checkpoint,
                            load_last_checkpoint=args.load_last_checkpoint, env_id=args.env or ENV_ID,
                            algo=args.algo, profile=args.profile)
    if args.env is not None and target.env_id != args.env:
        raise cfg.ConfigError(f"--env {args.env!r} does not match the run's env {target.env_id!r}: leave --env "
                              "out for a run folder")
    # the run's entry (args.yml); a run of rl_zoo3.train names none: its preprocessing then
    run_profile = target.profile if target.profile is not None else target.preprocessing
    if args.profile is not None and target.run_dir is not None and (run_profile or "") != args.profile:
        raise cfg.ConfigError(f"--profile {args.profile!r} does not match the run's profile {run_profile!r}: "
                              "--profile is for a model zip outside any run folder")
    if args.num_threads > 0:
        th.set_num_threads(args.num_threads)
    return target


#: A run folder holding this file is a shipped agent (``python -m sb3_breakout.ship``, ``trained-agents/``):
#: the tools read it and never write into it.
SHIPPED_README = "README.md"
#: Where the tools' default outputs for a shipped agent go (relative to the working folder).
SHIPPED_OUTPUTS = Path("logs") / "trained-agents"


def is_shipped(run_dir: Path | None) -> bool:
    """Whether ``run_dir`` is a shipped agent's folder (it holds :data:`SHIPPED_README`)."""
    return run_dir is not None and (run_dir / SHIPPED_README).is_file()


def default_output(target: Target, folder: str, suffix: str) -> Path:
    """
    ``<run>/<folder>/<label><suffix>``, or ``<zip stem>.<folder><suffix>`` beside a zip outside a run. For
    a shipped agent (:func:`is_shipped`) ``logs/trained-agents/<algo>/<run name>/<folder>/<label><suffix>``
    instead, so that its evaluation, GIF and files are never overwritten.
    """
    if is_shipped(target.run_dir):
        output = SHIPPED_OUTPUTS / target.algo / target.run_dir.resolve().name / folder / f"{target.label}{suffix}"
        if Path(os.path.abspath(output)).is_relative_to(target.run_dir.resolve()):
            raise cfg.ConfigError(f"{target.run_dir} is a shipped agent and the default output {output} would be "
                                  "inside it: run the tool from outside the folder, or give -o")
        return output
    if target.run_dir is not None:
        return target.run_dir / folder / f"{target.label}{suffix}"
    return target.model_path.with_name(f"{target.model_path.stem}.{folder}{suffix}")
