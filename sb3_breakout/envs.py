"""Vectorised Breakout environments, built the way RL Zoo builds them from ``hyperparams/dqn.yml``."""

from __future__ import annotations

import os
from typing import Any

import ale_py
import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack, VecTransposeImage

from sb3_breakout.wrappers import PROFILES, breakout_preprocessing

gym.register_envs(ale_py)

ENV_ID = "BreakoutNoFrameskip-v4"
#: Agent steps per game before truncation, as the notebooks' ``max_steps_per_episode``.
MAX_AGENT_STEPS = 10_000
#: Emulator frames per agent step in both profiles.
FRAME_SKIP = 4


def make_breakout_env(
    profile: str = "deepmind",
    n_envs: int = 1,
    seed: int | None = None,
    *,
    env_id: str = ENV_ID,
    max_agent_steps: int = MAX_AGENT_STEPS,
    terminal_penalty: float = -1.0,
    frame_stack: int = 4,
    monitor_dir: str | None = None,
    vec_env_cls: type[DummyVecEnv] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    backend: str = "python",
    num_threads: int = 0,
) -> VecEnv:
    """
    Breakout as an SB3 ``VecEnv`` of ``n_envs`` copies: Monitor (true game score), one notebook's
    preprocessing, the terminal penalty, ``frame_stack`` stacked frames, channel-first.

    :param profile: ``"deepmind"`` or ``"keras"``, see :func:`sb3_breakout.wrappers.breakout_preprocessing`.
    :param n_envs: number of environment copies.
    :param seed: seed of copy 0 (copy ``i`` gets ``seed + i``); None for a random one.
    :param env_id: a raw Atari id with ``frameskip=1``.
    :param max_agent_steps: a game is truncated after this many agent steps
        (``FRAME_SKIP`` emulator frames each); the limit sits under the Monitor, so the Monitor
        records the truncated game.
    :param terminal_penalty: reward of a terminal step.
    :param frame_stack: frames per observation.
    :param monitor_dir: folder for the Monitor CSVs (``0.monitor.csv``, ...); None keeps them in memory.
    :param vec_env_cls: ``DummyVecEnv`` (default) or ``SubprocVecEnv``.
    :param env_kwargs: extra keyword arguments for ``gym.make`` (``python`` backend only).
    :param backend: ``"python"`` (default): gymnasium envs and the wrappers of
        :mod:`sb3_breakout.wrappers`, one game after another; ``"ale"``: the emulator's own vector env,
        games stepped by C++ threads (:class:`sb3_breakout.vector_env.AleVecEnv`; its differences
        from the Python profiles are listed there).
    :param num_threads: C++ threads of the ``ale`` backend (0: ALE's default).
    :return: observations ``(n_envs, frame_stack, 84, 84)`` uint8.
    :raises ValueError: unknown profile, env id or backend.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    if env_id not in gym.registry:
        raise ValueError(f"unknown env id {env_id!r}: not registered with gymnasium (is ale-py installed?)")
    if backend == "ale":
        from sb3_breakout.vector_env import AleVecEnv

        if env_kwargs or vec_env_cls is not None:
            raise ValueError("env_kwargs and vec_env_cls are not allowed with backend 'ale'")
        files = None if monitor_dir is None else [os.path.join(monitor_dir, f"{i}.monitor.csv") for i in range(n_envs)]
        venv = AleVecEnv(n_envs, profile=profile, terminal_penalty=terminal_penalty, max_agent_steps=max_agent_steps,
                         seeds=None if seed is None else [seed + i for i in range(n_envs)], monitor_files=files,
                         env_id=env_id, num_threads=num_threads)
        return VecFrameStack(venv, frame_stack)
    if backend != "python":
        raise ValueError(f"unknown backend {backend!r}: choose python or ale")
    make_kwargs = {"max_episode_steps": max_agent_steps * FRAME_SKIP, **(env_kwargs or {})}
    env = make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=make_kwargs,
        monitor_dir=monitor_dir,
        wrapper_class=breakout_preprocessing,
        wrapper_kwargs={"profile": profile, "terminal_penalty": terminal_penalty},
        vec_env_cls=vec_env_cls,
    )
    env = VecFrameStack(env, frame_stack)
    return VecTransposeImage(env)
