"""
Preflight: what ``train`` (and ``tune``) refuse before anything is written.

Each check raises :class:`sb3_breakout.config.ConfigError` with one line that names the bad value and
what is allowed; the CLIs turn it into exit status 2. Nothing here creates a file or a folder: the env
is built once without a Monitor, the RAM is compared with the replay buffer the learner would allocate,
the log folder's nearest existing parent is tested for write access. Kept out of :mod:`sb3_breakout.train`
so that the CLI module holds the run's flow and this one the rules about its input.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import psutil
from rl_zoo3.utils import get_wrapper_class

from sb3_breakout import cli, flags  # cli: check_num_threads
from sb3_breakout import config as cfg


def check_env(env_id: str, entry: dict[str, Any]) -> tuple[int, ...]:
    """Build one env as the entry says (no Monitor file) and return its stacked observation shape."""
    if env_id not in gym.registry:
        raise cfg.ConfigError(f"unknown env id {env_id!r}: not registered with gymnasium")
    try:
        env = gym.make(env_id, **entry.get("env_kwargs", {}))
    except (FileNotFoundError, OSError) as exc:
        raise cfg.ConfigError(f"cannot load the Atari ROM of {env_id!r} ({exc}); ale-py ships the ROMs: "
                              "reinstall ale-py or unset ALE_ROMS_DIR") from None
    except Exception as exc:  # TypeError (unknown keyword), ValueError, gymnasium.error.Error (bad value)
        reason = " ".join(str(exc).split())
        raise cfg.ConfigError(f"env_kwargs {entry.get('env_kwargs')!r} are not accepted by {env_id!r}: "
                              f"{type(exc).__name__}: {reason}") from None
    wrapper = get_wrapper_class(entry)
    if wrapper is not None:
        env = wrapper(env)
    shape = env.observation_space.shape or ()
    env.close()
    return (*shape, entry.get("frame_stack", 1))


def replay_buffer_nbytes(entry: dict[str, Any], obs_shape: tuple[int, ...]) -> tuple[int, str]:
    """Bytes the replay buffer of ``entry`` will take, and the buffer class's name."""
    import rl_zoo3.exp_manager

    n_envs = int(entry.get("n_envs", 1))
    n = max(int(entry.get("buffer_size", 1_000_000)) // n_envs, 1) * n_envs  # SB3 splits it among the games
    buffer_class = entry.get("replay_buffer_class")
    if isinstance(buffer_class, str):
        buffer_class = eval(buffer_class, vars(rl_zoo3.exp_manager))
    if buffer_class is not None and hasattr(buffer_class, "estimate_nbytes"):
        space = gym.spaces.Box(0, 255, (obs_shape[-1], *obs_shape[:2]), np.uint8)
        return int(buffer_class.estimate_nbytes(int(entry.get("buffer_size", 1_000_000)), space, n_envs)), \
            buffer_class.__name__
    obs_bytes = int(np.prod(obs_shape))
    copies = 1 if entry.get("optimize_memory_usage") else 2
    return n * (copies * obs_bytes + 8 + 3 * 4), "ReplayBuffer"


def check_memory(entry: dict[str, Any], obs_shape: tuple[int, ...]) -> None:
    needed, name = replay_buffer_nbytes(entry, obs_shape)
    available = psutil.virtual_memory().available
    if needed > available:
        raise cfg.ConfigError(
            f"replay buffer of {entry.get('buffer_size')} transitions ({name}) needs {needed / 1e9:.1f} GB but "
            f"{available / 1e9:.1f} GB of RAM is available: lower buffer_size or use replay_buffer_class "
            "sb3_breakout.buffers.FrameStackReplayBuffer (~7 KB per transition)"
        )


def check_writable(folder: str, what: str = "log folder") -> None:
    """
    ``folder`` exists as a writable folder or can be created (its nearest existing parent is one).
    Writes nothing: a folder that passes and still cannot be created (``/proc/x`` for root) is
    refused when the run creates it (:func:`sb3_breakout.runlock.make_dirs`).
    """
    path = Path(folder).resolve()
    existing = path
    try:
        while not existing.exists():
            existing = existing.parent
    except OSError as exc:  # a name too long (ENAMETOOLONG), a folder this user may not enter (EACCES)
        raise cfg.ConfigError(f"{what} {folder!r} is not allowed: {exc.strerror or exc}") from None
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise cfg.ConfigError(f"{what} {folder!r} cannot be written ({existing} is not a writable folder)")


#: the largest seed: SB3 seeds numpy's legacy RNG, which takes 0 .. 2**32 - 1
MAX_SEED = 2**32 - 1


def check_args(args: argparse.Namespace) -> None:
    """The flags' own values (not the YAML's); a ConfigError names the flag, the value and what is allowed."""
    cfg.check_algo(args.algo)
    for flag, value, what in (("--resume", args.resume, "a run folder"),
                              ("--conf-file", args.conf_file, "a YAML file")):
        if value is not None and not str(value).strip():
            raise cfg.ConfigError(f"{flag} {value!r} is not allowed: give {what}")
    if args.keep_checkpoints < 1:
        raise cfg.ConfigError(f"--keep-checkpoints={args.keep_checkpoints} must be >= 1")
    if args.n_timesteps < -1 or args.n_timesteps == 0:
        raise cfg.ConfigError(f"--n-timesteps={args.n_timesteps} must be >= 1 (leave it out for the YAML's)")
    if args.seed > MAX_SEED:
        raise cfg.ConfigError(f"--seed={args.seed} is not allowed: 0 to {MAX_SEED}, or negative for a random seed")
    for flag, value, low in (("--eval-episodes", args.eval_episodes, 1), ("--log-interval", args.log_interval, 1),
                             ("--verbose", args.verbose, 0)):
        if value < low:
            raise cfg.ConfigError(f"{flag}={value} must be >= {low}")
    if args.verbose > 2:
        raise cfg.ConfigError(f"--verbose={args.verbose} is not allowed: 0, 1 or 2")
    args.num_threads = parse_threads(args.num_threads)
    flags.check_device(args.device)


def parse_threads(value: str | int) -> str | int:
    """``--num-threads``: ``"auto"``, an integer >= 1, or -1 (torch's default)."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if threads < 1 and threads != -1:
        raise cfg.ConfigError(f"--num-threads={value!r} is not allowed: auto, an integer >= 1, or -1 (torch's default)")
    cli.check_num_threads(threads)
    return threads
