"""DoubleQCallback: Double DQN's target inside real DQN and QR-DQN learners on the real game, and from the YAML
under rl_zoo3.train."""

import pytest
import torch as th
from sb3_contrib import QRDQN as ContribQRDQN
from stable_baselines3 import A2C, DQN
from stable_baselines3.common.callbacks import BaseCallback

from conftest import ENV, run_cli, small_entry, write_conf
from sb3_breakout.double_q import DoubleQCallback
from sb3_breakout.envs import make_breakout_env
from sb3_breakout.qrdqn import QRDQN
from sb3_breakout.torch_layers import nature_policy_kwargs

SMALL = dict(buffer_size=2_000, learning_starts=32, batch_size=32, train_freq=4, target_update_interval=100_000,
             seed=0, device="cpu")
STEPS = 600


class TargetProbe(BaseCallback):
    """At the last step of learn(), on 256 replayed next observations: what the learner's target network
    returns (as train() sees it), the target network's own output and the online network's greedy actions."""

    def __init__(self, online: str, target: str):
        super().__init__()
        self.names, self.seen = (online, target), None

    def _on_step(self):
        if self.num_timesteps == STEPS:
            online, target = (getattr(self.model.policy, name) for name in self.names)
            batch = self.model.replay_buffer.sample(256)
            with th.no_grad():
                self.seen = (target(batch.next_observations), type(target).forward(target, batch.next_observations),
                             online(batch.next_observations))
        return True


def trained(algo, *callbacks, steps=STEPS):
    """``steps`` agent steps on the real game; the target network stays at its start (no sync), the online one
    learns."""
    env = make_breakout_env("deepmind", seed=0)
    kwargs = nature_policy_kwargs(n_quantiles=16) if algo is QRDQN else nature_policy_kwargs()
    model = algo("CnnPolicy", env, policy_kwargs=kwargs, **SMALL)
    model.learn(steps, callback=list(callbacks))
    env.close()
    return model


@pytest.mark.parametrize("algo, online, target", [(DQN, "q_net", "q_net_target"),
                                                  (QRDQN, "quantile_net", "quantile_net_target")])
def test_the_target_is_the_target_networks_value_of_the_online_networks_greedy_action(algo, online, target):
    probe = TargetProbe(online, target)
    model = trained(algo, DoubleQCallback(), probe)
    wrapped, own, online_values = probe.seen
    mean = (lambda v: v.mean(dim=1)) if algo is QRDQN else (lambda v: v)
    chosen, rows = mean(online_values).argmax(dim=-1), th.arange(256)
    # what both train() loops take: the maximum over actions of the target network's output
    double_q = mean(wrapped).max(dim=-1).values
    assert th.allclose(double_q, mean(own)[rows, chosen])
    if algo is QRDQN:  # the chosen action's quantiles, as sb3-contrib's gather takes them
        assert th.equal(wrapped[rows, :, 0], own[rows, :, chosen])
    # and it is not DQN's own target: the online network has learnt away from the (unsynced) target network
    assert (double_q < mean(own).max(dim=-1).values - 1e-6).any()
    # after learn() the learner's own target network again
    assert "forward" not in vars(getattr(model.policy, target))


def test_the_updates_change_and_the_saved_model_is_the_plain_learners(tmp_path):
    # 300 agent steps: 67 updates, the first one the same with both targets (the networks start equal)
    model, plain, again = (trained(QRDQN, *callbacks, steps=300) for callbacks in ([DoubleQCallback()], [], []))
    weights = [m.policy.state_dict() for m in (model, plain, again)]
    assert weights[0].keys() == weights[1].keys()
    assert all(th.equal(a, b) for a, b in zip(weights[1].values(), weights[2].values(), strict=True))  # deterministic
    assert not all(th.equal(a, b) for a, b in zip(weights[0].values(), weights[1].values(), strict=True))
    model.save(tmp_path / "double_q.zip")
    loaded = ContribQRDQN.load(tmp_path / "double_q.zip", device="cpu")  # sb3-contrib's own class loads it
    assert all(th.equal(a, b) for a, b in zip(loaded.policy.state_dict().values(), weights[0].values(), strict=True))


def test_a_learner_without_a_target_network_is_refused():
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
