"""Prioritized replay on the real game: the sum tree, the draw, the weights, the learner's updates, pickling."""

import pickle
import re

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from sb3_breakout.buffers import FrameStackReplayBuffer
from sb3_breakout.envs import make_breakout_env
from sb3_breakout.prioritized import MAX_SAMPLES_WITHOUT_UPDATE, PrioritizedFrameStackReplayBuffer, SumTree
from sb3_breakout.qrdqn import QRDQN
from sb3_breakout.torch_layers import nature_policy_kwargs


def make_qrdqn(env, buffer_size=600, learning_starts=10**9, **buffer_kwargs):
    return QRDQN("CnnPolicy", env, buffer_size=buffer_size, learning_starts=learning_starts, batch_size=32,
                 train_freq=4, replay_buffer_class=PrioritizedFrameStackReplayBuffer,
                 replay_buffer_kwargs=dict(n_steps=3, gamma=0.99, **buffer_kwargs),
                 policy_kwargs=nature_policy_kwargs(n_quantiles=8), seed=0, device="cpu")


@pytest.fixture(scope="module")
def full_buffer():
    """A buffer of 600 transitions after 1,000 random steps of the real game: full, wrapped once."""
    env = make_breakout_env("deepmind", seed=4)
    model = make_qrdqn(env)
    model.learn(1_000)
    env.close()
    assert model.replay_buffer.full
    return model.replay_buffer


def test_sum_tree_finds_the_leaf_of_every_prefix_sum():
    rng = np.random.default_rng(0)
    values = rng.random(37) * (rng.random(37) > 0.3)  # zeros included, a size that is no power of two
    tree = SumTree(37)
    tree.set(np.arange(37), values)
    rebuilt = SumTree(37)
    rebuilt.set_all(values)
    assert np.allclose(tree.nodes, rebuilt.nodes) and tree.total == pytest.approx(values.sum())
    prefix = rng.random(1_000) * values.sum()
    assert np.array_equal(tree.find(prefix), np.searchsorted(np.cumsum(values), prefix, side="right"))


def test_draws_follow_the_priorities_and_never_an_invalid_position(full_buffer):
    buffer = full_buffer
    rng = np.random.default_rng(1)
    valid = buffer.priorities > 0
    # the oldest n_stack - 1 positions (their older frames overwritten) are the only ones held at 0
    oldest = (buffer.pos + np.arange(buffer.n_stack - 1)) % buffer.buffer_size
    assert not valid[oldest].any() and valid.sum() == buffer.n_valid == buffer.buffer_size - buffer.n_stack + 1
    priorities = np.where(valid, rng.random(valid.shape) ** 4 + 1e-3, 0.0).astype(np.float32)
    buffer.priorities[:] = priorities
    buffer.tree.set_all(priorities.ravel().astype(np.float64))
    np.random.seed(0)
    counts = np.zeros(buffer.buffer_size * buffer.n_envs)
    for _ in range(600):
        samples = buffer.sample(32)
        np.add.at(counts, buffer._pending, 1)
        buffer.update_priorities(priorities.ravel()[buffer._pending] ** 2)  # the same priorities again
    assert counts[~valid.ravel()].sum() == 0
    expected = priorities.ravel() / priorities.sum() * counts.sum()
    big = expected > 100  # the frequently drawn: within 30% of their share
    assert big.sum() > 5 and np.all(np.abs(counts[big] - expected[big]) < 0.3 * expected[big])
    assert samples.weights.shape == (32, 1) and float(samples.weights.max()) == pytest.approx(1.0)


def test_a_draw_returns_the_uniform_buffers_samples_of_the_same_transitions(full_buffer):
    np.random.seed(3)
    samples = full_buffer.sample(16)
    positions, envs = np.divmod(full_buffer._pending, full_buffer.n_envs)
    same = FrameStackReplayBuffer._samples_at(full_buffer, positions, envs)
    for name in ("observations", "actions", "next_observations", "dones", "rewards", "discounts"):
        assert th.equal(getattr(samples, name), getattr(same, name)), name
    # importance weights (N P(i)) ** -beta over the batch's largest, beta 0.4 at the start
    probabilities = full_buffer.tree.leaves(full_buffer._pending) / full_buffer.tree.total
    weights = (full_buffer.n_valid * probabilities) ** -full_buffer.beta
    assert np.allclose(samples.weights.numpy().ravel(), weights / weights.max(), rtol=1e-5)
    full_buffer.update_priorities(np.ones(16))


def test_qrdqn_learns_from_priorities_and_they_survive_a_pickle():
    env = make_breakout_env("deepmind", seed=5)
    model = make_qrdqn(env, buffer_size=2_000, learning_starts=200, beta_steps=1_000)
    model.learn(1_000)
    env.close()
    buffer = model.replay_buffer
    assert model._n_updates == (1_000 - 200) // 4
    written = buffer.priorities[: buffer.pos, 0]
    # priorities are the learner's losses ** 0.5 now: no longer all the initial maximum
    assert len(np.unique(written)) > 100 and buffer.max_priority > 1.0
    assert buffer.beta == 1.0
    restored = pickle.loads(pickle.dumps(buffer))
    assert np.array_equal(restored.priorities, buffer.priorities)
    assert np.allclose(restored.tree.nodes, buffer.tree.nodes)
    np.random.seed(7)
    a = buffer.sample(32).observations
    np.random.seed(7)
    b = restored.sample(32).observations
    assert th.equal(a, b)


def test_a_learner_that_never_updates_priorities_is_stopped():
    env = make_breakout_env("deepmind", seed=6)
    model = DQN("CnnPolicy", env, buffer_size=1_000, learning_starts=50, batch_size=8, train_freq=1,
                replay_buffer_class=PrioritizedFrameStackReplayBuffer, policy_kwargs=nature_policy_kwargs(),
                seed=0, device="cpu")
    with pytest.raises(RuntimeError, match=f"no priority update after {MAX_SAMPLES_WITHOUT_UPDATE} samples"):
        model.learn(50 + MAX_SAMPLES_WITHOUT_UPDATE + 10)
    env.close()


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=1.5), "alpha=1.5"),
    (dict(beta=-0.1), "beta=-0.1"),
    (dict(beta_steps=0), "beta_steps=0"),
])
def test_bad_priority_settings_are_refused(kwargs, message):
    env = make_breakout_env("deepmind", seed=0)
    with pytest.raises(ValueError, match=re.escape(message)):
        PrioritizedFrameStackReplayBuffer(100, env.observation_space, env.action_space, **kwargs)
    env.close()


def test_memory_counts_the_priorities_and_the_tree():
    """``nbytes`` and ``estimate_nbytes`` (the preflight's memory check) include what prioritizing adds."""
    from gymnasium import spaces
    frames, discrete = spaces.Box(0, 255, (4, 84, 84), np.uint8), spaces.Discrete(4)
    for n_envs in (1, 4):
        buffer = PrioritizedFrameStackReplayBuffer(10_000, frames, discrete, "cpu", n_envs=n_envs)
        uniform = FrameStackReplayBuffer(10_000, frames, discrete, "cpu", n_envs=n_envs)
        added = buffer.priorities.nbytes + buffer.tree.nodes.nbytes
        assert added == 10_000 * 4 + 2 * 16_384 * 8  # float32 per transition; float64 tree over 2^14 leaves
        assert buffer.nbytes == uniform.nbytes + added
        fixed = buffer.nbytes - buffer.side_nbytes
        assert PrioritizedFrameStackReplayBuffer.estimate_nbytes(10_000, frames, n_envs, discrete) == fixed
