import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.dqn.policies import DQNPolicy

from sb3_breakout.torch_layers import NatureCNN

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
