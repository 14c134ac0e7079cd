"""
``python -m sb3_breakout.ship``: copy a trained model out of a run into RL Zoo's ``rl-trained-agents``
layout, small enough to keep in a git repository, for watching and evaluating.

    python -m sb3_breakout.ship logs/qrdqn/BreakoutNoFrameskip-v4_1 -o trained-agents
    python -m sb3_breakout.ship logs/qrdqn/BreakoutNoFrameskip-v4_1 --load-checkpoint 1000000 -o trained-agents

writes ``trained-agents/<algo>/<env>_<id>/`` (the next free id, as RL Zoo numbers runs) with

- ``<env>.zip``: the model as :func:`slim_save` writes it (~8.6 MB for QR-DQN instead of ~25 MB);
- ``<env>/config.yml`` and ``<env>/args.yml``: the run's, unchanged (how it was trained);
- the Monitor CSVs of its training up to the model's step (a checkpoint's own copies);
- ``README.md``: where it came from and what it is for. A run folder with a ``README.md`` is a shipped
  agent: ``evaluate`` and ``record`` read it and write their default outputs under ``logs/`` instead
  (:func:`sb3_breakout.runs.default_output`), so nothing shipped is overwritten.

Why not RL Zoo's or SB3's own save: a checkpoint zip holds the Q-network, the target network (a copy of
the same shape) and Adam's two moments per weight, 4x the network; SB3's ``save(exclude=...)`` cannot
drop the target network or the optimizer, because ``load`` then fails (``set_parameters`` requires both
keys). :func:`slim_save` keeps both keys but lets the target share the online network's tensors (saved
once) and gives Adam an empty state, and records ``buffer_size=1`` so that loading the zip from Python
allocates a one-transition replay, as ``rl_zoo3 enjoy`` asks for. The zip plays and evaluates with the
same actions; it does not resume training (no optimizer state, no replay).

Exit status: 0 written, 2 bad input (nothing written).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from sb3_breakout import config as cfg
from sb3_breakout import runs
from sb3_breakout.cli import OneLineArgumentParser, check_output_folder
from sb3_breakout.runs import SHIPPED_README, Target, add_target_arguments, target_from

#: Where ``ship`` writes by default, and where the repository keeps its agent (RL Zoo's ``-f`` folder).
DEFAULT_FOLDER = "trained-agents"


def target_network(model: Any) -> tuple[Any, Any]:
    """The online and target networks of a DQN-family learner (SB3 DQN: ``q_net``; QR-DQN: ``quantile_net``)."""
    policy = model.policy
    for online, target in (("q_net", "q_net_target"), ("quantile_net", "quantile_net_target")):
        if hasattr(policy, online) and hasattr(policy, target):
            return getattr(policy, online), getattr(policy, target)
    raise cfg.ConfigError(f"{type(model).__name__} has no target network this package knows: "
                          f"allowed: {', '.join(cfg.ALGORITHMS)}")


def slim_save(model: Any, path: str | Path) -> None:
    """
    Save ``model`` for playing only: the target network shares the online network's tensors (one copy
    in the zip), Adam's state is empty, and ``buffer_size`` is 1. ``model`` is changed in place (its
    target network and optimizer): save it no further for training.

    :param model: an SB3 DQN or sb3-contrib QR-DQN learner.
    :param path: the zip to write.
    """
    online, target = target_network(model)
    weights = online.state_dict(keep_vars=True)
    for name, tensor in target.state_dict(keep_vars=True).items():
        tensor.data = weights[name].data  # the online network's storage: the same values, saved once
    optimizer = model.policy.optimizer
    optimizer.state.clear()  # Adam's moments and step counts: training state, not needed to act
    model.buffer_size = 1
    model.replay_buffer = None
    model.save(path)


def next_run_dir(folder: Path, algo: str, env_id: str) -> Path:
    """``<folder>/<algo>/<env>_<id>`` with the next free id (1 for an empty folder), as RL Zoo numbers runs."""
    from rl_zoo3.utils import get_latest_run_id

    base = folder / algo
    run_id = get_latest_run_id(str(base), env_id) + 1 if base.is_dir() else 1
    return base / f"{env_id}_{run_id}"


def monitor_files(target: Target) -> list[Path]:
    """The Monitor CSVs as they were when the model was saved: a checkpoint's copies, else the run's."""
    if target.model_path.name == "model.zip" and (target.model_path.parent / "monitor").is_dir():
        return sorted((target.model_path.parent / "monitor").glob("*.monitor.csv"))
    return sorted(target.run_dir.glob("*.monitor.csv"))


def training_command(target: Target) -> str:
    """The command that trained the run, from its ``args.yml`` (algorithm, YAML profile, seed)."""
    args_file = target.run_dir / target.env_id / "args.yml"
    saved = runs.read_run_yaml(args_file) if args_file.is_file() else {}
    words = ["python -m sb3_breakout.train", f"--algo {target.algo}"]
    if saved.get("profile"):
        words.append(f"--profile {saved['profile']}")
    if saved.get("seed") is not None:
        words.append(f"--seed {saved['seed']}")
    return " ".join(words)


def readme(target: Target, steps: int, source: str) -> str:
    """The shipped folder's README.md: what the agent is, how it was trained, how to watch and check it."""
    folder = "<this folder>"
    return f"""# {target.algo.upper()} agent for {target.env_id}

Trained by sb3_breakout with `{training_command(target)}`, {steps:,} agent steps, with the
hyperparameters in `{target.env_id}/config.yml` (the YAML entry as it was when trained); shipped from
`{source}` with `python -m sb3_breakout.ship`.

- `{target.env_id}.zip`: the network only (the target network shares its weights, no optimizer state,
  `buffer_size` 1). It **plays and evaluates; it does not resume training**.
- `{target.env_id}/config.yml`, `args.yml`: how it was trained (RL Zoo's run files).
- `*.monitor.csv`: its training games up to this model (one file per parallel game).
- `evaluation/final.json`: 30 games by the package's protocol (epsilon 0.05, up to 30 no-ops,
  108,000 frames); `agent.gif`: one game. Written once, when the agent was shipped, by

      python -m sb3_breakout.evaluate {folder} -o {folder}/evaluation/final.json
      python -m sb3_breakout.record {folder} --format gif -o {folder}/agent

Watch, evaluate, record (from the repository root; outputs go to `logs/`, nothing here is overwritten):

    python -m rl_zoo3.enjoy --algo {target.algo} --env {target.env_id} -f trained-agents --gym-packages sb3_breakout
    python -m sb3_breakout.evaluate {folder}
    python -m sb3_breakout.record {folder}
"""


def ship(target: Target, out_folder: Path, device: str = "cpu") -> Path:
    """
    Write ``target``'s model and run files into a new ``<out_folder>/<algo>/<env>_<id>/``.

    :return: the new folder.
    :raises cfg.ConfigError: the target is not in a run folder, or its zip cannot be loaded.
    """
    if target.run_dir is None:
        raise cfg.ConfigError(f"{target.model_path} is not in a run folder: ship takes a run (its config.yml, "
                              "args.yml and Monitor CSVs go with the model)")
    try:
        model = cfg.learner_class(target.algo).load(target.model_path, device=device, buffer_size=1,
                                                    replay_buffer_class=None, replay_buffer_kwargs={},
                                                    optimize_memory_usage=False)
    except Exception as exc:  # a damaged or foreign zip: say which file
        reason = " ".join(str(exc).split())[:300]
        raise cfg.ConfigError(f"cannot load {target.algo} model {target.model_path}: {type(exc).__name__}: "
                              f"{reason}") from None
    check_output_folder(out_folder, "-o")
    dest = next_run_dir(out_folder, target.algo, target.env_id)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")  # this process's: another ship has its own
    try:
        (tmp / target.env_id).mkdir(parents=True)
        slim_save(model, tmp / f"{target.env_id}.zip")
        for name in ("config.yml", "args.yml"):
            source = target.run_dir / target.env_id / name
            if source.is_file():
                shutil.copy2(source, tmp / target.env_id / name)
        for csv in monitor_files(target):
            shutil.copy2(csv, tmp / csv.name)
        (tmp / SHIPPED_README).write_text(readme(target, int(model.num_timesteps), describe_source(target)))
        tmp.rename(dest)  # an id taken meanwhile by another ship: OSError (the folder is not empty)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def describe_source(target: Target) -> str:
    """The model's place in its run, without the training machine's folders: ``<run name>/<path in run>``."""
    inside = target.model_path.relative_to(target.run_dir) if target.model_path.is_relative_to(target.run_dir) \
        else Path(target.model_path.name)
    return f"{target.algo}/{target.run_dir.name}/{inside}"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m sb3_breakout.ship",
        description="Copy a run's model (final or a checkpoint) into RL Zoo's rl-trained-agents layout, slim "
        "enough for a git repository: it plays and evaluates, it does not resume.",
    )
    add_target_arguments(parser)
    parser.add_argument("-o", "--output-folder", default=DEFAULT_FOLDER,
                        help=f"trained-agents folder (default: {DEFAULT_FOLDER}); the agent goes to "
                        "<folder>/<algo>/<env>_<next id>/")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        target = target_from(args)
        dest = ship(target, Path(args.output_folder), device=args.device if args.device != "auto" else "cpu")
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, an id taken meanwhile by another ship: nothing left half-written
        print(f"error: the agent was not written into {args.output_folder}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    size = (dest / f"{target.env_id}.zip").stat().st_size
    print(f"Wrote {dest} (model {size / 1e6:.1f} MB, from {target.model_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
