"""DeviceFrameStackReplayBuffer (frames as a torch tensor on the device) against FrameStackReplayBuffer,
fed the same real Breakout stream."""

import pickle

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from sb3_breakout.buffers import FrameStackReplayBuffer
from sb3_breakout.device_buffer import DeviceFrameStackReplayBuffer
from sb3_breakout.envs import make_breakout_env
from sb3_breakout.torch_layers import NatureCNN
from test_buffers import FRAMES, assert_same_samples, assert_samples_on_device, transitions, valid_positions

needs_cuda = pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA GPU (runs on a machine with one)")


def filled_pair(n_envs, max_agent_steps, n_adds, n_steps=1, reset_at=(), buffer_size=600, seed=0, device="cpu"):
    """The parent on the CPU and the device buffer on ``device``, fed the same real game stream."""
    env = make_breakout_env("deepmind", n_envs=n_envs, seed=seed, max_agent_steps=max_agent_steps)
    args = (buffer_size, env.observation_space, env.action_space)
    kwargs = dict(n_envs=n_envs, n_steps=n_steps, gamma=0.9)
    host = FrameStackReplayBuffer(*args, "cpu", **kwargs)
    on_device = DeviceFrameStackReplayBuffer(*args, device, **kwargs)
    for data in transitions(env, n_adds, seed=seed, reset_at=reset_at):
        host.add(*data)
        on_device.add(*data)
    env.close()
    return host, on_device


def assert_same_batches(want_buffer, have_buffer, seeds=(0, 1), batch_size=256):
    """``sample()`` from the same global RNG state gives the same batch, every field (compared on the host)."""
    for seed in seeds:
        np.random.seed(seed)
        want = want_buffer.sample(batch_size)
        np.random.seed(seed)
        have = have_buffer.sample(batch_size)
        for field in ReplayBufferSamples._fields:
            a, b = getattr(want, field), getattr(have, field)
            assert (a is None and b is None) or th.equal(a.cpu(), b.cpu()), field


@pytest.mark.parametrize(
    "n_envs, max_agent_steps, n_adds, n_steps, reset_at",
    [(2, 60, 800, 1, (450,)), (1, 150, 900, 1, ()), (2, 60, 800, 3, (450,)), (1, 150, 900, 3, ())],
    ids=["2envs", "1env", "2envs-3step", "1env-3step"],
)
def test_same_samples_as_the_host_buffer_on_real_game(n_envs, max_agent_steps, n_adds, n_steps, reset_at):
    """
    Every valid position in every env, field by field, at several points of the stream (partly filled,
    just wrapped, wrapped more than once), with episode ends (life losses, truncations), a stream cut
    (``reset_at``: the env reset without a done) and n-step sums.
    """
    env = make_breakout_env("deepmind", n_envs=n_envs, seed=n_envs, max_agent_steps=max_agent_steps)
    args = (600, env.observation_space, env.action_space, "cpu")
    host = FrameStackReplayBuffer(*args, n_envs=n_envs, n_steps=n_steps, gamma=0.9)
    on_device = DeviceFrameStackReplayBuffer(*args, n_envs=n_envs, n_steps=n_steps, gamma=0.9)
    assert isinstance(on_device.frames, th.Tensor) and on_device.frames.dtype == th.uint8
    positions = host.buffer_size
    checkpoints = {positions // 2, positions - 1, positions, positions + 1, 2 * positions + 3, n_adds - 1,
                   *reset_at}  # at reset_at: the cut transition just took its next frame from the tensor
    for step, data in enumerate(transitions(env, n_adds, seed=n_envs, reset_at=reset_at)):
        host.add(*data)
        on_device.add(*data)
        if step in checkpoints:
            assert_same_samples(host, on_device, seed=step)
    env.close()
    assert on_device.full and on_device.dones.any() and (on_device.next_slots >= 0).any()
    assert isinstance(on_device._stacks(np.array([0]), np.array([0])), th.Tensor)  # gathered by torch
    assert_same_batches(host, on_device)
    assert_samples_on_device(host, on_device, np.resize(valid_positions(on_device), 256), "cpu")
    # as the host buffer's: obs and next obs in storages of their own (one gathered tensor, sliced, at first)
    batch = on_device.sample(32)
    assert batch.observations.is_contiguous() and batch.next_observations.is_contiguous()
    assert batch.observations.untyped_storage().data_ptr() != batch.next_observations.untyped_storage().data_ptr()
    assert th.equal(on_device.frames, th.from_numpy(host.frames))


def test_checkpoint_round_trip_uses_the_host_format(tmp_path):
    """
    The pickle ``save_replay_buffer`` writes holds the parent's compressed rows (the frames blocks
    byte for byte the parent's); it loads back into the same class, with the same samples, and
    training goes on; a buffer pickled on a CUDA device loads where CUDA is missing (onto the CPU).
    """
    env = make_breakout_env("deepmind", n_envs=2, seed=9, max_agent_steps=60)
    args = (1000, env.observation_space, env.action_space, "cpu")
    host = FrameStackReplayBuffer(*args, n_envs=2, n_steps=3, gamma=0.99)
    on_device = DeviceFrameStackReplayBuffer(*args, n_envs=2, n_steps=3, gamma=0.99)
    stream = transitions(env, 750, seed=9)
    for _ in range(700):  # wrapped once
        data = next(stream)
        host.add(*data)
        on_device.add(*data)
    host_packed = host.__getstate__()["_packed_rows"]
    device_packed = on_device.__getstate__()["_packed_rows"]
    assert device_packed["arrays"]["frames"] == host_packed["arrays"]["frames"]
    assert device_packed["arrays"].keys() == host_packed["arrays"].keys()

    save_to_pkl(tmp_path / "buffer.pkl", on_device)
    space_size = len(pickle.dumps(on_device.observation_space))
    assert (tmp_path / "buffer.pkl").stat().st_size - space_size <= on_device.frames.nbytes / 20
    loaded = load_from_pkl(tmp_path / "buffer.pkl")
    assert type(loaded) is DeviceFrameStackReplayBuffer and isinstance(loaded.frames, th.Tensor)
    assert (loaded.pos, loaded.full, loaded.device) == (on_device.pos, on_device.full, on_device.device)
    assert_same_samples(on_device, loaded, seed=1)
    assert_same_batches(host, loaded)
    for data in stream:  # training goes on from the loaded buffer as from the host one
        host.add(*data)
        loaded.add(*data)
    env.close()
    assert_same_samples(host, loaded, seed=2)

    # pickled with frames on "cuda": loads onto the CUDA device where there is one, else onto the CPU
    state = on_device.__getstate__()
    state["_device"] = th.device("cuda")
    moved = DeviceFrameStackReplayBuffer.__new__(DeviceFrameStackReplayBuffer)
    moved.__setstate__(state)
    expected = th.device("cuda") if th.cuda.is_available() else th.device("cpu")
    assert moved.device == expected and moved.frames.device.type == expected.type
    assert th.equal(moved.frames.cpu(), on_device.frames)


def test_memory_on_the_cpu_counts_the_frames_on_the_host():
    for n_envs in (1, 2):
        buffer = DeviceFrameStackReplayBuffer(10_000, FRAMES, _discrete(), "cpu", n_envs=n_envs)
        host_total = FrameStackReplayBuffer.estimate_nbytes(10_000, FRAMES, n_envs, _discrete())
        assert DeviceFrameStackReplayBuffer.estimate_nbytes(10_000, FRAMES, n_envs, _discrete(), "cpu") == host_total
        assert DeviceFrameStackReplayBuffer.estimate_device_nbytes(10_000, FRAMES, n_envs, "cpu") == 0
        assert buffer.nbytes - buffer.side_nbytes == host_total
        assert buffer.device_nbytes == 0 and buffer.host_nbytes == buffer.nbytes
    # what the RAM check of train.py computes (no action space, default device): frames on a GPU are not host RAM
    frames_1m = 1_000_000 * 84 * 84
    host_1m = FrameStackReplayBuffer.estimate_nbytes(1_000_000, FRAMES)
    on_gpu = DeviceFrameStackReplayBuffer.estimate_nbytes(1_000_000, FRAMES)
    if th.cuda.is_available():
        assert DeviceFrameStackReplayBuffer.estimate_device_nbytes(1_000_000, FRAMES) == frames_1m
        assert on_gpu == host_1m - frames_1m and on_gpu <= 12 * 1_000_000 + 200_000  # + pending, last frames
    else:  # "auto" or "cuda" without CUDA is the CPU (SB3's get_device), as the buffer itself would be
        assert on_gpu == DeviceFrameStackReplayBuffer.estimate_nbytes(1_000_000, FRAMES, 1, None, "cuda") == host_1m
        assert DeviceFrameStackReplayBuffer.estimate_device_nbytes(1_000_000, FRAMES, 1, "cuda") == 0


def _discrete():
    from gymnasium import spaces

    return spaces.Discrete(4)


def test_dqn_trains_the_same_with_either_buffer(tmp_path):
    """
    A short real SB3 DQN run with each buffer, same seed: the same batches make the same updates, so the
    weights end equal; the buffer survives ``save_replay_buffer`` / ``load_replay_buffer``.
    """
    weights, initial = {}, None
    for buffer_class in (FrameStackReplayBuffer, DeviceFrameStackReplayBuffer):
        env = make_breakout_env("deepmind", n_envs=1, seed=5)
        model = DQN(
            # train_freq=50: 6 gradient steps (a CPU step takes 0.1-0.3 s here); epsilon 1: no forward to act
            "CnnPolicy", env, buffer_size=2000, learning_starts=100, batch_size=32, train_freq=50,
            exploration_initial_eps=1.0, exploration_final_eps=1.0, replay_buffer_class=buffer_class,
            replay_buffer_kwargs=dict(n_steps=3, gamma=0.99), device="cpu", seed=0,
            policy_kwargs=dict(features_extractor_class=NatureCNN, net_arch=[]),
        )
        initial = initial or [p.detach().clone() for p in model.policy.parameters()]
        model.learn(400)
        assert type(model.replay_buffer) is buffer_class and model.replay_buffer.pos == 400
        assert np.isfinite(model.logger.name_to_value["train/loss"])
        weights[buffer_class] = [p.detach().clone() for p in model.policy.parameters()]
        if buffer_class is DeviceFrameStackReplayBuffer:
            buffer = model.replay_buffer
            assert isinstance(buffer.frames, th.Tensor)
            model.save_replay_buffer(tmp_path / "buffer.pkl")
            model.load_replay_buffer(tmp_path / "buffer.pkl")
            assert type(model.replay_buffer) is DeviceFrameStackReplayBuffer
            assert th.equal(model.replay_buffer.frames, buffer.frames)
            model.train(gradient_steps=1, batch_size=32)
            assert np.isfinite(model.logger.name_to_value["train/loss"])
        env.close()
    for host_param, device_param in zip(*weights.values(), strict=True):
        assert th.equal(host_param, device_param)
    # the updates moved the weights (equal weights are not merely the untouched initial ones)
    assert not all(th.equal(p, q) for p, q in zip(weights[FrameStackReplayBuffer], initial, strict=True))


@needs_cuda
def test_samples_on_the_gpu_equal_the_host_buffer():
    """
    On ``device="cuda"`` the frames and every sampled tensor are on the GPU and equal the host buffer's
    samples; a checkpoint loads back onto the GPU, and onto the CPU when ``device`` is set so.
    """
    host, on_device = filled_pair(n_envs=2, max_agent_steps=60, n_adds=800, n_steps=3, reset_at=(450,),
                                  seed=2, device="cuda")
    assert on_device.frames.device.type == "cuda" and on_device.device_nbytes == on_device.frames.nbytes
    assert on_device.host_nbytes == on_device.nbytes - on_device.frames.nbytes
    assert_samples_on_device(host, on_device, np.resize(valid_positions(on_device), 1024), "cuda")
    assert_same_batches(host, on_device)

    loaded = pickle.loads(pickle.dumps(on_device))
    assert loaded.frames.device.type == "cuda"
    assert_same_batches(host, loaded)
    loaded.device = "cpu"  # what load_replay_buffer does for a model on the CPU
    assert loaded.frames.device.type == "cpu" and loaded.device_nbytes == 0
    assert_same_samples(host, loaded, seed=4)
