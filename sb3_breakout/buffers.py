"""A replay buffer that stores each Atari frame once and rebuilds the frame stacks when sampling."""

from __future__ import annotations

import sys
import zlib
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from sb3_breakout.packed_rows import PackedRows

#: Largest Discrete action space whose actions are stored as uint8.
_UINT8_ACTIONS = 256
#: zlib level of the side store: 1 is the fastest and, on these sparse differences, as small as 9.
_ZLIB_LEVEL = 1


def _check_observation_space(observation_space: spaces.Space) -> tuple[int, int, int]:
    """
    :return: ``(n_stack, height, width)`` of a channel-first stack of uint8 frames.
    :raises ValueError: the space is anything else.
    """
    shape = getattr(observation_space, "shape", None)
    dtype = getattr(observation_space, "dtype", None)
    if (
        not isinstance(observation_space, spaces.Box)
        or shape is None
        or len(shape) != 3
        or dtype != np.uint8
        or not 1 <= shape[0] <= min(shape[1], shape[2])
    ):
        raise ValueError(
            "FrameStackReplayBuffer needs channel-first stacks of uint8 frames, shape (n_stack, H, W) "
            "such as (4, 84, 84) from VecFrameStack + VecTransposeImage; "
            f"got {type(observation_space).__name__} of shape {shape} and dtype {dtype}"
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def _action_storage(action_space: spaces.Space | None) -> tuple[int, np.dtype]:
    """
    :return: ``(action_dim, dtype stored)``: uint8 for a Discrete space of at most 256 non-negative
        actions (None is taken as such a space), else the dtype ``ReplayBuffer`` stores.
    """
    if action_space is None:
        return 1, np.dtype(np.uint8)
    if (
        isinstance(action_space, spaces.Discrete)
        and int(action_space.start) >= 0
        and int(action_space.start) + int(action_space.n) <= _UINT8_ACTIONS
    ):
        return 1, np.dtype(np.uint8)
    return get_action_dim(action_space), np.dtype(ReplayBuffer._maybe_cast_dtype(action_space.dtype))


def _layout(
    buffer_size: int, observation_space: spaces.Space, action_space: spaces.Space | None, n_envs: int
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every fixed array of the buffer (the side store of episode ends excluded)."""
    n_stack, height, width = _check_observation_space(observation_space)
    # at least n_stack + 1 rows, so that a stack and its next frame fit; RL Zoo's enjoy loads a
    # model with buffer_size=1 to skip the buffer, which then costs 5 frames.
    size = max(buffer_size // n_envs, n_stack + 1)
    action_dim, action_dtype = _action_storage(action_space)
    return {
        "frames": ((size, n_envs, height, width), np.dtype(np.uint8)),
        "actions": ((size, n_envs, action_dim), action_dtype),
        "rewards": ((size, n_envs), np.dtype(np.float32)),
        "dones": ((size, n_envs), np.dtype(bool)),
        "timeouts": ((size, n_envs), np.dtype(bool)),
        "episode_starts": ((size, n_envs), np.dtype(bool)),
        "next_slots": ((size, n_envs), np.dtype(np.int32)),
        "pending_frames": ((n_envs, height, width), np.dtype(np.uint8)),
        "last_next_obs": ((n_envs, n_stack, height, width), np.dtype(np.uint8)),
    }


class FrameStackReplayBuffer(PackedRows, ReplayBuffer):
    """
    ``ReplayBuffer`` for stacked Atari frames that keeps each 84x84 frame once (Dopamine-style).

    Why: SB3's ``ReplayBuffer`` stores the observation and the next observation of every transition,
    two stacks of 4 frames: 2 x 4 x 84 x 84 = 56,448 B per transition, 56 GB for the Nature DQN's
    1M transitions. ``optimize_memory_usage=True`` halves that (28 KB) but SB3 refuses it together with
    ``handle_timeout_termination`` (time-limit truncations would then be learnt as terminal, SB3 issue
    #934). This buffer keeps only the newest frame of each observation and rebuilds both stacks when
    sampling: 7,068 B per transition (frame 7,056, action 1 as uint8, reward 4, done 1, timeout 1,
    episode start 1, side-store slot 4), 7.07 GB for 1M, with timeout handling kept, plus about 150 B
    per episode end held (the side store below). It returns exactly the samples ``ReplayBuffer``
    returns for the same stream and the same indices.

    Layout (``position x env`` like ``ReplayBuffer``, ``B = buffer_size // n_envs`` positions):

    - ``frames[p, e]`` is the newest frame of the observation stored at ``p``;
      ``episode_starts[p, e]`` says that this observation begins an episode, so its stack is
      ``frames[p - n_stack + 1 .. p]`` with every frame before the last episode start in that window
      replaced by zeros, as ``VecFrameStack`` zero-fills at reset.
    - The next observation of the transition at ``p`` is its observation shifted by one frame plus a
      *next frame*: the side-store entry ``side_store[next_slots[p, e]]`` when ``next_slots[p, e] >= 0``
      (an episode end, terminal or truncated, whose true last frame SB3 passes as
      ``info["terminal_observation"]``, or a stream cut without ``done``, e.g. ``learn()`` called
      again, which resets the env); else ``pending_frames[e]`` when ``p`` is the newest position;
      else ``frames[p + 1, e]``. A side-store entry is the zlib-compressed difference (mod 256)
      between that next frame and ``frames[p, e]``: one agent step changes a few dozen pixels of a
      Breakout frame, so an entry takes ~100 B instead of 7,056 (~150 B with Python's overhead,
      counted in ``nbytes``). Episode ends are a few per hundred steps (one per ~30 in random play),
      so the side store costs a few bytes per transition; sampling decompresses the few sampled
      episode ends one by one (~10 us each), everything else is vectorised.

    Valid to sample: every written position while the buffer is not full (``0 .. pos - 1``, the newest
    one included since its next frame is pending); once full, all but the ``n_stack - 1`` oldest
    positions ``pos .. pos + n_stack - 2``, whose older frames the write cursor has overwritten.
    ``sample`` draws only valid positions; ``_get_samples`` trusts its ``batch_inds``.

    ``add`` checks that the stream is one ``VecFrameStack`` produces (each observation continues the
    previous next observation or is a zero-filled episode start; each next observation is the
    observation shifted by one frame) and raises ``ValueError`` otherwise instead of storing what it
    could not rebuild.

    Use it as ``DQN(..., replay_buffer_class=FrameStackReplayBuffer)``, or in RL Zoo YAML (RL Zoo
    evaluates the string, so a bare dotted name is a NameError) as
    ``replay_buffer_class: "importlib.import_module('sb3_breakout.buffers').FrameStackReplayBuffer"``.
    It pickles with ``save_replay_buffer`` / ``load_replay_buffer`` (RL Zoo's loader too): only the
    written rows, compressed with Zstandard in blocks (``sb3_breakout.packed_rows``), ~25 MB per 1M
    transitions of Breakout frames instead of 7 GB; pickles of the older layout (the whole arrays) still load.

    :param buffer_size: transitions held in all, ``buffer_size // n_envs`` per env.
    :param observation_space: a ``Box`` of uint8 frame stacks, shape ``(n_stack, H, W)``.
    :param action_space: the action space; a Discrete one of at most 256 actions is stored as uint8.
    :param device: PyTorch device of the sampled tensors.
    :param n_envs: number of parallel environments.
    :param optimize_memory_usage: must be False (the buffer already stores each frame once).
    :param handle_timeout_termination: as ``ReplayBuffer``: a truncated transition
        (``info["TimeLimit.truncated"]``) is sampled with ``done = 0``.
    :param n_steps: n-step returns when above 1 (default 1: one-step samples, ``discounts`` None).
        Each sample then carries the discounted sum of up to ``n_steps`` rewards, stopping at the first
        episode end, the next observation and done of its last step, and ``discounts = gamma ** k``
        for the ``k`` steps summed, exactly as SB3's ``NStepReplayBuffer`` computes them (the test
        compares the two). SB3's DQN sets up n-step returns by itself only for its own buffers: with
        this class pass ``replay_buffer_kwargs=dict(n_steps=3, gamma=<DQN's gamma>)``.
    :param gamma: discount of the n-step sums; must equal the algorithm's ``gamma``.
    :raises ValueError: another observation space or ``optimize_memory_usage=True``. A
        ``buffer_size`` below ``n_stack + 1`` transitions per env is raised to that.
    """

    #: The per-position arrays (one row per position): pickled as their written rows (``PackedRows``).
    per_position = ("frames", "actions", "rewards", "dones", "timeouts", "episode_starts", "next_slots")
    row_fill = {"next_slots": -1}  # no side-store entry
    #: Class defaults, so that buffers pickled before n-step returns existed load as one-step buffers.
    n_steps: int = 1
    gamma: float = 0.99

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        n_steps: int = 1,
        gamma: float = 0.99,
    ) -> None:
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"FrameStackReplayBuffer: n_steps={n_steps!r}; allowed: an integer >= 1")
        if not 0 < gamma <= 1:
            raise ValueError(f"FrameStackReplayBuffer: gamma={gamma!r}; allowed: a number in (0, 1]")
        if optimize_memory_usage:
            raise ValueError(
                "FrameStackReplayBuffer does not take optimize_memory_usage=True: it is redundant (each "
                "frame is already stored once) and would disable timeout handling; "
                "set optimize_memory_usage=False"
            )
        layout = self._extend_layout(_layout(buffer_size, observation_space, action_space, n_envs))
        # BaseBuffer only: ReplayBuffer.__init__ would allocate the two full stacks arrays.
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = layout["frames"][0][0]
        self.optimize_memory_usage = False
        self.handle_timeout_termination = handle_timeout_termination
        self.n_steps, self.gamma = int(n_steps), float(gamma)
        self.n_stack, self.frame_height, self.frame_width = _check_observation_space(observation_space)
        for name in self.per_position:
            setattr(self, name, self._new_rows(name, *layout[name]))
        self.pending_frames = np.zeros(*layout["pending_frames"])
        self.last_next_obs = np.zeros(*layout["last_next_obs"])
        self.side_store: list[bytes | None] = []
        self._free_slots: list[int] = []
        self._side_bytes = 0
        self._action_out_dtype = ReplayBuffer._maybe_cast_dtype(action_space.dtype)
        # Offsets of the frames gathered per sample: the observation's n_stack frames, then the next one.
        self._offsets = np.arange(-self.n_stack + 1, 2)

    # ------------------------------------------------------------------ memory

    @classmethod
    def _extend_layout(
        cls, layout: dict[str, tuple[tuple[int, ...], np.dtype]]
    ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The arrays to allocate: ``layout`` here; a subclass with more arrays (per position or not) adds them."""
        return layout

    @classmethod
    def estimate_nbytes(
        cls,
        buffer_size: int,
        observation_space: spaces.Space,
        n_envs: int = 1,
        action_space: spaces.Space | None = None,
    ) -> int:
        """
        Bytes the buffer allocates, known before allocating it: all fixed arrays, the side store of
        episode ends excluded (~150 B more per episode end held, see the class docstring).

        :param buffer_size: transitions held in all.
        :param observation_space: the stacked-frames space, as for the constructor.
        :param n_envs: number of parallel environments.
        :param action_space: the action space; None counts a uint8 action (Discrete, at most 256).
        :return: bytes; 7,068 per transition for (4, 84, 84) frames and Discrete actions.
        :raises ValueError: as the constructor.
        """
        layout = cls._extend_layout(_layout(buffer_size, observation_space, action_space, n_envs))
        return sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in layout.values())

    @property
    def side_nbytes(self) -> int:
        """Bytes of the side store of next frames (episode ends): its entries with their Python
        object headers, and the list that holds them."""
        return self._side_bytes + sys.getsizeof(self.side_store)

    @property
    def nbytes(self) -> int:
        """Bytes held by all the buffer's arrays, side store included."""
        arrays = (*self.per_position, "pending_frames", "last_next_obs")  # a subclass's per-position arrays too
        return sum(int(getattr(self, name).nbytes) for name in arrays) + self.side_nbytes

    @property
    def bytes_per_transition(self) -> float:
        """``nbytes`` divided by the capacity in transitions (``buffer_size * n_envs``)."""
        return self.nbytes / (self.buffer_size * self.n_envs)

    # ------------------------------------------------------------------ side store

    def _side_put(self, next_frame: np.ndarray, frame: np.ndarray) -> int:
        """Store a next frame as its difference to ``frame`` (the observation's newest); return its slot."""
        entry = zlib.compress((next_frame - frame).tobytes(), _ZLIB_LEVEL)  # uint8: mod 256
        if self._free_slots:
            slot = self._free_slots.pop()
            self.side_store[slot] = entry
        else:
            slot = len(self.side_store)
            self.side_store.append(entry)
        self._side_bytes += sys.getsizeof(entry)
        return slot

    def _side_delta(self, slot: int) -> np.ndarray:
        """The difference (mod 256) kept in ``slot``: uint8, shape (H, W), read-only."""
        delta = np.frombuffer(zlib.decompress(self.side_store[slot]), dtype=np.uint8)
        return delta.reshape(self.frame_height, self.frame_width)

    def _side_get(self, slot: int, frame: np.ndarray) -> np.ndarray:
        """The next frame kept in ``slot``, given ``frame`` (the observation's newest)."""
        return frame + self._side_delta(slot)

    def _side_release(self, pos: int) -> None:
        """Free the side-store slots of the transitions at ``pos`` (about to be overwritten)."""
        for slot in self.next_slots[pos][self.next_slots[pos] >= 0]:
            self._side_bytes -= sys.getsizeof(self.side_store[slot])
            self.side_store[slot] = None
            self._free_slots.append(int(slot))
        self.next_slots[pos] = -1

    # ------------------------------------------------------------------ rebuilding stacks

    def _hidden(self, positions: np.ndarray, envs: np.ndarray) -> np.ndarray:
        """
        Which of the observation's older frames are zero-filled: frame k < n_stack - 1 is zero when an
        episode starts after it (``VecFrameStack`` zero-fills at reset).

        :param positions: the ``n_stack + 1`` positions of each sample, shape (batch, n_stack + 1).
        :param envs: env of each sample, shape (batch, 1).
        :return: bool array (batch, n_stack - 1).
        """
        starts = self.episode_starts[positions[:, 1 : self.n_stack], envs]
        return np.logical_or.accumulate(starts[:, ::-1], axis=1)[:, ::-1]

    def _stacks(self, batch_inds: np.ndarray, env_inds: np.ndarray) -> np.ndarray:
        """
        Rebuild ``n_stack + 1`` frames per transition: ``[:, :n_stack]`` is the observation,
        ``[:, 1:]`` the next observation.

        :param batch_inds: positions, shape (batch,).
        :param env_inds: env of each position, shape (batch,).
        :return: uint8 array (batch, n_stack + 1, H, W).
        """
        positions = (batch_inds[:, None] + self._offsets) % self.buffer_size
        envs = env_inds[:, None]
        frames = self.frames[positions, envs]
        if self.n_stack > 1:
            frames[:, : self.n_stack - 1][self._hidden(positions, envs)] = 0
        newest = batch_inds == (self.pos - 1) % self.buffer_size
        if newest.any():
            frames[newest, -1] = self.pending_frames[env_inds[newest]]
        slots = self.next_slots[batch_inds, env_inds]
        for row in np.flatnonzero(slots >= 0):  # the few episode ends only
            frames[row, -1] = self._side_get(slots[row], frames[row, -2])
        return frames

    # ------------------------------------------------------------------ ReplayBuffer API

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """
        Store one step of all envs, as ``ReplayBuffer.add`` (same arguments, as SB3's DQN passes them:
        ``next_obs`` holds ``info["terminal_observation"]`` for the envs that are done).

        :raises ValueError: the observations are not a ``VecFrameStack`` stream (see the class docstring).
        """
        shape = (self.n_envs, self.n_stack, self.frame_height, self.frame_width)
        obs = np.asarray(obs).reshape(shape).astype(np.uint8, copy=False)
        next_obs = np.asarray(next_obs).reshape(shape).astype(np.uint8, copy=False)
        done = np.asarray(done).reshape(self.n_envs).astype(bool)
        if not np.array_equal(next_obs[:, :-1], obs[:, 1:]):
            raise ValueError(
                "FrameStackReplayBuffer: next_obs is not obs shifted by one frame; the buffer needs "
                "stacks from SB3's VecFrameStack (channel-first, newest frame last)"
            )
        pos = self.pos
        envs = np.arange(self.n_envs)
        if pos > 0 or self.full:
            prev = (pos - 1) % self.buffer_size
            # the previous next_obs as given (equal to its rebuilt stack, without rebuilding it)
            same = np.array([np.array_equal(obs[env], self.last_next_obs[env]) for env in envs])
            continues = ~self.dones[prev] & same
            cut = ~self.dones[prev] & ~continues
        else:
            continues = cut = np.zeros(self.n_envs, dtype=bool)
        starts = ~continues
        if self.n_stack > 1:
            zero_filled = ~np.any(obs[:, :-1], axis=(1, 2, 3))
            if np.any(starts & ~zero_filled):
                raise ValueError(
                    "FrameStackReplayBuffer: the observation of env(s) "
                    f"{np.flatnonzero(starts & ~zero_filled).tolist()} neither continues the previous next "
                    "observation nor is a zero-filled episode start (SB3's VecFrameStack zero-fills at reset)"
                )
        # The previous transition's true next frame (pending) is not this observation's: keep it aside.
        if cut.any():
            previous = self._host_rows(self.frames, prev, prev + 1)[0]
            for env in np.flatnonzero(cut):
                self.next_slots[prev, env] = self._side_put(self.pending_frames[env], previous[env])

        self._side_release(pos)
        self._put_rows(self.frames, pos, obs[None, :, -1])
        self.episode_starts[pos] = starts
        self.actions[pos] = np.asarray(action).reshape(self.actions.shape[1:])
        self.rewards[pos] = np.asarray(reward)
        self.dones[pos] = done
        if self.handle_timeout_termination:
            self.timeouts[pos] = np.array([info.get("TimeLimit.truncated", False) for info in infos])
        for env in np.flatnonzero(done):
            self.next_slots[pos, env] = self._side_put(next_obs[env, -1], obs[env, -1])
        self.pending_frames[:] = next_obs[:, -1]
        self.last_next_obs[:] = next_obs

        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """
        Sample ``batch_size`` valid transitions (see the class docstring), uniformly.

        :param batch_size: number of transitions.
        :param env: the VecNormalize to normalise rewards with, as ``ReplayBuffer.sample``.
        """
        n_valid = self.valid_positions
        if self.full:  # the newest n_valid positions from the write cursor on, the oldest n_stack - 1 left out
            offsets = np.random.randint(self.buffer_size - n_valid, self.buffer_size, size=batch_size)
            batch_inds = (self.pos + offsets) % self.buffer_size
        else:
            batch_inds = np.random.randint(0, n_valid, size=batch_size)
        return self._get_samples(batch_inds, env=env)

    @property
    def valid_positions(self) -> int:
        """
        Positions (per env) that :meth:`sample` draws from: every written one before the buffer is full;
        once full, all but the ``n_stack - 1`` oldest, whose stacks reach frames already overwritten.
        """
        return self.buffer_size - self.n_stack + 1 if self.full else self.pos

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        # the same draw as ReplayBuffer._get_samples, so that both give the same batch for one seed
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        return self._samples_at(np.asarray(batch_inds), env_indices, env)

    def _samples_at(
        self, batch_inds: np.ndarray, env_indices: np.ndarray, env: VecNormalize | None = None
    ) -> ReplayBufferSamples:
        """The samples of the given (position, env) pairs, one-step or n-step as ``n_steps`` says."""
        if self.n_steps > 1:
            return self._get_n_step_samples(batch_inds, env_indices, env)
        frames = self._stacks(batch_inds, env_indices)
        dones = self.dones[batch_inds, env_indices] & ~self.timeouts[batch_inds, env_indices]
        data = (
            self._normalize_obs(frames[:, :-1], env),
            self.actions[batch_inds, env_indices, :].astype(self._action_out_dtype),
            self._normalize_obs(frames[:, 1:], env),
            dones.astype(np.float32).reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))

    def _get_n_step_samples(
        self, batch_inds: np.ndarray, env_indices: np.ndarray, env: VecNormalize | None
    ) -> ReplayBufferSamples:
        """
        ``NStepReplayBuffer._get_samples`` step for step (SB3 2.x), with the stacks rebuilt: sum up to
        ``n_steps`` rewards from each position, up to and including the first done or timeout; the
        newest position counts as a timeout unless it is done, so no sum runs past the write cursor.
        """
        newest = self.pos - 1
        saved = self.timeouts[newest].copy()
        self.timeouts[newest] = saved | ~self.dones[newest]
        try:
            window = (batch_inds[:, None] + np.arange(self.n_steps)) % self.buffer_size
            envs = env_indices[:, None]
            rewards = self._normalize_reward(self.rewards[window, envs], env)
            ends = self.dones[window, envs] | self.timeouts[window, envs]
            end = np.where(ends.any(axis=1), ends.argmax(axis=1), self.n_steps - 1)
            mask = np.arange(self.n_steps)[None, :] <= end[:, None]
            discounts = self.gamma ** mask.sum(axis=1, keepdims=True).astype(np.float32)
            returns = (rewards * self.gamma ** np.arange(self.n_steps, dtype=np.float32) * mask).sum(
                axis=1, keepdims=True
            )
            last = (batch_inds + end) % self.buffer_size
            dones = self.dones[last, env_indices].astype(np.float32) * (
                1.0 - self.timeouts[last, env_indices].astype(np.float32)
            )
        finally:
            self.timeouts[newest] = saved
        data = (
            self._normalize_obs(self._stacks(batch_inds, env_indices)[:, :-1], env),
            self.actions[batch_inds, env_indices, :].astype(self._action_out_dtype),
            self._normalize_obs(self._stacks(last, env_indices)[:, 1:], env),
            dones[:, None],
            returns,
            discounts,
        )
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))

    def reset(self) -> None:
        """Empty the buffer."""
        super().reset()
        self.next_slots[:] = -1
        self.episode_starts[:] = False
        self.side_store, self._free_slots, self._side_bytes = [], [], 0
