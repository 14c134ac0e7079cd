"""
This package's quantile Huber loss against sb3-contrib's (same value, same gradient), and its QR-DQN
against sb3-contrib's, trained side by side on the real game from the same seed.
"""

from __future__ import annotations

import pytest
import torch as th
from sb3_contrib import QRDQN as ContribQRDQN
from sb3_contrib.common.utils import quantile_huber_loss as contrib_loss

from sb3_breakout import config as cfg
from sb3_breakout.buffers import FrameStackReplayBuffer
from sb3_breakout.envs import make_breakout_env
from sb3_breakout.qrdqn import QRDQN
from sb3_breakout.quantile_loss import block_rows, quantile_huber_loss, weighted_quantile_huber_loss
from sb3_breakout.torch_layers import nature_policy_kwargs


def both(current: th.Tensor, target: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
    """sb3-contrib's loss and gradient, then ours, for the same inputs."""
    a = current.clone().requires_grad_()
    b = current.clone().requires_grad_()
    loss_a = contrib_loss(a, target, sum_over_quantiles=True)
    loss_b = quantile_huber_loss(b, target)
    (2.5 * loss_a).backward()  # an upstream gradient other than 1 reaches both
    (2.5 * loss_b).backward()
    return loss_a.detach(), loss_b.detach(), a.grad, b.grad


@pytest.mark.parametrize("batch, n, m", [(32, 200, 200), (32, 200, 1), (7, 5, 9), (1, 1, 1), (33, 64, 64)])
def test_value_and_gradient_are_sb3_contribs(batch, n, m):
    gen = th.Generator().manual_seed(batch * 1000 + n)
    current = 3 * th.randn(batch, n, generator=gen)
    target = 3 * th.randn(batch, m, generator=gen)
    # the corners of the Huber loss and of the asymmetric weight: |d| == 1 and d == 0
    target[0, 0] = current[0, 0] + 1.0
    if n > 1:
        target[-1, -1] = current[-1, 1]
    loss_a, loss_b, grad_a, grad_b = both(current, target)
    th.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    th.testing.assert_close(grad_b, grad_a, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("batch, n, m", [(32, 200, 200), (5, 7, 3)])
def test_weighted_loss_is_the_weighted_mean_of_sb3_contribs_per_sample_losses(batch, n, m):
    th.manual_seed(1)
    current, target, weights = th.randn(batch, n) * 2, th.randn(batch, m) * 2, th.rand(batch, 1)
    a = current.clone().requires_grad_()
    b = current.clone().requires_grad_()
    per_sample = th.stack([contrib_loss(a[i:i + 1], target[i:i + 1], sum_over_quantiles=True) for i in range(batch)])
    (2.5 * (per_sample * weights.ravel()).mean()).backward()
    loss, rows = weighted_quantile_huber_loss(b, target, weights)
    (2.5 * loss).backward()
    assert loss.item() == pytest.approx((per_sample * weights.ravel()).mean().item(), rel=1e-5)
    assert th.allclose(rows, per_sample.detach(), rtol=1e-5) and not rows.requires_grad
    assert th.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-8)
    # weights of one: the unweighted loss
    assert weighted_quantile_huber_loss(current, target, th.ones(batch))[0].item() == pytest.approx(
        quantile_huber_loss(current, target).item(), rel=1e-6)


def test_the_big_case_is_cut_into_blocks_that_cover_the_batch():
    """QR-DQN's shapes on a CPU: several blocks (so the block loop is what the test above checked)."""
    rows = block_rows(32, 200, 200, th.device("cpu"))
    assert 1 < rows < 32 and 32 % rows != 0  # a short last block too
    assert block_rows(32, 200, 200, th.device("cuda")) == 32


def test_only_quantile_errors_reach_the_loss():
    """A quantile equal to every target gives zero loss and zero gradient; moving it gives both."""
    target = th.full((4, 10), 2.0)
    loss_a, loss_b, grad_a, grad_b = both(th.full((4, 3), 2.0), target)
    assert loss_b.item() == 0.0 and grad_b.abs().max().item() == 0.0
    loss_a, loss_b, grad_a, grad_b = both(th.full((4, 3), 0.0), target)
    assert loss_b.item() > 0 and (grad_b < 0).all()  # below the targets: the gradient pushes it up


@pytest.mark.parametrize("current, target, words", [
    (th.zeros(4, 3), th.zeros(4, 3, requires_grad=True), "must not require a gradient"),
    (th.zeros(4, 3, 1), th.zeros(4, 3), "must be (batch, n_quantiles)"),
    (th.zeros(4, 3), th.zeros(5, 3), "batch sizes differ"),
])
def test_bad_shapes_are_refused(current, target, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        quantile_huber_loss(current.requires_grad_(), target)


def _train(cls: type, steps: int = 400, seed: int = 3) -> ContribQRDQN:
    env = make_breakout_env("deepmind", seed=seed)
    model = cls("CnnPolicy", env, buffer_size=2000, learning_starts=100, batch_size=32, train_freq=4,
                target_update_interval=200, learning_rate=2.5e-4, seed=seed, device="cpu",
                replay_buffer_class=FrameStackReplayBuffer, policy_kwargs=nature_policy_kwargs(n_quantiles=200))
    model.learn(steps)
    env.close()
    return model


def test_qrdqn_learns_as_sb3_contribs_from_the_same_seed():
    """
    Both learners from one seed on the real game: same network at the start, same batches, so after
    ~75 updates their weights differ only by float rounding (far less than one update moves them).
    """
    th.set_num_threads(1)
    contrib = _train(ContribQRDQN)
    ours = _train(QRDQN)
    untrained = _train(ContribQRDQN, steps=100)  # learning_starts: no update yet
    assert contrib._n_updates == ours._n_updates > 70
    moved = 0.0
    for (name, a), b, c in zip(contrib.policy.state_dict().items(), ours.policy.state_dict().values(),
                               untrained.policy.state_dict().values(), strict=True):
        th.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)
        moved = max(moved, (a - c).abs().max().item())
    assert moved > 1e-3  # training moved the weights far more than the tolerance


def test_the_trainers_build_and_load_qrdqn_with_this_packages_class():
    assert cfg.learner_class("qrdqn") is QRDQN
    assert cfg.learner_class("dqn").__name__ == "DQN"
    from rl_zoo3.utils import ALGOS

    before = ALGOS["qrdqn"]
    with cfg.zoo_learners():
        assert ALGOS["qrdqn"] is QRDQN
    assert ALGOS["qrdqn"] is before is ContribQRDQN  # RL Zoo's table is left as it was
