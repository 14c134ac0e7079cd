"""The evaluation CLI on a real (tiny) training run: full games, consistent numbers, n-envs invariance."""

import json
import statistics

import numpy as np
import pytest

from conftest import ENV, run_cli
from sb3_breakout import evaluate
from sb3_breakout.evaluate import HUMAN_SCORE, RANDOM_SCORE, Protocol, human_normalized


def test_evaluate_writes_full_games_and_a_consistent_summary(tiny_run, tmp_path):
    out = tmp_path / "eval.json"
    result = run_cli(["-m", "sb3_breakout.evaluate", str(tiny_run), "--games", "3", "--max-frames", "8000",
                      "-o", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "human-normalised" in result.stdout and f"Wrote {out}" in result.stdout
    data = json.loads(out.read_text())
    assert data["model"] == str(tiny_run / f"{ENV}.zip") and data["profile"] == "deepmind"
    assert data["protocol"] == dict(games=3, epsilon=0.05, noop_max=30, max_frames=8000, seed=0)
    games = data["games"]
    assert [g["game"] for g in games] == [0, 1, 2] and [g["seed"] for g in games] == [0, 1, 2]

    scores = [g["score"] for g in games]
    summary = data["summary"]
    assert summary["mean"] == pytest.approx(np.mean(scores))
    assert summary["std"] == pytest.approx(np.std(scores))
    assert summary["median"] == pytest.approx(statistics.median(scores))
    assert (summary["min"], summary["max"]) == (min(scores), max(scores))
    assert summary["human_normalized"] == pytest.approx((np.mean(scores) - 1.7) / (30.5 - 1.7))

    for g in games:  # whole games: the life-loss "episodes" of the deepmind profile are not games
        # 4 frames an action, plus reset no-ops and the FIRE / no-op steps after each life loss
        assert g["frames"] <= 8000 and 0.7 * g["frames"] / 4 < g["agent_steps"] <= g["frames"] / 4
        assert g["lives_lost"] >= 2, g
        if not g["truncated"]:
            assert g["lives_lost"] == 5, g  # Breakout's game over
        assert g["score"] == int(g["score"]) >= 0  # raw points, never the -1 penalty or clipped sums


def test_results_do_not_depend_on_n_envs(tiny_run, tmp_path, capsys):
    common = [str(tiny_run), "--load-checkpoint", "1000", "--games", "4", "--epsilon", "0.3",
              "--max-frames", "3000", "--seed", "5"]
    assert evaluate.main([*common, "--n-envs", "1", "-o", str(tmp_path / "one.json")]) == 0
    assert evaluate.main([*common, "--n-envs", "3", "-o", str(tmp_path / "three.json")]) == 0
    one = json.loads((tmp_path / "one.json").read_text())
    three = json.loads((tmp_path / "three.json").read_text())
    assert one["model"].endswith("checkpoints/step_1000/model.zip") and one["num_timesteps"] == 1000
    assert one["games"] == three["games"] and one["summary"] == three["summary"]
    assert [g["seed"] for g in one["games"]] == [5, 6, 7, 8]
    # the seeds matter: the four games are not one game played four times
    assert len({(g["score"], g["frames"]) for g in one["games"]}) > 1


def test_protocol_defaults_and_reference_scores():
    assert Protocol() == Protocol(games=30, epsilon=0.05, noop_max=30, max_frames=108_000, seed=0)
    assert (RANDOM_SCORE, HUMAN_SCORE) == (1.7, 30.5)
    assert human_normalized(1.7) == 0.0 and human_normalized(30.5) == pytest.approx(1.0)
    a, b = Protocol().game_rng(3).random(5), Protocol().game_rng(3).random(5)
    assert np.array_equal(a, b) and not np.array_equal(a, Protocol().game_rng(4).random(5))


@pytest.mark.parametrize("args, names", [
    (["{run}", "--load-checkpoint", "999"], ["999", "available steps: 1000, 2000"]),
    (["{run}", "--load-best"], ["best_model.zip"]),
    (["{tmp}/nowhere"], ["nowhere", "does not exist"]),
    (["{tmp}"], ["is not a run folder"]),
    (["{run}", "--epsilon", "1.5"], ["--epsilon=1.5", "[0, 1]"]),
    (["{run}", "--games", "0"], ["--games=0", ">= 1"]),
    (["{run}", "--n-envs", "0"], ["--n-envs=0", ">= 1"]),
    (["{run}", "--max-frames", "-4"], ["--max-frames=-4", ">= 1"]),
    (["{run}/0.monitor.csv"], ["0.monitor.csv", "model .zip"]),
])
def test_bad_input_is_a_one_line_error_and_writes_nothing(tiny_run, tmp_path, capsys, args, names):
    argv = [a.format(run=tiny_run, tmp=tmp_path) for a in args]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    for name in names:
        assert name in err, err
    assert not (tiny_run / "evaluation").exists() and list(tmp_path.iterdir()) == []


def test_cli_exit_status_is_2_on_a_missing_checkpoint(tiny_run, tmp_path):
    result = run_cli(["-m", "sb3_breakout.evaluate", str(tiny_run), "--load-checkpoint", "7"], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "step_7" in result.stderr
