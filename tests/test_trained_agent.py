"""
The agent the repository ships (trained-agents/, RL Zoo's rl-trained-agents layout) loads with the installed
SB3 / sb3-contrib and plays like the agent its evaluation says, not like random play: a library upgrade
that cannot read the zip, or a loader that builds another network, fails here.
"""

import json
from pathlib import Path

import numpy as np
from sb3_contrib import QRDQN as ContribQRDQN

from conftest import ENV
from sb3_breakout import evaluate as ev
from sb3_breakout import runs
from sb3_breakout.game_env import make_game_env
from sb3_breakout.qrdqn import QRDQN

AGENT = Path(__file__).resolve().parents[1] / "trained-agents" / "qrdqn" / f"{ENV}_1"
GAMES = 2  # full games played here (~2,000 agent steps each, ~1 min); the shipped evaluation played 30


def evaluation() -> dict:
    return json.loads((AGENT / "evaluation" / "final.json").read_text())


def lowest_plausible_mean(scores: list[float], games: int, quantile: float = 0.001, draws: int = 100_000) -> float:
    """
    The ``quantile`` of the mean of ``games`` games drawn (with replacement) from the shipped evaluation's
    scores: what this agent scores over ``games`` games but once in 1,000 runs of the test. Breakout's
    scores are far from normal (a tunnel makes one game 300+), so the bound comes from the games
    themselves rather than from their standard deviation.
    """
    rng = np.random.default_rng(0)
    means = rng.choice(np.asarray(scores, dtype=float), size=(draws, games)).mean(axis=1)
    return float(np.quantile(means, quantile))


def test_the_shipped_files_are_whole_and_say_what_they_are():
    data = evaluation()
    assert data["algo"] == "qrdqn" and data["env_id"] == ENV and data["protocol"]["epsilon"] == 0.05
    assert len(data["games"]) == data["protocol"]["games"] == 30
    assert not Path(data["model"]).is_absolute() and not Path(data["run"]).is_absolute()  # no machine's folders
    assert (AGENT / f"{ENV}.zip").stat().st_size <= 20e6
    assert (AGENT / "agent.gif").stat().st_size > 0
    assert "does not resume training" in (AGENT / "README.md").read_text()
    assert sorted(p.name for p in AGENT.glob("*.monitor.csv")) == [f"{i}.monitor.csv" for i in range(4)]


def test_both_qrdqn_classes_load_it_without_a_replay_of_the_runs_size():
    for cls in (ContribQRDQN, QRDQN):
        model = cls.load(AGENT / f"{ENV}.zip", device="cpu")
        assert model.num_timesteps == evaluation()["num_timesteps"]
        assert model.replay_buffer.buffer_size == 1  # buffer_size 1 in the zip: loading allocates no replay
        # the fast entry's IMPALA network (ImpalaCNN, 2,080,720) + Linear(512, 4 actions x 200 quantiles)
        assert sum(p.numel() for p in model.policy.quantile_net.parameters()) == 2_491_120


def test_it_plays_like_its_evaluation_not_like_random_play():
    data = evaluation()
    scores = [game["score"] for game in data["games"]]
    bound = lowest_plausible_mean(scores, GAMES)
    # the bound must tell an agent from random play (1.7 a game, Breakout's published random score)
    assert bound > 5 * ev.RANDOM_SCORE, f"the shipped agent is too weak for this test: bound {bound:.1f}"
    target = runs.resolve_target(str(AGENT))
    model = runs.load_model(target, device="cpu")
    # games the shipped evaluation did not play: its seeds were 0..29
    protocol = ev.Protocol(games=GAMES, seed=1000)
    results = ev.play_games(model, lambda: make_game_env(target, protocol.max_frames, protocol.noop_max),
                            protocol)
    mean = float(np.mean([r.score for r in results]))
    assert mean >= bound, (f"mean {mean:.1f} over {GAMES} games; the shipped evaluation's games "
                           f"({data['summary']['mean']:.1f} over 30) give at least {bound:.1f} once in 1,000 runs")
