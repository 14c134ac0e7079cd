"""Gymnasium wrappers: the notebooks' terminal penalty and the two preprocessing profiles."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing
from stable_baselines3.common.atari_wrappers import AtariWrapper

#: The two preprocessing profiles, one per seed notebook.
PROFILES = ("deepmind", "keras")


class TerminalPenaltyWrapper(gym.Wrapper):
    """
    Replace the reward of a terminal step by ``penalty`` (-1.0 by default).

    Both notebooks set the Q-target of the final transition to -1:
    ``target = r + gamma * max Q'`` if not done, else ``-1``. SB3's DQN computes
    ``r + gamma * (1 - terminated) * max Q'``, so giving reward -1 on the terminal step yields exactly
    the same target without touching the learner.

    Only ``terminated`` steps are penalised. A step that is merely ``truncated`` (time limit) keeps
    its reward and stays a bootstrapped transition (SB3's timeout handling). The notebooks use the
    old ``done`` flag and penalise truncation too: that is a bug (the episode did not fail, it was
    cut), and this wrapper does not reproduce it.

    With the ``deepmind`` profile (life loss ends the learning episode) this applies on every life
    loss. Put it outermost, after reward clipping, so that the penalty is exactly ``penalty``.

    :param env: the environment to wrap.
    :param penalty: the reward of a terminal step.
    """

    def __init__(self, env: gym.Env, penalty: float = -1.0) -> None:
        super().__init__(env)
        self.penalty = float(penalty)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated:
            reward = self.penalty
        return obs, reward, terminated, truncated, info


def breakout_preprocessing(env: gym.Env, profile: str = "deepmind", terminal_penalty: float = -1.0) -> gym.Env:
    """
    Wrap a raw ``*NoFrameskip-v4`` env with one notebook's preprocessing, then the terminal penalty.

    - ``"deepmind"`` (PyTorch notebook, ``baselines.wrap_deepmind``): SB3's ``AtariWrapper`` --
      up to 30 no-ops on reset, frame skip 4 with max-pooling, 84x84 grey, FIRE on reset, a life
      loss ends the learning episode, rewards clipped to {-1, 0, 1}.
    - ``"keras"`` (Keras notebook): gymnasium's ``AtariPreprocessing`` defaults -- 30 no-ops,
      frame skip 4, 84x84 grey, an episode is a whole game, rewards unclipped. A channel axis is
      kept (84, 84, 1) so that SB3's ``VecFrameStack`` stacks frames on it.

    Frame stacking (4) is done by SB3's ``VecFrameStack`` (``frame_stack: 4`` in the YAML). The
    Monitor that records the true game score sits under this chain (RL Zoo and ``make_vec_env``
    put it there), so it always sees whole games and raw rewards.

    Usable as an RL Zoo ``env_wrapper``: ``sb3_breakout.wrappers.breakout_preprocessing``.

    :param env: a raw Atari env with ``frameskip=1``.
    :param profile: ``"deepmind"`` or ``"keras"``.
    :param terminal_penalty: reward of a terminal step, see :class:`TerminalPenaltyWrapper`.
    :raises ValueError: unknown profile.
    """
    if profile == "deepmind":
        env = AtariWrapper(env)
    elif profile == "keras":
        env = AtariPreprocessing(env, grayscale_newaxis=True)
    else:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    return TerminalPenaltyWrapper(env, penalty=terminal_penalty)
