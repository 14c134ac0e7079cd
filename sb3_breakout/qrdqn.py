"""
sb3-contrib's QR-DQN with the quantile Huber loss of :mod:`sb3_breakout.quantile_loss`.

Why a subclass: sb3-contrib's ``QRDQN.train`` calls its module-level ``quantile_huber_loss``, with no
argument or attribute to give it another one, and that loss made a QR-DQN update about twice as slow
as a DQN update on a CPU. This class is sb3-contrib's in everything else (constructor, policy, saved
zip, ``rl_zoo3 enjoy --algo qrdqn`` loads its models); :meth:`QRDQN.train` is sb3-contrib 2.9's loop
with the loss swapped, and the tests train it beside sb3-contrib's class from the same weights and
batches and compare the weights after every update.
"""
from __future__ import annotations

import numpy as np
import torch as th
from sb3_contrib import QRDQN as ContribQRDQN

from sb3_breakout.quantile_loss import quantile_huber_loss, weighted_quantile_huber_loss


class QRDQN(ContribQRDQN):
    """
    sb3-contrib's QR-DQN; one update computes the loss and its gradient in one cache-blocked pass.

    With a prioritized buffer (:mod:`sb3_breakout.prioritized`: its samples carry ``weights``) the loss
    is the importance-weighted mean of the samples' losses, and each sample's own loss goes back to the
    buffer as its new priority. sb3-contrib's class has no such path.
    """

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)

        losses = []
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            # n-step replay gives each transition its own discount (gamma ** steps taken)
            discounts = getattr(replay_data, "discounts", None)
            discounts = self.gamma if discounts is None else discounts

            with th.no_grad():
                next_quantiles = self.quantile_net_target(replay_data.next_observations)  # (batch, N, actions)
                # the greedy action of the target network's mean over quantiles, its N quantiles
                next_greedy_actions = next_quantiles.mean(dim=1, keepdim=True).argmax(dim=2, keepdim=True)
                next_greedy_actions = next_greedy_actions.expand(batch_size, self.n_quantiles, 1)
                next_quantiles = next_quantiles.gather(dim=2, index=next_greedy_actions).squeeze(dim=2)
                target_quantiles = replay_data.rewards + (1 - replay_data.dones) * discounts * next_quantiles

            current_quantiles = self.quantile_net(replay_data.observations)
            actions = replay_data.actions[..., None].long().expand(batch_size, self.n_quantiles, 1)
            current_quantiles = th.gather(current_quantiles, dim=2, index=actions).squeeze(dim=2)

            weights = getattr(replay_data, "weights", None)  # prioritized replay (sb3_breakout.prioritized)
            if weights is None:
                loss = quantile_huber_loss(current_quantiles, target_quantiles)
            else:
                loss, sample_losses = weighted_quantile_huber_loss(current_quantiles, target_quantiles, weights)
                self.replay_buffer.update_priorities(sample_losses.cpu().numpy())  # type: ignore[union-attr]
            losses.append(loss.item())

            self.policy.optimizer.zero_grad()
            loss.backward()
            if self.max_grad_norm is not None:
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))
