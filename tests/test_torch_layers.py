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
