"""FrameStackReplayBuffer against SB3's ReplayBuffer, fed the same real Breakout stream."""

import copyreg
import pickle
from collections import Counter
from copy import deepcopy

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from sb3_breakout.buffers import FrameStackReplayBuffer
from sb3_breakout.envs import MAX_AGENT_STEPS, make_breakout_env
from sb3_breakout.torch_layers import NatureCNN

N_STACK = 4
FRAMES = spaces.Box(0, 255, (N_STACK, 84, 84), np.uint8)


def transitions(env, n_steps, seed, reset_at=()):
    """
    Random play, stored as SB3's DQN stores it (``_store_transition``): the next observation of a
    done env is ``info["terminal_observation"]``, the infos go to ``add``. At a step of ``reset_at``
    the env is reset without a done, as ``learn()`` called again does.
    """
    rng = np.random.default_rng(seed)
    last_obs = env.reset()
    for step in range(n_steps):
        if step in reset_at:
            last_obs = env.reset()
        actions = rng.integers(0, env.action_space.n, size=env.num_envs)
        new_obs, rewards, dones, infos = env.step(actions)
        next_obs = deepcopy(new_obs)
        for i, done in enumerate(dones):
            if done and infos[i].get("terminal_observation") is not None:
                next_obs[i] = infos[i]["terminal_observation"]
        yield last_obs, next_obs, actions, rewards, dones, infos
        last_obs = new_obs


def episode_ends(dones, infos) -> Counter:
    """Kinds of episode end in one step: a life loss (deepmind profile), a game over, a truncation."""
    kinds = Counter()
    for done, info in zip(dones, infos, strict=True):
        if done:
            if info.get("TimeLimit.truncated"):
                kinds["truncation"] += 1
            elif "episode" in info:
                kinds["game_over"] += 1
            else:
                kinds["life_loss"] += 1
    return kinds


def valid_positions(buffer) -> np.ndarray:
    """By definition: all written positions, minus the n_stack - 1 oldest once the cursor has wrapped."""
    if not buffer.full:
        return np.arange(buffer.pos)
    age = (np.arange(buffer.buffer_size) - buffer.pos) % buffer.buffer_size  # 0 = oldest
    return np.flatnonzero(age >= N_STACK - 1)


def assert_samples_on_device(host, other, batch_inds, device_type):
    """``other``'s samples at ``batch_inds`` are all on ``device_type`` and equal ``host``'s (on the CPU)."""
    np.random.seed(0)
    expected = host._get_samples(batch_inds)
    np.random.seed(0)
    got = other._get_samples(batch_inds)
    for field in ReplayBufferSamples._fields:
        want, have = getattr(expected, field), getattr(got, field)
        if want is None:  # discounts of one-step samples
            assert have is None, field
            continue
        assert have.device.type == device_type, field
        assert th.equal(have.cpu(), want), field


def assert_same_samples(plain, compact, seed=0):
    """Every field of ``_get_samples`` equal for every valid position, in every env."""
    valid = valid_positions(compact)
    n_envs = compact.n_envs
    n = len(valid) * (1 if n_envs == 1 else 2 * n_envs)
    # _get_samples draws the env of each row with np.random: draw it here first, then place every
    # valid position in every env among the rows.
    np.random.seed(seed)
    env_inds = np.random.randint(0, high=n_envs, size=(n,))
    batch_inds = np.empty(n, dtype=np.int64)
    for env in range(n_envs):
        rows = np.flatnonzero(env_inds == env)
        assert len(rows) >= len(valid)
        batch_inds[rows] = np.resize(valid, len(rows))
    np.random.seed(seed)
    expected = plain._get_samples(batch_inds)
    np.random.seed(seed)
    got = compact._get_samples(batch_inds)
    for field in ReplayBufferSamples._fields:
        want, have = getattr(expected, field), getattr(got, field)
        if want is None:  # discounts, for n-step buffers only
            assert have is None, field
            continue
        assert have.dtype == want.dtype and have.shape == want.shape, field
        assert th.equal(have, want), f"{field} differs at pos={compact.pos} full={compact.full}"


def sampled_positions(buffer, batch_size) -> np.ndarray:
    """The positions ``buffer.sample`` picks, seen on their way to ``_get_samples``."""
    seen = []
    original = buffer._get_samples

    def record(batch_inds, env=None):
        seen.append(np.array(batch_inds))
        return original(batch_inds, env)

    buffer._get_samples = record
    try:
        buffer.sample(batch_size)
    finally:
        del buffer._get_samples
    return seen[0]


@pytest.mark.parametrize(
    "n_envs, max_agent_steps, n_steps, reset_at, kinds, n_step",
    [
        (2, MAX_AGENT_STEPS, 1700, (900,), ("life_loss", "game_over"), 1),
        (2, 60, 700, (), ("life_loss", "truncation"), 1),
        (1, 150, 1400, (), ("life_loss", "game_over", "truncation"), 1),
        (2, 60, 1300, (700,), ("life_loss", "truncation"), 3),
        (1, 150, 1400, (), ("life_loss", "game_over", "truncation"), 3),
    ],
    ids=["2envs-games", "2envs-truncated", "1env", "2envs-truncated-3step", "1env-3step"],
)
def test_same_samples_as_replay_buffer_on_real_game(n_envs, max_agent_steps, n_steps, reset_at, kinds,
                                                    n_step):
    """
    Against ``ReplayBuffer`` (one-step) or ``NStepReplayBuffer`` (``n_step`` 3: the reward sums,
    discounts and the next observation of the last step summed).
    """
    env = make_breakout_env("deepmind", n_envs=n_envs, seed=11 * n_envs + max_agent_steps,
                            max_agent_steps=max_agent_steps)
    buffer_size = 1000  # 1000 // n_envs positions: the cursor wraps more than once
    spaces_ = (env.observation_space, env.action_space, "cpu")
    if n_step == 1:
        plain = ReplayBuffer(buffer_size, *spaces_, n_envs=n_envs)
        compact = FrameStackReplayBuffer(buffer_size, *spaces_, n_envs=n_envs)
    else:
        plain = NStepReplayBuffer(buffer_size, *spaces_, n_envs=n_envs, n_steps=n_step, gamma=0.9)
        compact = FrameStackReplayBuffer(buffer_size, *spaces_, n_envs=n_envs, n_steps=n_step, gamma=0.9)
    positions = plain.buffer_size
    checkpoints = {positions // 2, positions - 1, *range(positions, positions + 4),
                   positions + positions // 3, 2 * positions + 1, n_steps - 1}
    seen = Counter()
    for step, (obs, next_obs, actions, rewards, dones, infos) in enumerate(
        transitions(env, n_steps, seed=n_envs, reset_at=reset_at)
    ):
        seen += episode_ends(dones, infos)
        plain.add(obs, next_obs, actions, rewards, dones, infos)
        compact.add(obs, next_obs, actions, rewards, dones, infos)
        if step in checkpoints:
            assert_same_samples(plain, compact, seed=step)
        # right after each wrap of the cursor, and now and then: sample() picks valid positions only
        if (compact.full and compact.pos < N_STACK + 1) or step % 97 == 0:
            picked = sampled_positions(compact, 256)
            assert np.isin(picked, valid_positions(compact)).all()
    env.close()
    assert compact.full and n_steps // positions >= 1
    for kind in kinds:
        assert seen[kind] > 0, f"no {kind} in the stream: {dict(seen)}"
    # memory all included, side store of episode ends too; its freed slots are reused
    assert compact.bytes_per_transition <= 7200
    held = int((compact.next_slots >= 0).sum())
    assert sum(entry is not None for entry in compact.side_store) == held
    assert len(compact.side_store) < sum(seen.values())
    # the stream's truncations are stored as such (done, timeout) and sampled with done = 0
    if "truncation" in kinds:
        assert compact.timeouts.any() and (compact.timeouts <= compact.dones).all()


def test_sample_draws_every_valid_position_and_only_those():
    env = make_breakout_env("deepmind", n_envs=1, seed=2)
    compact = FrameStackReplayBuffer(40, env.observation_space, env.action_space, "cpu")
    for data in transitions(env, 43, seed=2):  # full, cursor at 3
        compact.add(*data)
    env.close()
    picked = np.concatenate([sampled_positions(compact, 512) for _ in range(8)])
    assert set(picked.tolist()) == set(valid_positions(compact).tolist())  # oldest 3 (3, 4, 5) never
    assert set(valid_positions(compact).tolist()) == set(range(40)) - {3, 4, 5}


def test_save_load_round_trip_and_resume(tmp_path):
    env = make_breakout_env("deepmind", n_envs=2, seed=7)
    plain = ReplayBuffer(400, env.observation_space, env.action_space, "cpu", n_envs=2)
    compact = FrameStackReplayBuffer(400, env.observation_space, env.action_space, "cpu", n_envs=2)
    stream = transitions(env, 450, seed=7)
    for _ in range(300):  # wrapped once, cursor at 100
        data = next(stream)
        plain.add(*data)
        compact.add(*data)
    save_to_pkl(tmp_path / "compact.pkl", compact)  # what model.save_replay_buffer does
    save_to_pkl(tmp_path / "plain.pkl", plain)
    loaded = load_from_pkl(tmp_path / "compact.pkl")
    assert type(loaded) is FrameStackReplayBuffer
    assert_same_samples(plain, loaded, seed=1)
    # the pickle holds the frames compressed: a small part of the plain buffer's (both stacks, raw)
    compact_size = (tmp_path / "compact.pkl").stat().st_size
    plain_size = (tmp_path / "plain.pkl").stat().st_size
    space_size = len(pickle.dumps(loaded.observation_space))  # pickled too: low, high, bounds: 113 KB
    assert compact_size - space_size <= loaded.frames.nbytes / 20
    assert plain_size >= 7.9 * loaded.frames.nbytes and plain_size > 100 * (compact_size - space_size)
    # training resumes: the loaded buffer goes on with the same stream (pending frames were saved)
    for data in stream:
        plain.add(*data)
        loaded.add(*data)
    env.close()
    assert_same_samples(plain, loaded, seed=2)



class OldLayoutPickler(pickle.Pickler):
    """Pickles a buffer as Python did before the buffer had pickle hooks: its attributes, whole arrays."""

    def reducer_override(self, obj):
        if type(obj) is FrameStackReplayBuffer:
            return copyreg.__newobj__, (type(obj),), dict(obj.__dict__), None, None
        return NotImplemented


def assert_same_batches(original, loaded, seeds=(0, 1, 2), batch_size=256):
    """``sample()`` with the same global RNG state gives the same batch, every field."""
    for seed in seeds:
        batches = []
        for buffer in (original, loaded):
            np.random.seed(seed)
            batches.append(buffer.sample(batch_size))
        for field in ReplayBufferSamples._fields:
            want, have = getattr(batches[0], field), getattr(batches[1], field)
            assert (want is None and have is None) or th.equal(want, have), field


@pytest.mark.parametrize("n_adds", [230, 700], ids=["partly-filled", "wrapped"])
def test_a_checkpointed_buffer_samples_the_same_batches(tmp_path, n_adds):
    """
    The pickle SB3's ``save_replay_buffer`` writes (written rows only, compressed) loads back into a
    buffer that samples the same 3-step batches as the original, partly filled or wrapped around,
    and keeps going with the same stream; a pickle of the older whole-array layout loads too.
    """
    env = make_breakout_env("deepmind", n_envs=2, seed=9, max_agent_steps=60)
    buffer = FrameStackReplayBuffer(1000, env.observation_space, env.action_space, "cpu", n_envs=2,
                                    n_steps=3, gamma=0.99)  # 500 positions
    stream = transitions(env, n_adds + 50, seed=9)
    for _ in range(n_adds):
        buffer.add(*next(stream))
    assert buffer.full == (n_adds > 500) and (buffer.dones.any() and buffer.timeouts.any())
    save_to_pkl(tmp_path / "new.pkl", buffer)  # what model.save_replay_buffer does
    with open(tmp_path / "old.pkl", "wb") as f:
        OldLayoutPickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(buffer)
    space_size = len(pickle.dumps(buffer.observation_space))
    written = min(n_adds, 500) * 2 * 84 * 84  # bytes of the frames written
    assert (tmp_path / "new.pkl").stat().st_size - space_size <= written / 20
    assert (tmp_path / "old.pkl").stat().st_size >= buffer.frames.nbytes  # really the old layout
    for name in ("new.pkl", "old.pkl"):
        loaded = load_from_pkl(tmp_path / name)
        assert type(loaded) is FrameStackReplayBuffer and (loaded.pos, loaded.full) == (buffer.pos, buffer.full)
        assert_same_batches(buffer, loaded)
        assert_same_samples(buffer, loaded, seed=3)  # every valid position, not only those drawn
    for data in stream:  # training goes on from the loaded buffer as from the original
        buffer.add(*data)
        loaded.add(*data)
    env.close()
    assert_same_batches(buffer, loaded, seeds=(5,))


def test_memory_per_transition():
    discrete = spaces.Discrete(4)
    for n_envs in (1, 2):
        buffer = FrameStackReplayBuffer(10_000, FRAMES, discrete, "cpu", n_envs=n_envs)
        arrays = [buffer.frames, buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts,
                  buffer.episode_starts, buffer.next_slots, buffer.pending_frames, buffer.last_next_obs]
        assert buffer.nbytes == sum(a.nbytes for a in arrays) + buffer.side_nbytes
        assert buffer.frames.nbytes == 10_000 * 84 * 84
        assert buffer.actions.dtype == np.uint8 and buffer.dones.dtype == bool
        assert buffer.bytes_per_transition <= 7200
        fixed = buffer.nbytes - buffer.side_nbytes
        assert FrameStackReplayBuffer.estimate_nbytes(10_000, FRAMES, n_envs, discrete) == fixed
    assert FrameStackReplayBuffer.estimate_nbytes(1_000_000, FRAMES) <= 7.2e9
    # SB3's buffer: two 4-frame stacks per transition
    assert 2 * FRAMES.shape[0] * 84 * 84 == 56_448


def test_a_new_buffer_takes_ram_only_as_it_fills():
    """A 1M-transition buffer (7 GB) takes almost no RAM when made: a resumed run makes one, then loads
    the checkpoint's; two resumed side by side must not hold two full buffers each."""
    import psutil

    process = psutil.Process()
    before = process.memory_info().rss
    buffer = FrameStackReplayBuffer(1_000_000, FRAMES, spaces.Discrete(4), "cpu")
    assert buffer.frames.nbytes == 7_056_000_000 and (buffer.next_slots == -1).all()
    assert process.memory_info().rss - before < 100e6  # next_slots is written (-1): 4 MB


def test_bad_spaces_options_and_streams_are_refused():
    discrete = spaces.Discrete(4)
    for space in (spaces.Box(0, 255, (84, 84, 4), np.uint8), spaces.Box(0, 1, (4, 84, 84), np.float32),
                  spaces.Box(0, 255, (84, 84), np.uint8)):
        with pytest.raises(ValueError, match=r"shape \(n_stack, H, W\).*got Box of shape"):
            FrameStackReplayBuffer(100, space, discrete)
    with pytest.raises(ValueError, match="optimize_memory_usage=True"):
        FrameStackReplayBuffer(100, FRAMES, discrete, optimize_memory_usage=True)
    with pytest.raises(ValueError, match="n_steps=0"):
        FrameStackReplayBuffer(100, FRAMES, discrete, n_steps=0)
    with pytest.raises(ValueError, match="gamma=1.5"):
        FrameStackReplayBuffer(100, FRAMES, discrete, n_steps=3, gamma=1.5)
    # RL Zoo's enjoy loads models with buffer_size=1: the buffer keeps room for one stack
    assert FrameStackReplayBuffer(1, FRAMES, discrete).buffer_size == 5

    env = make_breakout_env("deepmind", n_envs=1, seed=4)
    steps = list(transitions(env, 6, seed=4))
    env.close()
    buffer = FrameStackReplayBuffer(100, FRAMES, discrete)
    with pytest.raises(ValueError, match="zero-filled episode start"):
        buffer.add(*steps[5])  # mid-episode stack into an empty buffer: its older frames are unknown
    obs, next_obs, *rest = steps[0]
    with pytest.raises(ValueError, match="shifted by one frame"):
        buffer.add(obs, obs[:, ::-1], *rest)


def test_dqn_learns_with_the_compact_buffer():
    env = make_breakout_env("deepmind", n_envs=1, seed=5)
    model = DQN(
        # train_freq=50: a few gradient steps only (a CPU step takes 0.1-0.3 s here); epsilon stays 1
        # so that no step waits for a forward pass
        "CnnPolicy", env, buffer_size=2000, learning_starts=100, batch_size=32, train_freq=50,
        exploration_initial_eps=1.0, exploration_final_eps=1.0,
        replay_buffer_class=FrameStackReplayBuffer, device="cpu", seed=0,
        policy_kwargs=dict(features_extractor_class=NatureCNN, net_arch=[]),
    )
    model.learn(500)
    model.learn(500)  # reset_num_timesteps=True: the env is reset mid-episode, without a done
    buffer = model.replay_buffer
    assert isinstance(buffer, FrameStackReplayBuffer) and buffer.pos == 1000
    # the cut transition keeps its true next frame in the side store
    assert not buffer.dones[499, 0] and buffer.next_slots[499, 0] >= 0 and buffer.episode_starts[500, 0]
    model.train(gradient_steps=1, batch_size=32)
    assert np.isfinite(model.logger.name_to_value["train/loss"])
    env.close()


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA GPU (runs on a machine with one)")
def test_samples_on_the_gpu_equal_the_plain_buffer_on_the_cpu():
    """The compact buffer on ``device="cuda"`` (what DQN gives it on a GPU) returns the same batches."""
    env = make_breakout_env("deepmind", n_envs=2, seed=3, max_agent_steps=60)
    plain = NStepReplayBuffer(600, env.observation_space, env.action_space, "cpu", n_envs=2, n_steps=3, gamma=0.9)
    compact = FrameStackReplayBuffer(600, env.observation_space, env.action_space, "cuda", n_envs=2,
                                     n_steps=3, gamma=0.9)
    for obs, next_obs, actions, rewards, dones, infos in transitions(env, 800, seed=2):
        plain.add(obs, next_obs, actions, rewards, dones, infos)
        compact.add(obs, next_obs, actions, rewards, dones, infos)
    env.close()
    assert_samples_on_device(plain, compact, np.resize(valid_positions(compact), 512), "cuda")
