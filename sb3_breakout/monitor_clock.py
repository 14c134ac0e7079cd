"""
The Monitor's clock across ``--resume``: a resumed run's Monitor rows go on from the checkpoint's time.

SB3's ``Monitor`` writes each game's ``t`` as seconds since its own ``t_start``, the moment the process
built it. A run continued with ``sb3_breakout.train --resume`` appends to the run's Monitor files under
their first header, so without this module its rows restart ``t`` from 0, and a reader must guess
where each restart belongs. Here the checkpoint records each game's clock (seconds since its
``t_start``) and the resumed run sets every new Monitor's ``t_start`` so that its clock starts there:
``t`` then counts training seconds over all the run's segments, the pauses between them left out and
the minutes between the last game and the checkpoint counted (the steps trained after the checkpoint
by a killed process are thrown away, and so is their time).

Written here because neither SB3 nor RL Zoo resumes a Monitor: RL Zoo's ``--trained-agent`` starts a
new run folder with new Monitor files.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv

if TYPE_CHECKING:
    from sb3_breakout.vector_env import AleVecEnv


def clocks(venv: VecEnv) -> list[Monitor | AleVecEnv]:
    """
    The objects that hold the Monitor clocks of ``venv``'s games: one SB3 ``Monitor`` per game of a
    ``DummyVecEnv`` (under any ``VecEnv`` wrappers), or the single :class:`~sb3_breakout.vector_env.AleVecEnv`
    that writes every game's rows. Empty when the games have no Monitor (``SubprocVecEnv``: its
    Monitors live in other processes).
    """
    while hasattr(venv, "venv"):  # VecFrameStack, VecTransposeImage, ...
        venv = venv.venv
    if hasattr(venv, "writers") and hasattr(venv, "t_start"):  # AleVecEnv: one clock for all its games
        return [venv]
    found = []
    for env in getattr(venv, "envs", []):
        while not isinstance(env, Monitor) and isinstance(env, gym.Wrapper):
            env = env.env
        if isinstance(env, Monitor):
            found.append(env)
    return found


def elapsed(venv: VecEnv) -> list[float]:
    """Seconds on each Monitor clock of ``venv`` now (what a game ending now would write as ``t``), in the
    order of :func:`clocks`."""
    now = time.time()
    return [now - clock.t_start for clock in clocks(venv)]


def resume(venv: VecEnv, seconds: list[float] | None) -> bool:
    """
    Set the Monitor clocks of a resumed run's ``venv`` to go on from ``seconds`` (:func:`elapsed` at its
    checkpoint), before any game of the resumed run ends.

    :param venv: the resumed run's vector env.
    :param seconds: each clock's seconds at the checkpoint, in the order of :func:`clocks`; None for a
        checkpoint that has none.
    :return: whether the clocks were set: not when the checkpoint has no clock (written before
        2026-12-04) or another number of them (the run's rows then restart ``t`` from 0, as
        :func:`sb3_breakout.plot.read_monitor_file` expects of older runs).
    """
    found = clocks(venv)
    if not seconds or len(seconds) != len(found):
        return False
    now = time.time()
    for clock, before in zip(found, seconds, strict=True):
        clock.t_start = now - before
    return True
