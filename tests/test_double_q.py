"""DoubleQCallback: Double DQN's target inside real DQN and QR-DQN learners on the real game, and from the YAML
under rl_zoo3.train."""

import pytest
import torch as th
from sb3_contrib import QRDQN as ContribQRDQN
from stable_baselines3 import A2C, DQN

from conftest import ENV, run_cli, small_entry, write_conf
from sb3_breakout.double_q import DoubleQCallback
from sb3_breakout.envs import make_breakout_env
from sb3_breakout.qrdqn import QRDQN
from sb3_breakout.torch_layers import nature_policy_kwargs

SMALL = dict(buffer_size=2_000, learning_starts=32, batch_size=32, train_freq=4, target_update_interval=100_000,
             seed=0, device="cpu")


def trained(algo, callback=None):
    """600 agent steps on the real game; the target network stays at its start (no sync), the online one learns."""
    env = make_breakout_env("deepmind", seed=0)
    kwargs = nature_policy_kwargs(n_quantiles=16) if algo is QRDQN else nature_policy_kwargs()
    model = algo("CnnPolicy", env, policy_kwargs=kwargs, **SMALL)
    model.learn(600, callback=callback)
    env.close()
    return model


@pytest.mark.parametrize("algo, online, target", [(DQN, "q_net", "q_net_target"),
                                                  (QRDQN, "quantile_net", "quantile_net_target")])
def test_the_target_is_the_target_networks_value_of_the_online_networks_greedy_action(algo, online, target):
    model = trained(algo, DoubleQCallback())
    online, target = getattr(model.policy, online), getattr(model.policy, target)
    batch = model.replay_buffer.sample(256)
    with th.no_grad():
        wrapped = target(batch.next_observations)
        own = type(target).forward(target, batch.next_observations)  # the target network unwrapped
        mean = (lambda v: v.mean(dim=1)) if algo is QRDQN else (lambda v: v)
        chosen = mean(online(batch.next_observations)).argmax(dim=-1)
    rows = th.arange(256)
    # what both train() loops take: the maximum over actions of the target network's output
    double_q = mean(wrapped).max(dim=-1).values
    assert th.allclose(double_q, mean(own)[rows, chosen])
    if algo is QRDQN:  # the chosen action's quantiles, as sb3-contrib's gather takes them
        assert th.equal(wrapped[rows, :, 0], own[rows, :, chosen])
    # and it is not DQN's own target: the online network has learnt away from the (unsynced) target network
    assert (double_q < mean(own).max(dim=-1).values - 1e-6).any()


def test_the_saved_model_is_the_plain_learners():
    model, plain = trained(QRDQN, DoubleQCallback()), trained(QRDQN)
    assert model.policy.state_dict().keys() == plain.policy.state_dict().keys()
    assert not all(th.equal(a, b) for a, b in zip(model.policy.state_dict().values(),
                                                  plain.policy.state_dict().values(), strict=True))  # other updates


def test_saved_zip_loads_in_sb3_contrib_and_learner_without_a_target_network_is_refused(tmp_path):
    model = trained(QRDQN, DoubleQCallback())
    model.save(tmp_path / "double_q.zip")
    loaded = ContribQRDQN.load(tmp_path / "double_q.zip", device="cpu")
    assert "forward" not in vars(loaded.policy.quantile_net_target)  # loads as a plain QR-DQN
    env = make_breakout_env("deepmind", seed=0)
    with pytest.raises(ValueError, match="A2C's policy has no online/target network pair"):
        A2C("CnnPolicy", env, n_steps=5, device="cpu").learn(5, callback=DoubleQCallback())
    env.close()


def test_rl_zoo3_train_builds_it_from_the_yaml(tmp_path):
    entry = small_entry(learning_starts=100)
    entry["callback"] = [*entry["callback"], "sb3_breakout.double_q.DoubleQCallback"]
    conf = write_conf(tmp_path, entry)
    zoo = run_cli(["-m", "rl_zoo3.train", "--algo", "dqn", "--env", ENV, "-conf", str(conf), "-n", "300",
                   "--seed", "0", "-f", "zoo", "--eval-freq", "-1", "--num-threads", "1"], cwd=tmp_path)
    assert zoo.returncode == 0, zoo.stderr[-3000:]
    assert "DoubleQCallback: q_net_target evaluates q_net's greedy action" in zoo.stdout
