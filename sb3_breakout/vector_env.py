"""
The emulator's own vector env (``ale_py.vector_env.AtariVectorEnv``) as an SB3 ``VecEnv`` backend.

``AtariVectorEnv`` steps all games in C++ threads and does the DeepMind preprocessing there (frame skip
4 with max-pooling of the last two frames, grey, 84x84 ``cv::resize`` with ``INTER_AREA``, no-op
starts, FIRE on reset): no Python wrapper runs per game and step. :class:`AleVecEnv` adds what the
learner and this package's tools rely on, in numpy over all games at once:

- the Monitor: true game scores (raw, unclipped rewards of whole games, all lives) written to
  ``<monitor_dir>/<i>.monitor.csv`` in SB3/RL Zoo's layout, and ``info["episode"]``, so ``plot``,
  ``evaluate`` and RL Zoo read the run unchanged (``l`` is emulator frames, as the Python Monitor's);
- ``deepmind`` profile: a lost life ends the learning episode (the game goes on), rewards clipped to
  their sign; ``keras`` profile: whole games, raw rewards;
- the terminal penalty (reward ``terminal_penalty`` on a terminal step, as
  :class:`sb3_breakout.wrappers.TerminalPenaltyWrapper`);
- the cap of ``max_agent_steps`` agent steps per game (a truncation: ``TimeLimit.truncated``);
- ``terminal_observation`` in the infos at every end, for SB3's timeout handling and ``VecFrameStack``.

It yields single frames ``(n_envs, 1, 84, 84)``; frames are stacked by SB3's ``VecFrameStack`` (the
YAML's ``frame_stack``), which restarts the stack at every end of a learning episode exactly as in the
Python chain. Use it from a YAML entry (RL Zoo's ``vec_env_wrapper`` replaces the vector env RL Zoo
built by this one, with the same number of games, seeds and Monitor files)::

    vec_env_wrapper:
      - sb3_breakout.vector_env.ale_vector_backend:
          num_threads: 0        # C++ threads stepping the games (0: ALE's default)

or directly: ``make_breakout_env(..., backend="ale")``.

How it differs from the Python ``deepmind`` profile (measured in ``tests/test_vector_env.py``):

- frames: for the same emulator state and actions, the 84x84 frames are equal, pixel for pixel (ALE's
  grey palette and OpenCV's RGB->grey of the colour palette agree on Breakout's colours; both resize
  with ``INTER_AREA``), and so are the rewards, the lives and the steps where a life is lost or the game
  ends (a whole random game compared step by step);
- resets: ALE presses FIRE for one frame then waits 0..29 no-op frames; the Python profile waits 1..30
  no-op frames then presses FIRE and RIGHT for one agent step each (``FireResetEnv``);
- after a lost life the Python profile presses FIRE for the agent (hidden steps); here the game goes
  on and the agent launches the ball itself, as in the ``keras`` profile.
- the cap of ``max_agent_steps`` counts emulator frames from the end of ALE's reset (its no-ops and FIRE
  are not counted); the Python ``TimeLimit`` counts the no-op frames too (at most 30 frames apart).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor, ResultsWriter
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sb3_breakout.wrappers import PROFILES, TerminalPenaltyWrapper

FRAME_SKIP = 4


def _game(env_id: str) -> str:
    """ALE's ROM name (``"breakout"``) of a registered ``*NoFrameskip-v4`` id."""
    spec = gym.spec(env_id)
    game = spec.kwargs.get("game")
    if not game or spec.kwargs.get("frameskip", 1) != 1 or spec.kwargs.get("repeat_action_probability", 0.0):
        raise ValueError(f"env id {env_id!r} is not allowed for the ale backend: a NoFrameskip-v4 Atari id "
                         "(frameskip 1, no sticky actions)")
    return game


class AleVecEnv(VecEnv):
    """
    ``n_envs`` games of ``AtariVectorEnv`` behind SB3's ``VecEnv`` interface (see the module docstring).

    :param n_envs: games stepped together.
    :param profile: ``"deepmind"`` (a lost life ends the learning episode, rewards clipped) or
        ``"keras"`` (whole games, raw rewards).
    :param terminal_penalty: reward of a terminal step (-1.0).
    :param max_agent_steps: agent steps per game before truncation (10,000 = 40,000 emulator frames).
    :param seeds: one seed per game for the first reset (None: random).
    :param monitor_files: one ``*.monitor.csv`` path per game, or None for no files (``info["episode"]``
        is still given).
    :param override_existing: write new Monitor files with their header (True) or append rows (False).
    :param env_id: a registered ``*NoFrameskip-v4`` id (``BreakoutNoFrameskip-v4``).
    :param noop_max: at most this many no-op frames at a reset (30).
    :param num_threads: C++ threads stepping the games (0: ALE's default, the hardware threads).
    :param t_start: Monitor start time (``time.time()``), for appending to files another Monitor began.
    :raises ValueError: unknown profile, a bad env id or a wrong number of seeds or files.
    """

    def __init__(
        self,
        n_envs: int,
        profile: str = "deepmind",
        terminal_penalty: float = -1.0,
        max_agent_steps: int = 10_000,
        seeds: Sequence[int | None] | None = None,
        monitor_files: Sequence[str] | None = None,
        override_existing: bool = True,
        env_id: str = "BreakoutNoFrameskip-v4",
        noop_max: int = 30,
        num_threads: int = 0,
        t_start: float | None = None,
    ) -> None:
        from ale_py.vector_env import AtariVectorEnv

        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
        if n_envs < 1 or max_agent_steps < 1 or noop_max < 0 or num_threads < 0:
            raise ValueError(f"n_envs={n_envs}, max_agent_steps={max_agent_steps}, noop_max={noop_max}, "
                             f"num_threads={num_threads}: allowed n_envs, max_agent_steps >= 1, the others >= 0")
        for name, values in (("seeds", seeds), ("monitor_files", monitor_files)):
            if values is not None and len(values) != n_envs:
                raise ValueError(f"{name} has {len(values)} entries; allowed: one per game ({n_envs})")
        self.profile, self.penalty, self.env_id = profile, float(terminal_penalty), env_id
        self.max_agent_steps = max_agent_steps
        self.ale = AtariVectorEnv(
            _game(env_id), n_envs, stack_num=1, frameskip=FRAME_SKIP, maxpool=True, img_height=84, img_width=84,
            grayscale=True, noop_max=noop_max, use_fire_reset=profile == "deepmind", episodic_life=False,
            life_loss_info=profile == "deepmind", reward_clipping=False,
            max_num_frames_per_episode=max_agent_steps * FRAME_SKIP, repeat_action_probability=0.0,
            autoreset_mode="SameStep", num_threads=num_threads,
        )
        self.render_mode = None
        super().__init__(n_envs, spaces.Box(0, 255, (1, 84, 84), np.uint8), self.ale.single_action_space)
        if seeds is not None:
            self._seeds = list(seeds)
        self.t_start = time.time() if t_start is None else t_start
        self.writers = [ResultsWriter(f, header={"t_start": self.t_start, "env_id": env_id},
                                      override_existing=override_existing) for f in monitor_files or []]
        self.scores = np.zeros(n_envs, np.float64)
        self.frames = np.zeros(n_envs, np.int64)  # episode_frame_number after the last step
        self._actions: np.ndarray | None = None

    # ---------------------------------------------------------------------------------- VecEnv
    def reset(self) -> np.ndarray:
        seeds = self._seeds if self._seeds and all(s is not None for s in self._seeds) else None
        obs, info = self.ale.reset(seed=None if seeds is None else np.asarray(seeds, dtype=np.int64))
        self._reset_seeds()
        self._reset_options()
        self.scores[:] = 0.0
        self.frames[:] = info["episode_frame_number"]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, raw, terminated, truncated, info = self.ale.step(self._actions)
        raw = raw.astype(np.float64)
        frames = info["episode_frame_number"].astype(np.int64)
        ended = terminated | truncated
        # a game ended (and ALE reset it) where the frame count restarted; else a terminal step is a lost life
        game_over = ended & (frames <= self.frames)
        self.scores += raw
        reward = np.sign(raw) if self.profile == "deepmind" else raw.copy()
        reward[terminated] = self.penalty
        infos: list[dict[str, Any]] = [{"lives": int(lives)} for lives in info["lives"]]
        for i in np.flatnonzero(ended):
            # ALE's final_obs is the last frame only where it reset the game; after a lost life the game
            # goes on and the returned frame is the last one (final_obs holds no frame of this step there)
            infos[i]["terminal_observation"] = info["final_obs"][i] if game_over[i] else obs[i]
            if truncated[i] and not terminated[i]:
                infos[i]["TimeLimit.truncated"] = True
        for i in np.flatnonzero(game_over):
            episode = {"r": round(float(self.scores[i]), 6), "l": int(self.frames[i]) + FRAME_SKIP,
                       "t": round(time.time() - self.t_start, 6)}
            infos[i]["episode"] = episode
            if self.writers:
                self.writers[i].write_row(episode)
            self.scores[i] = 0.0
        self.frames = frames
        return obs, reward.astype(np.float32), ended, infos

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers = []
        self.ale.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        raise NotImplementedError(
            f"AleVecEnv has no per-game env objects; env_method({method_name!r}) is not available")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        # it records games as SB3's Monitor does (info["episode"]), so SB3's evaluate_policy may rely on it
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]


def _chain(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def ale_vector_backend(venv: VecEnv, num_threads: int = 0, noop_max: int = 30) -> AleVecEnv:
    """
    RL Zoo ``vec_env_wrapper``: replace the ``DummyVecEnv`` RL Zoo built from the entry by an
    :class:`AleVecEnv` with the same games: number, seeds, Monitor files (appended to: RL Zoo's
    Monitors wrote their headers, or a resumed run's rows), profile and terminal penalty (read from
    the entry's ``breakout_preprocessing`` wrapper) and frame cap (the ``TimeLimit`` of ``env_kwargs``'
    ``max_episode_steps``, in emulator frames).

    :param venv: the vector env RL Zoo built (a ``DummyVecEnv``); it is closed.
    :param num_threads: C++ threads stepping the games (0: ALE's default).
    :param noop_max: at most this many no-op frames at a reset.
    :raises ValueError: ``venv`` is not a ``DummyVecEnv`` of ``breakout_preprocessing`` envs.
    """
    if not isinstance(venv, DummyVecEnv):
        raise ValueError(f"ale_vector_backend: got a {type(venv).__name__}; allowed: a DummyVecEnv "
                         "(RL Zoo's default --vec-env dummy)")
    chain = _chain(venv.envs[0])
    penalty = next((w.penalty for w in chain if isinstance(w, TerminalPenaltyWrapper)), None)
    if penalty is None:
        raise ValueError("ale_vector_backend: the entry's env_wrapper must be "
                         "sb3_breakout.wrappers.breakout_preprocessing (profile and terminal penalty)")
    from gymnasium.wrappers import AtariPreprocessing

    profile = "keras" if any(isinstance(w, AtariPreprocessing) for w in chain) else "deepmind"
    limit = next((w._max_episode_steps for w in chain if isinstance(w, gym.wrappers.TimeLimit)), None)
    monitors = [next((w for w in _chain(env) if isinstance(w, Monitor)), None) for env in venv.envs]
    files = [m.results_writer.file_handler.name for m in monitors if m is not None and m.results_writer]
    t_start = monitors[0].t_start if monitors[0] is not None else None
    env_id = chain[-1].spec.id if chain[-1].spec is not None else "BreakoutNoFrameskip-v4"
    seeds, n_envs = list(venv._seeds), venv.num_envs
    venv.close()
    return AleVecEnv(n_envs, profile=profile, terminal_penalty=penalty,
                     max_agent_steps=(limit or 10_000 * FRAME_SKIP) // FRAME_SKIP, seeds=seeds,
                     monitor_files=files if len(files) == n_envs else None, override_existing=False,
                     env_id=env_id, noop_max=noop_max, num_threads=num_threads, t_start=t_start)
