"""
The fast entries as shipped (4 games, train_freq in SB3's vector steps, bf16: auto), end to end: the
precision a run measured is written into its zips and kept by --resume, evaluate, record and RL Zoo's
enjoy / record_video; tune trains the entry.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from sb3_contrib import QRDQN

from conftest import ENV, run_cli
from sb3_breakout import config as cfg

MEASURED = re.compile(r"(?:NatureCNN|ImpalaCNN) bf16=auto on cpu \(\d+ torch threads\): one update .* -> (fp32|bf16)")


# agent steps per update: DQN's recipe (1 per 4); QR-DQN fast takes half the updates (1 per 8), which reached a
# running mean of 40 sooner in wall-clock (docs/results.md)
@pytest.mark.parametrize("algo, agent_steps_per_update", [("dqn", 4), ("qrdqn", 8)])
def test_fast_entries_ship_the_speed_settings_in_sb3_units(algo, agent_steps_per_update):
    entry = cfg.load_entry(cfg.default_config(algo), ENV, "fast")
    assert entry["n_envs"] == 4 and entry["gradient_steps"] == 1
    assert entry["train_freq"] * entry["n_envs"] == agent_steps_per_update  # train_freq in vector steps
    assert "bf16='auto'" in entry["policy_kwargs"]
    assert entry["target_update_interval"] % entry["n_envs"] == 0


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory) -> Path:
    """The QR-DQN fast entry as shipped (the IMPALA network), 800 agent steps (replay 5,000, learning from step 200)."""
    root = tmp_path_factory.mktemp("fast_run")
    result = run_cli(["-m", "sb3_breakout.train", "--algo", "qrdqn", "--profile", "fast", "-n", "800", "--seed", "0",
                      "-f", "logs", "-params", "buffer_size:5000", "learning_starts:200", "--save-freq", "400",
                      "--num-threads", "1"], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    (choice,) = MEASURED.findall(result.stdout)  # measured once, at the start
    run = root / "logs" / "qrdqn" / f"{ENV}_1"
    (run / "measured.txt").write_text(choice)
    return run


def saved_bf16(zip_path: Path) -> object:
    return QRDQN.load(zip_path, device="cpu", buffer_size=1).policy_kwargs["features_extractor_kwargs"]["bf16"]


def test_the_measured_precision_is_written_into_every_zip_and_kept_on_resume(fast_run, tmp_path):
    choice = (fast_run / "measured.txt").read_text() == "bf16"
    for zip_path in (fast_run / f"{ENV}.zip", fast_run / "checkpoints" / "step_400" / "model.zip"):
        assert saved_bf16(zip_path) is choice, zip_path  # True/False, not "auto"
    # config.yml keeps the entry as written (the recipe); the zips say what this run chose
    assert "bf16='auto'" in yaml.safe_load((fast_run / ENV / "config.yml").read_text())["policy_kwargs"]

    resumed = tmp_path / "run"
    shutil.copytree(fast_run, resumed)
    result = run_cli(["-m", "sb3_breakout.train", "--resume", str(resumed), "-n", "1200", "--num-threads", "1"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not MEASURED.search(result.stdout)  # built from the checkpoint's zip: no second measurement
    model = QRDQN.load(resumed / f"{ENV}.zip", device="cpu", buffer_size=1)
    assert model.policy_kwargs["features_extractor_kwargs"]["bf16"] is choice
    assert model.num_timesteps == 1200 and model._n_updates == len(range(208, 1201, 8))  # 1 update / 8 agent steps
    # the entry's Adam (epsilon 0.01 / 32, the fused kernel) in the run and after resume
    assert (model.policy.optimizer.defaults["eps"], model.policy.optimizer.defaults["fused"]) == (0.01 / 32, True)


def test_watching_tools_work_on_a_fast_run_without_measuring_again(fast_run, tmp_path):
    log_folder = fast_run.parent.parent
    for tool in (["-m", "sb3_breakout.evaluate", str(fast_run), "--profile", "fast", "--games", "1",
                  "--max-frames", "2000", "-o", str(tmp_path / "eval.json")],
                 ["-m", "sb3_breakout.record", str(fast_run), "--max-video-frames", "20", "--format", "gif",
                  "-o", str(tmp_path / "video")]):
        result = run_cli(tool, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert not MEASURED.search(result.stdout)
    assert (tmp_path / "video.gif").is_file()
    # the entry it trained with (--profile fast names it) and its preprocessing, each under its own name
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    assert (evaluation["profile"], evaluation["preprocessing"]) == ("fast", "deepmind")
    enjoy = run_cli(["-m", "rl_zoo3.enjoy", "--algo", "qrdqn", "--env", ENV, "-f", str(log_folder), "--exp-id", "1",
                     "--no-render", "-n", "300", "--gym-packages", "sb3_breakout"], cwd=tmp_path)
    assert enjoy.returncode == 0, enjoy.stderr[-3000:]
    assert not MEASURED.search(enjoy.stdout)
    video = run_cli(["-m", "rl_zoo3.record_video", "--algo", "qrdqn", "--env", ENV, "-f", str(log_folder),
                     "--exp-id", "1", "-n", "100", "-o", str(tmp_path / "zoo_video")], cwd=tmp_path)
    assert video.returncode == 0, video.stderr[-3000:]
    assert not MEASURED.search(video.stdout)
    assert len(list((tmp_path / "zoo_video").glob("*.mp4"))) == 1


def test_tune_trains_the_fast_entry_and_writes_sb3_units(tmp_path):
    space = tmp_path / "space.yml"
    space.write_text("buffer_size: 2000\nbatch_size: 32\nrandom_steps: 100\ndecay_steps: 300\nn_quantiles: 25\n"
                     "target_update_interval: {low: 101, high: 199}\ntrain_freq: [1, 2]\ngradient_steps: 1\n")
    result = run_cli(["-m", "sb3_breakout.tune", "--algo", "qrdqn", "--profile", "fast", "-n", "400", "--n-trials",
                      "1", "--n-evaluations", "1", "--eval-episodes", "1", "--eval-max-frames", "800",
                      "--search-space", str(space), "-f", "logs", "--num-threads", "1", "--seed", "0",
                      "-params", "learning_starts:200"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    best = next((tmp_path / "logs").rglob("best.yml"))
    entry = yaml.safe_load(best.read_text())[ENV]
    assert entry["n_envs"] == 4 and entry["train_freq"] in (1, 2) and entry["gradient_steps"] == 1
    # the sampled interval as it trains with 4 games: a multiple of n_envs (SB3 syncs every interval // 4 steps)
    assert entry["target_update_interval"] % 4 == 0 and 100 <= entry["target_update_interval"] <= 199
    (trained,) = (tmp_path / "logs").rglob(f"trial_*/{ENV}/config.yml")  # what the trial's learner was built from
    trained = yaml.load(trained.read_text(), Loader=yaml.UnsafeLoader)
    for key in ("n_envs", "train_freq", "gradient_steps", "target_update_interval", "replay_buffer_kwargs"):
        assert trained[key] == entry[key], key
