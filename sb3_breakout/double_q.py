"""
Double Q-learning's target for SB3's DQN and sb3-contrib's QR-DQN, switched on from the YAML.

Van Hasselt, Guez and Silver (2016), "Deep Reinforcement Learning with Double Q-learning": the target
network evaluates the action that the *online* network thinks best in the next state,
``r + gamma * Q_target(s', argmax_a Q_online(s', a))``, where DQN takes the target network's own
maximum, ``r + gamma * max_a Q_target(s', a)`` (an overestimate when the values are noisy). For QR-DQN
the greedy action is the online network's argmax of its mean over quantiles and the target is that
action's quantiles of the target network (Dabney et al. 2018 leave the choice open; Dopamine's
Rainbow-style agents take it).

Why a callback that wraps the target network's ``forward``: neither SB3's ``DQN`` nor sb3-contrib's
``QRDQN`` has a double-Q option, and ``rl_zoo3.train`` builds their classes from the same YAML as
``sb3_breakout.train``, passing unknown learner keywords on (a TypeError), with no hook in their
``train()`` between the target network's output and its maximum. A YAML callback is built by both
trainers. Both ``train()`` loops take ``max``/``argmax`` over actions of whatever the target network
returns for the next observations, so the wrapped network returns, for every action, the target
values of the online network's greedy action: the maximum over actions is then exactly Double DQN's
target. The online network chooses in eval mode (no DrQ shift of
:class:`~sb3_breakout.torch_layers.NatureCNN`), as the target network evaluates; its forward pass on the
next observations is the extra cost (~a quarter of an update's time on a CPU). The wrapper lives from
the start of ``learn()`` to its end. Nothing is saved differently: it is an instance attribute, not a
module or a parameter, so the zips and their ``state_dict`` are the plain learner's, ``rl_zoo3
enjoy``, ``evaluate`` and ``record`` load them as before (they never use the target network), and a
resumed run gets the wrapper again from its YAML's callback list at its start.
"""
from __future__ import annotations

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn


def greedy_actions(values: th.Tensor) -> th.Tensor:
    """Greedy action per row of a Q-network's output: ``(batch, actions)`` values or QR-DQN's
    ``(batch, n_quantiles, actions)`` quantiles (their mean over quantiles); shape ``(batch,)``."""
    return (values.mean(dim=1) if values.dim() == 3 else values).argmax(dim=-1)


def evaluated_at(values: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """``values`` (as :func:`greedy_actions` takes them) of ``actions`` in every action's place."""
    if values.dim() == 3:  # (batch, n_quantiles, actions): the chosen action's quantiles
        index = actions.view(-1, 1, 1).expand(values.shape[0], values.shape[1], 1)
    else:
        index = actions.view(-1, 1)
    return values.gather(dim=-1, index=index).expand_as(values)


class DoubleQCallback(BaseCallback):
    """
    Gives the learner Double DQN's target (module docstring): from the start of training, its target
    network returns the target values of the online network's greedy action for every action.

    Works with SB3's DQN (``q_net``/``q_net_target``) and sb3-contrib's QR-DQN, this package's subclass
    included (``quantile_net``/``quantile_net_target``).

    :param verbose: 1 (default): one line when the target is wrapped; 0 silent.
    :raises ValueError: at the start of training, a learner without one of those network pairs.
    """

    def __init__(self, verbose: int = 1) -> None:
        super().__init__(verbose)

    def _on_training_start(self) -> None:
        policy = self.model.policy
        for online_name, target_name in (("quantile_net", "quantile_net_target"), ("q_net", "q_net_target")):
            online, target = getattr(policy, online_name, None), getattr(policy, target_name, None)
            if isinstance(online, nn.Module) and isinstance(target, nn.Module):
                break
        else:
            raise ValueError(f"DoubleQCallback: {type(self.model).__name__}'s policy has no online/target "
                             "network pair (q_net/q_net_target or quantile_net/quantile_net_target)")
        own_forward = type(target).forward  # the class's: wrapping again (a second callback) changes nothing

        def double_q_forward(observations: th.Tensor) -> th.Tensor:
            values = own_forward(target, observations)
            training = online.training  # train() puts it in training mode: no DrQ shift for the choice
            online.train(False)
            try:
                with th.no_grad():
                    actions = greedy_actions(online(observations))
            finally:
                online.train(training)
            return evaluated_at(values, actions)

        # an instance attribute, not a submodule: nothing enters the state_dict or the saved zip
        object.__setattr__(target, "forward", double_q_forward)
        self._wrapped = target
        if self.verbose >= 1:
            print(f"DoubleQCallback: {target_name} evaluates {online_name}'s greedy action (Double DQN's target)",
                  flush=True)

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        """Unwrap: a later ``learn()`` without this callback trains with the learner's own target."""
        target, self._wrapped = getattr(self, "_wrapped", None), None
        if target is not None:
            target.__dict__.pop("forward", None)
