"""
``python -m sb3_breakout.train``: train DQN on Breakout from ``hyperparams/dqn.yml``.

Data flow: this CLI reads one YAML entry (:mod:`sb3_breakout.config`), RL Zoo's ``ExperimentManager``
turns it into objects (env: :mod:`sb3_breakout.envs` / :mod:`sb3_breakout.wrappers`; learner: SB3's
``DQN`` with :class:`sb3_breakout.torch_layers.NatureCNN`; callbacks: :mod:`sb3_breakout.callbacks`),
and writes the RL Zoo run layout ``<log>/<algo>/<env>_<id>/`` (model zip, Monitor CSV, and
``<env>/config.yml``, ``args.yml``), which ``python -m rl_zoo3.enjoy`` reads as it is.

Flags follow ``rl_zoo3.train`` where they overlap.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import torch as th
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.utils import ALGOS, StoreDict
from stable_baselines3.common.utils import set_random_seed

from sb3_breakout import config as cfg
from sb3_breakout.envs import ENV_ID


class BreakoutExperimentManager(ExperimentManager):
    """RL Zoo's ``ExperimentManager`` reading the entry of a *profile* instead of the bare env id."""

    def __init__(self, *args: Any, profile: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profile = profile

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        hyperparams = cfg.load_entry(self.config, self.env_name.gym_id, self.profile)
        hyperparams.update(self.custom_hyperparams or {})
        if self.env_kwargs:  # --env-kwargs overrides the YAML
            hyperparams["env_kwargs"] = {**hyperparams.get("env_kwargs", {}), **self.env_kwargs}
        saved_hyperparams = dict(sorted(hyperparams.items()))
        return hyperparams, saved_hyperparams


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_breakout.train",
        description="Train DQN on Atari Breakout with the notebooks' recipe (RL Zoo run layout).",
    )
    parser.add_argument("--algo", default="dqn", choices=sorted(ALGOS), help="RL algorithm (default: dqn)")
    parser.add_argument("--env", default=ENV_ID, help=f"environment id (default: {ENV_ID})")
    parser.add_argument(
        "--profile",
        default=None,
        help="YAML entry to train: 'deepmind' (the entry named by the env id, default), 'keras', "
        "or any NAME with an entry '<env>-NAME'",
    )
    parser.add_argument("-conf", "--conf-file", default=None, help="hyperparameter YAML (default: hyperparams/<algo>.yml)")
    parser.add_argument("-n", "--n-timesteps", type=int, default=-1, help="override the number of agent steps")
    parser.add_argument(
        "-params", "--hyperparams", type=str, nargs="+", action=StoreDict, default=None,
        help="override hyperparameters, e.g. -params buffer_size:1000 learning_starts:32",
    )
    parser.add_argument("--env-kwargs", type=str, nargs="+", action=StoreDict, default=None,
                        help="keyword arguments for gym.make, e.g. --env-kwargs max_episode_steps:4000")
    parser.add_argument("--seed", type=int, default=-1, help="random seed (default: -1, a random one)")
    parser.add_argument("-f", "--log-folder", default="logs", help="log folder (default: logs)")
    parser.add_argument("-tb", "--tensorboard-log", default="", help="TensorBoard log folder (default: none)")
    parser.add_argument("--device", default="auto", help="PyTorch device: auto (GPU when torch sees one), cpu, cuda")
    parser.add_argument("--num-threads", type=int, default=-1, help="torch CPU threads (-1: torch's default)")
    parser.add_argument(
        "-P", "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar (default: on when stdout is a terminal)",
    )
    parser.add_argument("--eval-freq", type=int, default=-1,
                        help="evaluate every N steps with RL Zoo's EvalCallback (default: -1, never)")
    parser.add_argument("--eval-episodes", type=int, default=5, help="games per evaluation (default: 5)")
    parser.add_argument("--log-interval", type=int, default=100,
                        help="SB3 log dump every N learning episodes (default: 100)")
    parser.add_argument("--verbose", type=int, default=0, help="SB3 verbosity (0: only the running-reward line)")
    parser.add_argument("-uuid", "--uuid", action="store_true", help="append a unique id to the run folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.progress is None:
        args.progress = sys.stdout.isatty()
    if args.seed < 0:
        args.seed = int(np.random.randint(2**32 - 1, dtype="int64"))
    if args.num_threads > 0:
        th.set_num_threads(args.num_threads)
    set_random_seed(args.seed)
    conf_file = args.conf_file or str(cfg.default_config(args.algo))

    try:
        cfg.load_entry(conf_file, args.env, args.profile)  # fail fast, before any folder is made
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    exp_manager = BreakoutExperimentManager(
        args,
        args.algo,
        args.env,
        args.log_folder,
        tensorboard_log=args.tensorboard_log,
        n_timesteps=args.n_timesteps,
        eval_freq=args.eval_freq,
        n_eval_episodes=args.eval_episodes,
        hyperparams=args.hyperparams,
        env_kwargs=args.env_kwargs,
        uuid_str=f"_{__import__('uuid').uuid4()}" if args.uuid else "",
        seed=args.seed,
        log_interval=args.log_interval,
        verbose=args.verbose,
        device=args.device,
        config=conf_file,
        show_progress=args.progress,
        profile=args.profile,
    )
    print(f"Training {args.algo} on {args.env} (profile {args.profile or cfg.DEFAULT_PROFILE}), seed {args.seed}")
    model, _ = exp_manager.setup_experiment()
    exp_manager.learn(model)
    exp_manager.save_trained_model(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
