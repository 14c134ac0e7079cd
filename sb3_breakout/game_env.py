"""
One game env built as a run was trained, for playing whole games: ``evaluate`` and ``record`` use it.

``gym.make`` (with a frame cap) -> SB3 ``Monitor`` (the raw score of whole games) -> :class:`GameSeeder`
(the seed of each game) -> the run's ``env_wrapper`` (its no-op reset set to ``noop_max``) ->
``VecFrameStack`` -> ``VecTransposeImage``, as RL Zoo's ``create_test_env`` builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing
from stable_baselines3.common.atari_wrappers import NoopResetEnv
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack

from sb3_breakout.runs import Target


def set_noop_max(env: gym.Env, noop_max: int) -> gym.Env:
    """
    Set ``noop_max`` of the no-op reset in a wrapper chain (SB3's ``NoopResetEnv`` in the ``deepmind``
    profile, gymnasium's ``AtariPreprocessing`` in ``keras``). Written here because neither
    ``breakout_preprocessing`` nor RL Zoo's ``env_wrapper`` exposes it, and the chain is built by
    the run's own config.

    :raises ValueError: the chain has no no-op reset and ``noop_max`` is not the profiles' 30.
    """
    found = False
    inner: Any = env
    while isinstance(inner, gym.Wrapper):
        if isinstance(inner, (NoopResetEnv, AtariPreprocessing)):
            inner.noop_max = noop_max
            found = True
        inner = inner.env
    if not found and noop_max != 30:
        raise ValueError(f"noop_max={noop_max}: the env's wrappers have no no-op reset to set")
    return env


class GameSeeder(gym.Wrapper):
    """
    Start the next game from the seed queued with :meth:`queue_seed`.

    Placed between the Monitor and the profile's wrappers, it sees exactly the resets that restart
    the game (a life loss of the ``deepmind`` profile does not reset the game). Written here because
    an explicit ``env.reset(seed=...)`` after a game does not start the next one from that seed:
    the VecEnv has already restarted the finished game with an unseeded reset, and SB3's
    ``EpisodicLifeEnv`` answers the next reset with a no-op step (``FireResetEnv``'s FIRE steps
    after the restart cleared its ``was_real_done``), so the seed never reaches the game. Queuing
    the seed before the game ends makes that automatic restart the seeded one. A queued seed also
    wins over a seed passed to ``reset``: SB3's ``make_vec_env`` passes a random one to the first
    reset when it is given no seed.

    :param env: the Monitor-wrapped raw game.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.next_seed: int | None = None

    def queue_seed(self, seed: int | None) -> None:
        """Seed of the next game restart (None: an unseeded restart)."""
        self.next_seed = None if seed is None else int(seed)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if self.next_seed is not None:  # wins over make_vec_env's random seed for the first reset
            seed = self.next_seed
        self.next_seed = None
        return self.env.reset(seed=seed, options=options)


def _wrap(env: gym.Env, wrapper: Callable[[gym.Env], gym.Env] | None, noop_max: int) -> gym.Env:
    env = GameSeeder(env)
    return set_noop_max(wrapper(env) if wrapper is not None else env, noop_max)


def make_game_env(
    target: Target,
    max_frames: int = 108_000,
    noop_max: int = 30,
    *,
    vec_env_cls: type[VecEnv] | None = None,
    render_mode: str | None = None,
) -> VecEnv:
    """
    One env, built as the run was trained: ``gym.make`` (with the frame cap) -> SB3 ``Monitor``
    (raw score of whole games) -> :class:`GameSeeder` -> the run's ``env_wrapper`` ->
    ``VecFrameStack(frame_stack)`` -> ``VecTransposeImage`` where SB3's ``_wrap_env`` adds it.

    :param max_frames: emulator frames per game (``max_episode_steps`` of ``gym.make``), default 108,000.
    :param noop_max: the no-op reset draws 1 to ``noop_max`` no-ops (default 30).
    :param vec_env_cls: ``DummyVecEnv`` (default) or ``SubprocVecEnv`` (the game runs in a worker process).
    :param render_mode: ``"rgb_array"`` to render frames (for videos); None for none.
    """
    from rl_zoo3.utils import get_wrapper_class

    env_kwargs = {**target.env_kwargs, "max_episode_steps": int(max_frames)}
    if render_mode is not None:
        env_kwargs["render_mode"] = render_mode
    venv = make_vec_env(
        target.env_id, n_envs=1, env_kwargs=env_kwargs, vec_env_cls=vec_env_cls or DummyVecEnv,
        wrapper_class=partial(_wrap, wrapper=get_wrapper_class(target.hyperparams), noop_max=int(noop_max)),
    )
    vec_wrapper = get_wrapper_class(target.hyperparams, "vec_env_wrapper")
    if vec_wrapper is not None:
        venv = vec_wrapper(venv)
    if target.hyperparams.get("frame_stack"):
        venv = VecFrameStack(venv, int(target.hyperparams["frame_stack"]))
    return BaseAlgorithm._wrap_env(venv, verbose=0, monitor_wrapper=False)
