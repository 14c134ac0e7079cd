import re

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib.qrdqn.policies import QRDQNPolicy
from stable_baselines3.dqn.policies import DQNPolicy

from sb3_breakout.torch_layers import ImpalaCNN, NatureCNN, ResidualBlock, shift_randomly

CHW = spaces.Box(0, 255, (4, 84, 84), np.uint8)
HWC = spaces.Box(0, 255, (84, 84, 4), np.uint8)


def test_q_network_has_the_notebooks_parameter_count():
    policy = DQNPolicy(CHW, spaces.Discrete(4), lambda _: 2.5e-4,
                       features_extractor_class=NatureCNN, net_arch=[])
    n_params = sum(p.numel() for p in policy.q_net.parameters())
    assert n_params == 1_686_180
    # the notebooks' network, layer by layer: 3 convs, Linear(3136, 512), Linear(512, 4)
    shapes = [tuple(p.shape) for p in policy.q_net.parameters() if p.dim() > 1]
    assert shapes == [(32, 4, 8, 8), (64, 32, 4, 4), (64, 64, 3, 3), (512, 3136), (4, 512)]


def test_both_layouts_give_the_same_features():
    th.manual_seed(0)
    chw = NatureCNN(CHW)
    hwc = NatureCNN(HWC)
    hwc.load_state_dict(chw.state_dict())
    frames = th.randint(0, 256, (3, 4, 84, 84), dtype=th.uint8)
    out = chw(frames)
    assert out.shape == (3, 512)
    assert (out >= 0).all()  # ReLU after the last layer
    th.testing.assert_close(hwc(frames.permute(0, 2, 3, 1)), out)


def test_frames_are_scaled_once():
    """uint8 frames are scaled here; SB3's policy passes floats it already divided by 255."""
    th.manual_seed(0)
    cnn = NatureCNN(CHW)
    frames = th.randint(0, 256, (2, 4, 84, 84), dtype=th.uint8)
    th.testing.assert_close(cnn(frames), cnn(frames.float() / 255.0))
    # through SB3's policy (normalize_images=True, its default) the result is the same again
    policy = DQNPolicy(CHW, spaces.Discrete(4), lambda _: 1e-4, features_extractor_class=NatureCNN, net_arch=[])
    q_from_policy = policy.q_net(frames)
    extractor = policy.q_net.features_extractor
    th.testing.assert_close(q_from_policy, policy.q_net.q_net(extractor(frames)))


@pytest.mark.parametrize("shape", [(4, 20, 20), (84, 84), (1, 4, 84, 84), (30, 30, 4)])
def test_unusable_spaces_raise_a_value_error_naming_the_shape(shape):
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        NatureCNN(spaces.Box(0, 255, shape, np.uint8))


def test_speed_options_compute_the_same_network():
    th.manual_seed(0)
    reference = NatureCNN(CHW, channels_last=False)
    frames = th.randint(0, 256, (8, 4, 84, 84), dtype=th.uint8)
    fast = NatureCNN(CHW, channels_last=True)
    fast.load_state_dict(reference.state_dict())
    th.testing.assert_close(fast(frames), reference(frames), rtol=1e-4, atol=1e-5)
    bf16 = NatureCNN(CHW, bf16=True)
    bf16.load_state_dict(reference.state_dict())
    out = bf16(frames)
    assert out.dtype == th.float32  # the Q head, the loss and Adam stay in float32
    th.testing.assert_close(out, reference(frames), rtol=0.05, atol=0.02)


def short_run(policy_kwargs: dict) -> float:
    """400 real DQN steps (75 updates); returns the Huber loss on a fixed replay sample."""
    import torch.nn.functional as F
    from stable_baselines3 import DQN

    from sb3_breakout.envs import make_breakout_env

    env = make_breakout_env("deepmind", seed=0)
    model = DQN("CnnPolicy", env, buffer_size=1_000, learning_starts=100, train_freq=4, batch_size=32,
                target_update_interval=200, seed=0, device="cpu",
                policy_kwargs=dict(features_extractor_class=NatureCNN, net_arch=[], **policy_kwargs))
    model.learn(400)
    env.close()
    assert all(bool(p.isfinite().all()) for p in model.policy.parameters())
    np.random.seed(0)
    batch = model.replay_buffer.sample(256)
    with th.no_grad():
        next_q = model.q_net_target(batch.next_observations).max(1, keepdim=True)[0]
        target = batch.rewards + model.gamma * (1 - batch.dones) * next_q
        current = th.gather(model.q_net(batch.observations), 1, batch.actions.long())
    return float(F.smooth_l1_loss(current, target))


@pytest.fixture(scope="module")
def plain_loss():
    return short_run(dict(features_extractor_kwargs=dict(channels_last=False)))


@pytest.mark.parametrize("policy_kwargs", [
    dict(optimizer_kwargs=dict(fused=True)),  # the default: channels_last + fused Adam
    dict(features_extractor_kwargs=dict(bf16=True), optimizer_kwargs=dict(fused=True)),
], ids=["channels_last+fused", "bf16"])
def test_each_speed_option_trains_like_the_plain_configuration(policy_kwargs, plain_loss):
    """A short real DQN run per option: finite weights and a loss of the same scale as plain fp32 NCHW Adam."""
    loss = short_run(policy_kwargs)
    assert np.isfinite(loss) and np.isfinite(plain_loss)
    assert loss == pytest.approx(plain_loss, rel=0.5, abs=1e-3)


def test_random_shift_moves_each_frame_stack_as_one_within_the_padding():
    """DrQ's shift: every item is a window of its edge-padded frames, one offset for its 4 stacked frames."""
    th.manual_seed(0)
    frames = th.rand(200, 4, 12, 12)
    shifted = shift_randomly(frames, 2)
    assert shifted.shape == frames.shape
    padded = th.nn.functional.pad(frames, (2, 2, 2, 2), mode="replicate")
    offsets = set()
    for item in range(len(frames)):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if th.equal(shifted[item], padded[item, :, dy:dy + 12, dx:dx + 12])]
        assert matches, f"item {item} is not a window of its padded frames"
        offsets.add(matches[0])
    assert offsets == {(dy, dx) for dy in range(5) for dx in range(5)}  # every offset in [0, 4]^2 is drawn


def test_random_shift_acts_only_in_training_mode_so_acting_and_targets_see_true_frames():
    th.manual_seed(0)
    plain = NatureCNN(CHW)
    drq = NatureCNN(CHW, random_shift=4)
    drq.load_state_dict(plain.state_dict())
    frames = th.randint(0, 256, (8, 4, 84, 84), dtype=th.uint8)
    drq.eval()
    th.testing.assert_close(drq(frames), plain(frames))
    drq.train()
    assert not th.allclose(drq(frames), plain(frames))
    # in a QR-DQN policy, train() puts only the online network in training mode: the target stays exact
    policy = QRDQNPolicy(CHW, spaces.Discrete(4), lambda _: 1e-4, features_extractor_class=NatureCNN,
                         features_extractor_kwargs=dict(random_shift=4), net_arch=[], n_quantiles=8)
    policy.set_training_mode(True)
    target = policy.quantile_net_target
    assert target.features_extractor.random_shift == 4 and not target.training
    th.testing.assert_close(target(frames), target(frames))
    assert not th.equal(policy.quantile_net(frames), policy.quantile_net(frames))
    policy.set_training_mode(False)  # as SB3's collect_rollouts, evaluate and predict run it
    th.testing.assert_close(policy.quantile_net(frames), policy.quantile_net(frames))


@pytest.mark.parametrize("bad", [-1, 17, 2.5, True, "4"])
def test_bad_random_shift_raises_naming_the_value(bad):
    with pytest.raises(ValueError, match=re.escape(f"random_shift={bad!r}") + r".*\[0, 16\]"):
        NatureCNN(CHW, random_shift=bad)


def test_impala_network_has_dopamines_layers_and_qrdqns_head():
    """Three stacks (16, 32, 32) of conv, pool and two residual blocks; 84x84 frames pool to 11x11x32."""
    policy = QRDQNPolicy(CHW, spaces.Discrete(4), lambda _: 1e-3, features_extractor_class=ImpalaCNN,
                         net_arch=[], n_quantiles=200)
    net = policy.quantile_net
    assert sum(p.numel() for p in net.parameters()) == 2_491_120
    convs = [tuple(m.weight.shape) for m in net.modules() if isinstance(m, th.nn.Conv2d)]
    assert convs == [(16, 4, 3, 3)] + [(16, 16, 3, 3)] * 4 + [(32, 16, 3, 3)] + [(32, 32, 3, 3)] * 9
    assert net.features_extractor.linear[0].in_features == 11 * 11 * 32
    frames = th.randint(0, 256, (2, 4, 84, 84), dtype=th.uint8)
    assert net(frames).shape == (2, 200, 4)


def test_impala_blocks_add_their_input_back():
    """A residual block whose second convolution is zero is the identity: the skip connection is there."""
    block = ResidualBlock(8)
    th.nn.init.zeros_(block.conv2.weight)
    th.nn.init.zeros_(block.conv2.bias)
    x = th.randn(2, 8, 11, 11)
    th.testing.assert_close(block(x), x)


def test_impala_keeps_the_nature_options_layouts_and_bf16():
    th.manual_seed(0)
    chw = ImpalaCNN(CHW, channels_last=False)
    frames = th.randint(0, 256, (3, 4, 84, 84), dtype=th.uint8)
    hwc = ImpalaCNN(HWC)
    hwc.load_state_dict(chw.state_dict())
    th.testing.assert_close(hwc(frames.permute(0, 2, 3, 1)), chw(frames), rtol=1e-4, atol=1e-5)
    bf16 = ImpalaCNN(CHW, bf16=True)
    bf16.load_state_dict(chw.state_dict())
    out = bf16(frames)
    assert out.dtype == th.float32
    th.testing.assert_close(out, chw(frames), rtol=0.05, atol=0.03)
    with pytest.raises(ValueError, match=re.escape("ImpalaCNN bf16='yes'")):
        ImpalaCNN(CHW, bf16="yes")
    with pytest.raises(ValueError, match=re.escape("ImpalaCNN needs a 3-D Box of stacked frames")):
        ImpalaCNN(spaces.Box(0, 255, (84, 84), dtype=np.uint8))  # one frame, no stack axis


def test_impala_trains_in_a_short_real_qrdqn_run(tmp_path):
    """Real Breakout, sb3_breakout's QR-DQN: the weights move, stay finite, and the saved zip loads back."""
    from sb3_breakout.envs import make_breakout_env
    from sb3_breakout.qrdqn import QRDQN

    env = make_breakout_env("deepmind", seed=0)
    model = QRDQN("CnnPolicy", env, buffer_size=1_000, learning_starts=100, train_freq=4, batch_size=32,
                  seed=0, device="cpu", policy_kwargs=dict(features_extractor_class=ImpalaCNN, net_arch=[],
                                                           n_quantiles=8))
    before = [p.detach().clone() for p in model.policy.quantile_net.parameters()]
    model.learn(140)  # 10 updates (the fast entry's own runs: tests/test_fast_entries.py)
    after = list(model.policy.quantile_net.parameters())
    assert all(bool(p.isfinite().all()) for p in after)
    assert any(not th.equal(b, a) for b, a in zip(before, after, strict=True))
    model.save(tmp_path / "impala")
    loaded = QRDQN.load(tmp_path / "impala", device="cpu")
    assert isinstance(loaded.policy.quantile_net.features_extractor, ImpalaCNN)
    obs = env.reset()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0],
                                  model.predict(obs, deterministic=True)[0])
    env.close()
