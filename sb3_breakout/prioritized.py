"""
Prioritized experience replay (Schaul et al. 2016) on the compact frame-stack buffer.

Why written here: neither SB3 nor sb3-contrib has prioritized replay (SB3 keeps it out of scope; the
RL Zoo has none), and the buffer must keep :class:`~sb3_breakout.buffers.FrameStackReplayBuffer`'s
compact storage, its n-step sums and its validity rules. What it adds is small: a sum tree over the
``position x env`` slots, proportional sampling with stratified draws, importance-sampling weights and
priority updates. The learner's side is :class:`sb3_breakout.qrdqn.QRDQN`, which weights its loss by
``weights`` and gives each sample's loss back as its new priority.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.vec_env import VecNormalize

from sb3_breakout.buffers import FrameStackReplayBuffer

#: Samples drawn without a priority update in between after which :meth:`PrioritizedFrameStackReplayBuffer.sample`
#: refuses: a learner that never updates priorities (SB3's DQN, sb3-contrib's QRDQN under rl_zoo3.train)
#: would otherwise train on a silently different recipe.
MAX_SAMPLES_WITHOUT_UPDATE = 100


class PrioritizedReplayBufferSamples(NamedTuple):
    """SB3's ``ReplayBufferSamples`` fields plus each sample's importance-sampling weight, shape (batch, 1)."""

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None
    weights: th.Tensor


class SumTree:
    """
    Binary sum tree over ``size`` leaves in one array (root at 1, leaves at ``capacity .. 2 capacity - 1``):
    vectorised updates and prefix-sum lookups, ``log2(capacity)`` numpy steps each.

    :param size: number of leaves used (rounded up to a power of two inside).
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.capacity = self.capacity_for(self.size)
        self.depth = self.capacity.bit_length() - 1
        self.nodes = np.zeros(2 * self.capacity, dtype=np.float64)

    @staticmethod
    def capacity_for(size: int) -> int:
        """Leaves allocated for ``size`` leaves used: the next power of two (the array holds twice that)."""
        return 1 << max(0, (int(size) - 1).bit_length())

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def leaves(self, index: np.ndarray) -> np.ndarray:
        return self.nodes[self.capacity + np.asarray(index)]

    def set(self, index: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``index`` to ``values`` and update their ancestors."""
        node = self.capacity + np.asarray(index, dtype=np.int64).ravel()
        self.nodes[node] = np.asarray(values, dtype=np.float64).ravel()
        for _ in range(self.depth):
            node = np.unique(node >> 1)
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]

    def set_all(self, values: np.ndarray) -> None:
        """Set every leaf (``values`` of length ``size``) and rebuild the tree bottom-up."""
        self.nodes[:] = 0.0
        self.nodes[self.capacity:self.capacity + self.size] = values
        start = self.capacity
        while start > 1:
            half = start // 2
            self.nodes[half:start] = self.nodes[start:2 * start:2] + self.nodes[start + 1:2 * start:2]
            start = half

    def find(self, prefix: np.ndarray) -> np.ndarray:
        """Leaf index whose cumulative range holds each prefix sum (``0 <= prefix < total``)."""
        prefix = np.array(prefix, dtype=np.float64)
        node = np.ones(len(prefix), dtype=np.int64)
        for _ in range(self.depth):
            left = self.nodes[2 * node]
            right = prefix >= left
            prefix -= np.where(right, left, 0.0)
            node = 2 * node + right
        return node - self.capacity


class PrioritizedFrameStackReplayBuffer(FrameStackReplayBuffer):
    """
    :class:`~sb3_breakout.buffers.FrameStackReplayBuffer` that samples transition ``i`` with probability
    ``p_i / sum p`` and weights it by ``(N P(i)) ** -beta``, divided by the batch's largest weight.

    New transitions get the largest priority seen so far; the learner sets ``p_i = (loss_i + 1e-6) ** alpha``
    through :meth:`update_priorities` after every sample. ``beta`` grows linearly from ``beta`` to 1 over
    ``beta_steps`` transitions added (all envs together). The positions the uniform buffer never samples
    (not written yet; once full, the ``n_stack - 1`` oldest) hold priority 0. Draws are stratified: the
    priority mass is cut into ``batch_size`` equal parts and one transition drawn from each.

    Priorities are a per-position array like the frames, so they pickle with the buffer (compressed) and a
    resumed run continues with them; the tree is rebuilt from them on load.

    :param alpha: priority exponent (0.5, Rainbow's; 0 would be uniform).
    :param beta: initial importance-sampling exponent (0.4, Rainbow's).
    :param beta_steps: transitions over which ``beta`` reaches 1 (1,000,000).
    :param kwargs: :class:`~sb3_breakout.buffers.FrameStackReplayBuffer`'s (``n_steps``, ``gamma``, ...).
    :raises ValueError: ``alpha`` outside [0, 1], ``beta`` outside [0, 1] or ``beta_steps < 1``.
    """

    per_position = FrameStackReplayBuffer.per_position + ("priorities",)

    def __init__(self, *args: Any, alpha: float = 0.5, beta: float = 0.4, beta_steps: int = 1_000_000,
                 **kwargs: Any) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"PrioritizedFrameStackReplayBuffer: alpha={alpha!r}; allowed: a number in [0, 1]")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"PrioritizedFrameStackReplayBuffer: beta={beta!r}; allowed: a number in [0, 1]")
        if beta_steps < 1:
            raise ValueError(f"PrioritizedFrameStackReplayBuffer: beta_steps={beta_steps!r}; allowed: an integer >= 1")
        super().__init__(*args, **kwargs)
        self.alpha, self.beta0, self.beta_steps = float(alpha), float(beta), int(beta_steps)
        self.max_priority = 1.0
        self.added = 0
        self._pending: np.ndarray | None = None  # the leaves of the last sample, until their update
        self._samples_without_update = 0
        self.tree = SumTree(self.buffer_size * self.n_envs)

    @classmethod
    def _extend_layout(cls, layout: dict[str, Any]) -> dict[str, Any]:
        """
        The uniform buffer's arrays plus ``priorities`` (float32, one per (position, env)) and the sum
        tree's nodes (float64, twice its power-of-two leaves): ``estimate_nbytes`` counts both.
        """
        size, n_envs = layout["rewards"][0]
        return {**layout, "priorities": ((size, n_envs), np.dtype(np.float32)),
                "sum_tree": ((2 * SumTree.capacity_for(size * n_envs),), np.dtype(np.float64))}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("tree", None)  # rebuilt from the priorities
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.tree = SumTree(self.buffer_size * self.n_envs)
        self.tree.set_all(self.priorities.ravel().astype(np.float64))

    @property
    def beta(self) -> float:
        """The importance-sampling exponent now: ``beta`` rising linearly to 1 over ``beta_steps`` transitions."""
        return min(1.0, self.beta0 + (1.0 - self.beta0) * self.added / self.beta_steps)

    def _set(self, positions: np.ndarray, envs: np.ndarray, values: np.ndarray) -> None:
        self.priorities[positions, envs] = values
        self.tree.set(positions * self.n_envs + envs, self.priorities[positions, envs])

    def add(self, obs, next_obs, action, reward, done, infos) -> None:  # type: ignore[override]
        pos = self.pos
        super().add(obs, next_obs, action, reward, done, infos)
        self.added += self.n_envs
        envs = np.arange(self.n_envs)
        positions, values = np.full(self.n_envs, pos), np.full(self.n_envs, self.max_priority, dtype=np.float32)
        if self.full:  # the n_stack - 1 positions after the new one are the oldest now: their older frames are gone
            after = np.repeat((pos + 1 + np.arange(self.n_stack - 1)) % self.buffer_size, self.n_envs)
            positions = np.concatenate([positions, after])
            envs = np.tile(envs, self.n_stack)
            values = np.concatenate([values, np.zeros(len(after), dtype=np.float32)])
        self._set(positions, envs, values)

    @property
    def n_valid(self) -> int:
        """Transitions that can be sampled, all envs together (the uniform buffer's ``valid_positions``)."""
        return self.valid_positions * self.n_envs

    @property
    def nbytes(self) -> int:
        """The uniform buffer's bytes (``priorities`` included, a per-position array) plus the sum tree's."""
        return super().nbytes + int(self.tree.nodes.nbytes)

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> PrioritizedReplayBufferSamples:  # type: ignore[override]
        """
        Draw ``batch_size`` transitions by priority (stratified), with their importance-sampling weights.

        :raises RuntimeError: more than :data:`MAX_SAMPLES_WITHOUT_UPDATE` samples without a call to
            :meth:`update_priorities` (a learner that does not update priorities).
        """
        self._samples_without_update += 1
        if self._samples_without_update > MAX_SAMPLES_WITHOUT_UPDATE:
            raise RuntimeError(
                "PrioritizedFrameStackReplayBuffer: no priority update after "
                f"{MAX_SAMPLES_WITHOUT_UPDATE} samples; train it with sb3_breakout's QRDQN "
                "(python -m sb3_breakout.train --algo qrdqn), which updates priorities"
            )
        total = self.tree.total
        bounds = np.linspace(0.0, total, batch_size + 1)
        prefix = np.random.uniform(bounds[:-1], bounds[1:])
        leaves = self.tree.find(np.minimum(prefix, np.nextafter(total, 0.0)))
        # rounding can land on a zero-priority leaf next to a valid one: redraw those few uniformly by mass
        for _ in range(8):
            zero = self.tree.leaves(leaves) <= 0.0
            if not zero.any():
                break
            leaves[zero] = self.tree.find(np.random.uniform(0.0, total, zero.sum()))
        if (self.tree.leaves(leaves) <= 0.0).any():  # float rounding eight times in a row: not a silent NaN weight
            raise RuntimeError("PrioritizedFrameStackReplayBuffer: drew a transition of priority 0 "
                               "(sum tree inconsistent)")
        positions, env_indices = np.divmod(leaves, self.n_envs)
        probabilities = self.tree.leaves(leaves) / total
        weights = (self.n_valid * probabilities) ** -self.beta
        weights /= weights.max()
        self._pending = leaves
        samples = self._samples_at(positions, env_indices, env)
        return PrioritizedReplayBufferSamples(*samples, weights=self.to_torch(weights.astype(np.float32)[:, None]))

    def update_priorities(self, losses: np.ndarray) -> None:
        """Give the transitions of the last sample the priorities ``(losses + 1e-6) ** alpha``."""
        if self._pending is None:
            raise RuntimeError("PrioritizedFrameStackReplayBuffer.update_priorities: no sample to update")
        losses = np.asarray(losses, dtype=np.float64).ravel()
        if len(losses) != len(self._pending):
            raise ValueError(f"update_priorities: {len(losses)} losses for a sample of {len(self._pending)}")
        priorities = (np.abs(losses) + 1e-6) ** self.alpha
        positions, envs = np.divmod(self._pending, self.n_envs)
        # a transition made invalid since the sample (priority 0: its older frames are gone) stays out of the draw
        live = self.priorities[positions, envs] > 0
        self._set(positions[live], envs[live], priorities[live].astype(np.float32))
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self._pending, self._samples_without_update = None, 0

    def reset(self) -> None:
        super().reset()
        self.priorities[:] = 0.0
        self.tree = SumTree(self.buffer_size * self.n_envs)
        self.max_priority, self.added, self._pending, self._samples_without_update = 1.0, 0, None, 0
