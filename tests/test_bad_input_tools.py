"""
What a hurried user types into the tools other than train (issue 17): ``python -m sb3_breakout.evaluate``,
``record``, ``plot``, ``tune`` and ``scripts/learning_curve.py report`` / ``follow``. Every bad value is
one line on stderr naming it and what is allowed, exit status 2, and not one file written or changed
(no output file, no half-made folder, no study, no lock file; existing files keep their bytes).

The table is the record of what was tried. The commands run in-process (``main(argv)``: the real
parsers, runs, models, env and SQLite) with stderr captured at the file-descriptor level, so that a
traceback, a warning or the ALE's banner would show as extra lines. The runs are copies of the session
fixtures ``tiny_run`` / ``tiny_qrdqn_run``, damaged in the copy. A database server that does not answer
is refused in bounded time (a real TCP server that accepts and stays silent).
"""

import importlib.util
import shlex
import shutil
import socket
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch as th

from conftest import ENV
from sb3_breakout import evaluate, plot, record, study_storage, tune

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "learning_curve.py"
_spec = importlib.util.spec_from_file_location("learning_curve_for_bad_input_tools", SCRIPT)
learning_curve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(learning_curve)

NO_GPU = not th.cuda.is_available()
#: A tiny study's flags, put before each tune case's own (argparse: the last value of a flag wins).
TUNE_BASE = ("-n 300 --n-evaluations 2 --eval-episodes 1 --search-space {w}/space_ok.yml -f logs "
             "--num-threads 1 --n-trials 1 ")

# (command, arguments, words the one line must contain). "{w}" is the workspace: "run" (a copy of
# tiny_run: final model, checkpoints 1000 and 2000, Monitor CSV), "qrun" (of tiny_qrdqn_run), damaged
# copies, "a_file", "empty" (a folder), "existing.json" (an output that must keep its bytes), ...
BAD = [
    # ---------------------------------------------------------------- evaluate: the model and the run
    ("evaluate", "{w}/nowhere", ["'{w}/nowhere' does not exist", "run folder, a log folder or a model .zip"]),
    ("evaluate", "''", ["'' is not allowed", "run folder"]),
    ("evaluate", "{w}/a_file", ["'{w}/a_file' is not a model .zip nor a run folder"]),
    ("evaluate", "{w}/empty", ["'{w}/empty' is not a run folder", "nor a log folder"]),
    ("evaluate", "{w}/notzip.zip", ["cannot load dqn model {w}/notzip.zip", "damaged"]),
    ("evaluate", "{w}/badzip", ["cannot load dqn model {w}/badzip/" + ENV + ".zip", "damaged"]),
    ("evaluate", "{w}/badckpt --load-checkpoint 1000", ["cannot load dqn model", "step_1000/model.zip"]),
    ("evaluate", "{w}/qrdqn_model.zip --algo dqn", ["cannot load dqn model {w}/qrdqn_model.zip",
                                                     "not a dqn model"]),
    ("evaluate", "{w}/badyaml", ["the run file {w}/badyaml/" + ENV + "/config.yml is not valid YAML at line"]),
    ("evaluate", "{w}/listyaml", ["config.yml must map names to values, got list"]),
    ("evaluate", "{w}/badargs", ["args.yml is not valid YAML"]),
    ("evaluate", "{w}/badwrap", ["the run {w}/badwrap cannot build its env", "sb3_breakout.wrapperz"]),
    ("evaluate", "{w}/badkw", ["the run file {w}/badkw/" + ENV + "/config.yml: env_kwargs=5 is not allowed",
                               "mapping", "repair it"]),
    ("evaluate", "{w}/badfs", ["the run {w}/badfs cannot build its env", "'abc'"]),
    ("evaluate", "{w}/nofinal", ["no model zip", "training not finished?", "--load-checkpoint"]),
    ("evaluate", "{w}/nogames", ["no model zip", "--load-last-checkpoint"]),
    ("evaluate", "{w}/nogames --load-last-checkpoint", ["--load-last-checkpoint: no checkpoint"]),
    ("evaluate", "{w}/run --load-checkpoint 999", ["step_999", "available steps: 1000, 2000"]),
    ("evaluate", "{w}/run --load-checkpoint -5", ["--load-checkpoint=-5", ">= 0"]),
    ("evaluate", "{w}/run --load-checkpoint 1e30",
     ["--load-checkpoint 1000000000000000", "available steps: 1000, 2000"]),
    ("evaluate", "{w}/run --load-checkpoint 1k", ["--load-checkpoint", "'1k' is not a whole number"]),
    ("evaluate", "{w}/run --load-best", ["--load-best", "best_model.zip", "--eval-freq"]),
    ("evaluate", "{w}/run --load-best --load-last-checkpoint", ["exclude each other"]),
    ("evaluate", "{w}/run/" + ENV + ".zip --load-checkpoint 1000", ["needs a run folder"]),
    ("evaluate", "{w}/run/0.monitor.csv", ["0.monitor.csv", "not a model .zip"]),
    ("evaluate", "{w}/run --env Breakot-v4", ["--env 'Breakot-v4' does not match the run's env", ENV]),
    ("evaluate", "{w}/notzip.zip --env Breakot-v4", ["no entry for env 'Breakot-v4'"]),
    ("evaluate", "{w}/empty --env Breakot-v4", ["Breakot-v4_<id>"]),
    ("evaluate", "{w}/run --profile deepmnd", ["--profile 'deepmnd' does not match the run's profile",
                                               "'deepmind'"]),
    ("evaluate", "{w}/notzip.zip --profile deepmnd", ["'deepmnd'", "profiles there: deepmind"]),
    ("evaluate", "{w}/run --algo dqnn", ["--algo", "'dqnn'", "'dqn', 'qrdqn'"]),
    # ---------------------------------------------------------------- evaluate: device, threads, protocol
    pytest.param("evaluate", "{w}/run --device cuda", ["--device 'cuda'", "no CUDA GPU"],
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU"), id="evaluate --device cuda"),
    ("evaluate", "{w}/qrun --device cuda:7", ["--device 'cuda:7'", "GPU"]),
    ("evaluate", "{w}/run --device gpu", ["--device 'gpu'", "auto, cpu, cuda"]),
    ("evaluate", "{w}/run --num-threads 100000000", ["--num-threads=100000000", "at most"]),
    ("evaluate", "{w}/run --num-threads many", ["--num-threads", "'many'"]),
    ("evaluate", "{w}/run --games 0", ["--games=0", ">= 1"]),
    ("evaluate", "{w}/run --games nan", ["--games", "'nan' is not a whole number"]),
    ("evaluate", "{w}/run --games 2.5", ["'2.5' is not a whole number"]),
    ("evaluate", "{w}/run --epsilon nan", ["--epsilon=nan", "[0, 1]"]),
    ("evaluate", "{w}/run --epsilon inf", ["--epsilon=inf", "[0, 1]"]),
    ("evaluate", "{w}/run --epsilon -0.1", ["--epsilon=-0.1", "[0, 1]"]),
    ("evaluate", "{w}/run --epsilon 5%", ["--epsilon", "'5%'"]),
    ("evaluate", "{w}/run --noop-max 0", ["--noop-max=0", ">= 1"]),
    ("evaluate", "{w}/run --noop-max 1e9", ["--max-frames=108000 with --noop-max=1000000000",
                                            "larger than --noop-max"]),
    ("evaluate", "{w}/run --max-frames 1", ["--max-frames=1 with --noop-max=30", "larger than --noop-max"]),
    ("evaluate", "{w}/run --max-frames -4", ["--max-frames=-4", ">= 1"]),
    ("evaluate", "{w}/run --seed -1", ["--seed=-1", ">= 0"]),
    ("evaluate", "{w}/run --n-envs 0", ["--n-envs=0", ">= 1"]),
    ("evaluate", "{w}/run --n-envs 100000", ["--n-envs=100000", "<= ", "per CPU"]),
    ("evaluate", "{w}/run --vec-env subprocess", ["--vec-env", "'subprocess'", "'dummy', 'subproc'"]),
    ("evaluate", "{w}/run --bogus", ["unrecognized arguments: --bogus"]),
    # ---------------------------------------------------------------- evaluate: where the JSON goes
    ("evaluate", "{w}/run -o /proc/x.json", ["-o '/proc/x.json' cannot be written", "/proc"]),
    ("evaluate", "{w}/run -o {w}/a_file/x.json", ["-o '{w}/a_file/x.json' cannot be written",
                                                  "{w}/a_file is a file, not a folder"]),
    ("evaluate", "{w}/run -o {w}/a_file/deeper/x.json", ["{w}/a_file is a file, not a folder"]),
    ("evaluate", "{w}/run -o {w}/empty", ["-o '{w}/empty' is a folder", "file path"]),
    ("evaluate", "{w}/run -o ''", ["-o '' is not allowed"]),
    ("evaluate", "{w}/run -o {w}/run/" + ENV + ".zip", ["-o '{w}/run/" + ENV + ".zip' is not allowed",
                                                        "not this tool's output", ".json"]),  # the model kept
    ("evaluate", "{w}/run -o {w}/run/0.monitor.csv", ["the file exists and is not this tool's output"]),
    ("evaluate", "{w}/" + "a" * 300, ["'{w}/" + "a" * 300 + "' is not allowed", "File name too long"]),
    ("evaluate", "{w}/run -o {w}/" + "a" * 300 + ".json", ["-o", "File name too long"]),
    ("evaluate", "{w}/run --noop-max 1e19 --max-frames 1e20", ["--noop-max=10000000000000000000",
                                                              "<= 2147483647"]),
    ("evaluate", "{w}/run --max-frames 1e20", ["--max-frames=100000000000000000000", "<= 2147483647"]),
    ("evaluate", "{w}/nowhere -o {w}/existing.json", ["does not exist"]),  # the existing file keeps its bytes
    ("evaluate", "{w}/run --epsilon 2 -o {w}/existing.json", ["--epsilon=2.0"]),
    # ---------------------------------------------------------------- record
    ("record", "{w}/run --stride 0", ["--stride=0", ">= 1"]),
    ("record", "{w}/run --stride 1.5", ["--stride", "'1.5' is not a whole number"]),
    ("record", "{w}/run --max-video-frames -1", ["--max-video-frames=-1", ">= 1"]),
    ("record", "{w}/run --max-video-frames 1e12", ["--max-video-frames=1000000000000", "GB of RAM"]),
    ("record", "{w}/run --scale 1000", ["--max-video-frames=2000 at --scale=1000", "GB of RAM"]),
    ("record", "{w}/run --scale 0", ["--scale=0", ">= 1"]),
    ("record", "{w}/run --fps nan", ["--fps=nan", "> 0"]),
    ("record", "{w}/run --fps inf", ["--fps=inf", "<= 1000"]),
    ("record", "{w}/run --fps 0", ["--fps=0.0", "> 0"]),
    ("record", "{w}/run --fps 1e9", ["--fps=1000000000.0", "<= 1000"]),
    ("record", "{w}/run --format webm", ["--format", "'webm'", "'gif', 'mp4'"]),
    ("record", "{w}/run --format", ["--format", "expected at least one argument"]),
    ("record", "{w}/run --games 0", ["--games=0", ">= 1"]),
    ("record", "{w}/run -o /proc/x", ["-o '/proc/x.gif' cannot be written"]),
    ("record", "{w}/run -o {w}/a_file/v", ["{w}/a_file is a file, not a folder"]),
    ("record", "{w}/run -o ''", ["-o '' is not allowed"]),
    ("record", "{w}/badwrap", ["cannot build its env", "sb3_breakout.wrapperz"]),
    ("record", "{w}/badyaml", ["config.yml is not valid YAML"]),
    ("record", "{w}/badzip", ["cannot load dqn model", "damaged"]),
    ("record", "{w}/nowhere", ["'{w}/nowhere' does not exist"]),
    pytest.param("record", "{w}/qrun --device cuda", ["--device 'cuda'", "no CUDA GPU"],
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU"), id="record --device cuda"),
    # ---------------------------------------------------------------- plot
    ("plot", "{w}/nowhere", ["run folder '{w}/nowhere' does not exist"]),
    ("plot", "{w}/a_file", ["run folder '{w}/a_file' is a file"]),
    ("plot", "{w}/empty", ["no Monitor files", "'{w}/empty'"]),
    ("plot", "{w}/nogames", ["'{w}/nogames' hold no finished game yet"]),
    ("plot", "{w}/badmon", ["{w}/badmon/0.monitor.csv is damaged: data row 4 (line 6)", "r,l,t"]),
    ("plot", "{w}/nohdr", ["{w}/nohdr/0.monitor.csv is not a Monitor file", "header"]),
    ("plot", "{w}/binmon", ["{w}/binmon/0.monitor.csv is not a readable Monitor file"]),
    ("plot", "{w}/run {w}/nowhere", ["'{w}/nowhere' does not exist"]),
    ("plot", "a=", ["run spec 'a=' is not allowed"]),
    ("plot", "=b", ["run spec '=b' is not allowed"]),
    ("plot", "{w}/run --window 0", ["--window=0", ">= 1"]),
    ("plot", "{w}/run --window abc", ["--window", "'abc' is not a whole number"]),
    ("plot", "{w}/run --frame-skip 0", ["--frame-skip=0", ">= 1"]),
    ("plot", "{w}/run --max-steps nan", ["--max-steps=nan", "> 0"]),
    ("plot", "{w}/run --max-steps inf", ["--max-steps=inf", "> 0"]),
    ("plot", "{w}/run --max-steps -5", ["--max-steps=-5.0", "> 0"]),
    ("plot", "{w}/run --max-steps 1", ["--max-steps=1", "no game ended by then"]),
    ("plot", "{w}/run --dpi 0", ["--dpi=0", ">= 1"]),
    ("plot", "{w}/run --dpi 100000", ["--dpi=100000", "<= 1000"]),
    ("plot", "{w}/run --reference {w}/nowhere.csv", ["cannot read reference CSV '{w}/nowhere.csv'"]),
    ("plot", "{w}/run --reference {w}/empty", ["cannot read reference CSV '{w}/empty'"]),
    ("plot", "{w}/run --reference {w}/refjunk.csv", ["'{w}/refjunk.csv'", "column score must hold numbers"]),
    ("plot", "{w}/run --reference {w}/refcols.csv", ["must have columns steps,score", "step,reward"]),
    ("plot", "{w}/run --reference {w}/run/" + ENV + ".zip", ["cannot read reference CSV"]),
    ("plot", "{w}/run --reference-label x", ["--reference-label 'x' has no --reference"]),
    ("plot", "{w}/run --title '$\\foo$'", ["--title '$\\\\foo$' is not text matplotlib can draw"]),
    ("plot", "'$\\bar$={w}/run'", ["run name '$\\\\bar$'", "matplotlib"]),
    ("plot", "{w}/run -o /proc/x.png", ["-o '/proc/x.png' cannot be written"]),
    ("plot", "{w}/run -o {w}/a_file/x.png", ["{w}/a_file is a file, not a folder"]),
    ("plot", "{w}/run -o {w}/empty", ["-o '{w}/empty' is a folder"]),
    ("plot", "{w}/run -o ''", ["-o '' is not allowed"]),
    ("plot", "{w}/run -o {w}/run/0.monitor.csv", ["-o '{w}/run/0.monitor.csv' is not allowed",
                                                 "not this tool's output", ".png"]),  # the run's games kept
    ("plot", "{w}/" + "a" * 300, ["'{w}/" + "a" * 300 + "' is not allowed", "File name too long"]),
    ("plot", "{w}/run --window 1e19", ["--window=10000000000000000000", "<= 2147483647"]),
    ("plot", "{w}/run --frame-skip 1e19", ["--frame-skip=10000000000000000000", "<= 2147483647"]),
    ("plot", "{w}/badmon -o {w}/existing.png", ["is damaged"]),  # the earlier plot keeps its bytes
    # ---------------------------------------------------------------- tune: entry, search space
    ("tune", "--algo dqnn", ["--algo 'dqnn' is not allowed", "dqn, qrdqn"]),
    ("tune", "--env Breakot-v4", ["no entry for env 'Breakot-v4'", "env ids there: BreakoutNoFrameskip-v4"]),
    ("tune", "--profile deepmnd", ["'BreakoutNoFrameskip-v4-deepmnd'", "profiles there: deepmind"]),
    ("tune", "-conf {w}/nowhere.yml", ["cannot read config file '{w}/nowhere.yml'"]),
    ("tune", "-conf {w}/a_file", ["config file '{w}/a_file' must map entry names"]),
    ("tune", "-conf {w}/empty", ["cannot read config file '{w}/empty'"]),
    ("tune", "-params lr", ["'lr' is not KEY:VALUE"]),
    ("tune", "-params learning_rate:abc", ["'learning_rate:abc'", "'abc' is not a Python value"]),
    ("tune", "-params learning_rate:nan", ["learning_rate=nan"]),
    ("tune", "-params learning_rat:0.1", ["unknown hyperparameter 'learning_rat'"]),
    ("tune", "--search-space {w}/nowhere.yml", ["cannot read search-space file '{w}/nowhere.yml'"]),
    ("tune", "--search-space {w}/empty", ["cannot read search-space file '{w}/empty'"]),
    ("tune", "--search-space {w}/space_bin.yml", ["'{w}/space_bin.yml' is not text"]),
    ("tune", "--search-space {w}/space_junk.yml", ["learning_rate='abc'", "must be a number > 0"]),
    ("tune", "--search-space {w}/space_nan.yml", ["learning_rate low='nan'"]),
    ("tune", "--search-space {w}/space_yaml.yml", ["'{w}/space_yaml.yml' is not valid YAML at line"]),
    ("tune", "--search-space {w}/space_list.yml", ["must map parameter names to ranges, got list"]),
    ("tune", "--search-space {w}/space_typo.yml", ["unknown search-space parameter 'gama'"]),
    ("tune", "--search-space {w}/space_big.yml", ["replay buffer of 100000000000 transitions", "RAM"]),
    # ---------------------------------------------------------------- tune: numbers, names
    ("tune", "--n-trials 0", ["--n-trials=0", ">= 1"]),
    ("tune", "--n-trials many", ["--n-trials", "'many' is not a whole number"]),
    ("tune", "-n 0", ["--n-timesteps=0", ">= --n-evaluations"]),
    ("tune", "-n 1.5e", ["-n/--n-timesteps", "'1.5e' is not a whole number"]),
    ("tune", "--n-evaluations -1", ["--n-evaluations=-1", ">= 1"]),
    ("tune", "--eval-episodes 0", ["--eval-episodes=0", ">= 1"]),
    ("tune", "--eval-eps nan", ["--eval-eps=nan", "[0, 1]"]),
    ("tune", "--eval-eps inf", ["--eval-eps=inf", "[0, 1]"]),
    ("tune", "--eval-max-frames 0", ["--eval-max-frames=0", ">= 1"]),
    ("tune", "--sampler tpee", ["unknown sampler 'tpee'", "tpe, random"]),
    ("tune", "--pruner medain", ["unknown pruner 'medain'", "median, halving"]),
    ("tune", "--n-startup-trials -1", ["--n-startup-trials=-1", ">= 0"]),
    ("tune", "--heartbeat-interval -1", ["--heartbeat-interval=-1", ">= 0"]),
    ("tune", "--grace-period 0", ["--grace-period=0", "larger than --heartbeat-interval"]),
    ("tune", "--max-retry -1", ["--max-retry=-1", ">= 0"]),
    ("tune", "--seed 99999999999", ["--seed=99999999999", "2**31"]),
    ("tune", "--study-name ''", ["--study-name must not be empty"]),
    ("tune", "--verbose abc", ["--verbose", "'abc'"]),
    ("tune", "--bogus", ["unrecognized arguments: --bogus"]),
    pytest.param("tune", "--device cuda", ["--device 'cuda'", "no CUDA GPU"],
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU"), id="tune --device cuda"),
    ("tune", "--device gpu", ["--device 'gpu'", "auto, cpu, cuda"]),
    ("tune", "--num-threads 100000000", ["--num-threads=100000000", "at most"]),
    # ---------------------------------------------------------------- tune: folders and storages
    ("tune", "-f {w}/a_file", ["-f/--log-folder '{w}/a_file' cannot be written", "is a file"]),
    ("tune", "-f {w}/a_file/sub", ["{w}/a_file is a file, not a folder"]),
    ("tune", "-f /proc/x", ["-f/--log-folder '/proc/x' cannot be written"]),
    ("tune", "-f {w}/" + "a" * 300, ["-f/--log-folder", "File name too long"]),
    ("tune", "-conf {w}/space_bin.yml", ["config file '{w}/space_bin.yml' is not a text file"]),
    ("tune", "--storage sqlite:///{w}/nodir/x.db", ["folder '{w}/nodir' does not exist"]),
    ("tune", "--storage sqlite:///{w}/notdb.db", ["'{w}/notdb.db' is not an SQLite database"]),
    ("tune", "--storage sqlite:///{w}/empty", ["'{w}/empty' is a folder, not a file"]),
    ("tune", "--storage sqlite:///{w}/study.db --seed 99999999999", ["--seed=99999999999"]),
    ("tune", "--storage sqlite://", ["names no SQLite file"]),
    ("tune", "--storage postgresql//127.0.0.1/optuna", ["malformed storage 'postgresql//127.0.0.1/optuna'"]),
    ("tune", "--storage postgres://u:p@127.0.0.1/db", ["unknown database 'postgres'", "postgresql://"]),
    ("tune", "--storage postgresql://u:p@127.0.0.1:1/db", ["cannot open storage 'postgresql", "u:***@127.0.0.1:1/db'",
                                                         "Connection refused"]),
    ("tune", "--storage redis://x", ["unknown database 'redis'"]),
    ("tune", "--storage study.lg", ["malformed storage 'study.lg'"]),
    ("tune", "--storage {w}/nodir/j.log", ["journal storage '{w}/nodir/j.log'", "does not exist"]),
    ("tune", "--storage {w}/a_file/j.log", ["'{w}/a_file' is a file, not a folder"]),
    ("tune", "--storage {w}/empty.log", ["'{w}/empty.log' is a folder, not a file"]),
    ("tune", "--storage {w}/junk.log", ["'{w}/junk.log' is not an Optuna journal file"]),
    # ---------------------------------------------------------------- learning_curve.py report / follow
    ("report", "{w}/nowhere --out {w}/o", ["run folder '{w}/nowhere' does not exist"]),
    ("report", "{w}/empty --out {w}/o", ["no Monitor files"]),
    ("report", "{w}/a_file --out {w}/o", ["'{w}/a_file' is a file"]),
    ("report", "{w}/nogames --out {w}/o", ["hold no finished game yet"]),
    ("report", "{w}/badmon --out {w}/o", ["0.monitor.csv is damaged"]),
    ("report", "{w}/badgreedy --out {w}/o", ["{w}/badgreedy/greedy_eval.csv is damaged at line 2"]),
    ("report", "{w}/run --names a b --out {w}/o", ["--names gives 2 name(s) for 1 run folder(s)"]),
    ("report", "{w}/run {w}/run --names a --out {w}/o", ["--names gives 1 name(s) for 2 run folder(s)"]),
    ("report", "{w}/run --names '$\\x$' --out {w}/o", ["--names '$\\\\x$' is not text matplotlib can draw"]),
    ("report", "{w}/run --reference {w}/nowhere.csv --out {w}/o", ["--reference '{w}/nowhere.csv' is not a file"]),
    ("report", "{w}/run --reference {w}/refjunk.csv --out {w}/o", ["column score must hold numbers"]),
    ("report", "{w}/run --out {w}/a_file", ["--out '{w}/a_file' cannot be written", "is a file"]),
    ("report", "{w}/run --out {w}/a_file/sub", ["{w}/a_file is a file, not a folder"]),
    ("report", "{w}/run --out /proc/x", ["--out '/proc/x' cannot be written"]),
    ("report", "{w}/run --out {w}/qrun", ["--out '{w}/qrun' is not allowed", "a run folder"]),
    ("report", "{w}/run --out {w}/otherreport", ["--out '{w}/otherreport' is not allowed",
                                                 "holds 0.monitor.csv of another run"]),
    ("report", "{w}/run --reference '{w}/ref$\\frac$.csv' --out {w}/o", ["--reference 'ref$\\\\frac$'",
                                                                        "not text matplotlib can draw"]),
    ("report", "{w}/run --solved-at nan --out {w}/o", ["--solved-at=nan", "finite"]),
    ("report", "{w}/run --solved-at inf --out {w}/o", ["--solved-at=inf", "finite"]),
    ("report", "{w}/run --solved-at x --out {w}/o", ["--solved-at", "'x'"]),
    ("follow", "{w}/nowhere", ["'{w}/nowhere' is not a run folder"]),
    ("follow", "{w}/empty", ["'{w}/empty' is not a run folder"]),
    ("follow", "{w}/a_file", ["'{w}/a_file' is not a run folder"]),
    ("follow", "{w}/" + "a" * 300, ["'{w}/" + "a" * 300 + "' is not allowed", "File name too long"]),
    ("follow", "{w}/run --eval-every 0", ["--eval-every=0", ">= 1"]),
    ("follow", "{w}/run --eval-every -5", ["--eval-every=-5", ">= 1"]),
    ("follow", "{w}/run --eval-every abc", ["--eval-every", "'abc'"]),
    ("follow", "{w}/run --eval-games 0 --eval-every 1000", ["--eval-games=0", ">= 1"]),
    ("follow", "{w}/badckpt --eval-every 1000 --eval-games 1", ["cannot load dqn model", "step_1000/model.zip"]),
    ("follow", "{w}/badgreedy --eval-every 1000", ["greedy_eval.csv is damaged"]),
    ("follow", "", ["the following arguments are required: run_dir"]),
]


def case_id(case) -> str:
    values = case.values if hasattr(case, "values") else case
    return f"{values[0]} {values[1]}"


def snapshot(*folders: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``folders``; files with their size and mtime."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for folder in folders for p in folder.rglob("*")}


def replace(path: Path, data: str | bytes) -> None:
    """Give ``path`` new content (a new file: a copy's damage never reaches the fixture it came from)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


@pytest.fixture(scope="module")
def workspace(tiny_run, tiny_qrdqn_run, tmp_path_factory):
    """The runs, copied, and their damaged copies (see the table's comment)."""
    w = tmp_path_factory.mktemp("bad_input_tools")
    config = f"{ENV}/config.yml"
    shutil.copytree(tiny_run, w / "run")
    shutil.copytree(tiny_qrdqn_run, w / "qrun")
    shutil.copy(tiny_qrdqn_run / f"{ENV}.zip", w / "qrdqn_model.zip")
    without_checkpoints = shutil.ignore_patterns("checkpoints")
    for name in ("badzip", "badyaml", "listyaml", "badargs", "badwrap", "badfs", "badkw", "badmon", "nohdr",
                 "binmon", "badgreedy"):
        shutil.copytree(tiny_run, w / name, ignore=without_checkpoints)
    shutil.copytree(tiny_run, w / "badckpt")
    shutil.copytree(tiny_run, w / "nofinal")
    (w / "nofinal" / f"{ENV}.zip").unlink()
    zip_bytes = (tiny_run / f"{ENV}.zip").read_bytes()
    replace(w / "badzip" / f"{ENV}.zip", zip_bytes[:3000])  # a copy cut short
    replace(w / "badckpt" / "checkpoints" / "step_1000" / "model.zip", zip_bytes[:2000])
    replace(w / "badyaml" / config, "frame_stack: [4\n  bad: : yaml\n")
    replace(w / "listyaml" / config, "- a\n- b\n")
    replace(w / "badargs" / f"{ENV}/args.yml", "%% junk [\n")
    text = (tiny_run / config).read_text()
    replace(w / "badwrap" / config, text.replace("sb3_breakout.wrappers", "sb3_breakout.wrapperz"))
    replace(w / "badfs" / config, text.replace("frame_stack: 4", "frame_stack: abc"))
    assert "env_kwargs:\n  max_episode_steps: 40000\n" in text
    replace(w / "badkw" / config, text.replace("env_kwargs:\n  max_episode_steps: 40000\n", "env_kwargs: 5\n"))
    monitor = (tiny_run / "0.monitor.csv").read_text().splitlines()
    replace(w / "badmon" / "0.monitor.csv", "\n".join([*monitor[:5], "abc,def,ghi", *monitor[5:]]) + "\n")
    replace(w / "nohdr" / "0.monitor.csv", "\n".join(monitor[1:]) + "\n")
    replace(w / "binmon" / "0.monitor.csv", b"#\xff\xfe\x00garbage\n")
    replace(w / "badgreedy" / "greedy_eval.csv", "step,monitor_step,mean,std,scores\nabc,,1,1,1 2\n")
    nogames = w / "nogames" / ENV  # a run just started: its config, a Monitor file without games
    nogames.mkdir(parents=True)
    for name in ("config.yml", "args.yml"):
        shutil.copy(tiny_run / ENV / name, nogames / name)
    (w / "nogames" / "0.monitor.csv").write_text("\n".join(monitor[:2]) + "\n")
    (w / "empty").mkdir()
    (w / "empty.log").mkdir()
    (w / "a_file").write_text("not a folder\n")
    (w / "notzip.zip").write_text("garbage\n")
    (w / "existing.json").write_text("{\"keep\": true}\n")
    (w / "existing.png").write_bytes(b"\x89PNG an earlier plot\n")
    (w / "refjunk.csv").write_text("steps,score\n0,abc\n100,def\n")
    (w / "refcols.csv").write_text("step,reward\n0,1\n")
    (w / "ref$\\frac$.csv").write_text("steps,score\n0,1\n100,2\n")  # a label matplotlib cannot draw
    (w / "otherreport").mkdir()  # a report of another run: its copy of that run's games
    replace(w / "otherreport" / "0.monitor.csv", "\n".join(['#{"t_start": 1.0, "env_id": "x"}', *monitor[1:]]) + "\n")
    (w / "space_ok.yml").write_text("learning_rate: {low: 1.0e-4, high: 1.0e-3}\n")
    (w / "space_bin.yml").write_bytes(b"\x00\xff\xfe binary")
    (w / "space_junk.yml").write_text("learning_rate: [abc, 1]\n")
    (w / "space_nan.yml").write_text("learning_rate: {low: nan, high: 1}\n")
    (w / "space_yaml.yml").write_text("a: [\n")
    (w / "space_list.yml").write_text("- learning_rate\n")
    (w / "space_typo.yml").write_text("gama: [0.99]\n")
    (w / "space_big.yml").write_text("buffer_size: {low: 1000, high: 100000000000}\n")
    (w / "notdb.db").write_text("junk\n")
    (w / "junk.log").write_text("not json\n")
    optuna.create_study(study_name="kept", storage=f"sqlite:///{w / 'study.db'}")  # an existing study
    return w


def invoke(command: str, argv: list[str]) -> int:
    """``main(argv)`` of the command; argparse's own refusals exit (SystemExit) with their status."""
    mains = {"evaluate": evaluate.main, "record": record.main, "plot": plot.main, "tune": tune.main}
    try:
        if command in mains:
            return mains[command](argv)
        return learning_curve.main([command, *argv])
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("command, args, words", BAD, ids=[case_id(c) for c in BAD])
def test_bad_input_is_one_line_exit_2_and_nothing_written(command, args, words, workspace, tmp_path, monkeypatch,
                                                          capfd):
    monkeypatch.chdir(tmp_path)  # where relative outputs (learning_curve.png, logs/) would go
    if command == "tune":
        args = TUNE_BASE + args
    argv = shlex.split(args.replace("{w}", str(workspace)))
    before = snapshot(workspace, tmp_path)
    capfd.readouterr()

    status = invoke(command, argv)

    err = capfd.readouterr().err.strip()
    assert status == 2, err
    assert err.count("\n") == 0 and err.startswith("error: "), err
    for word in words:
        assert word.replace("{w}", str(workspace)) in err, (word, err)
    assert snapshot(workspace, tmp_path) == before
    assert (workspace / "existing.json").read_text() == "{\"keep\": true}\n"


class SilentServer:
    """A TCP server that accepts connections and never answers (a database host that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.clients: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.clients.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.sock.close()


def test_a_database_server_that_does_not_answer_is_refused_in_bounded_time(workspace, tmp_path, monkeypatch,
                                                                            capfd):
    """PostgreSQL at a host that accepts and stays silent: one line within the connect timeout, nothing made."""
    monkeypatch.chdir(tmp_path)
    server = SilentServer()
    try:
        argv = shlex.split((TUNE_BASE + f"--storage postgresql://u:p@127.0.0.1:{server.port}/db")
                           .replace("{w}", str(workspace)))
        capfd.readouterr()
        start = time.monotonic()
        status = invoke("tune", argv)
        elapsed = time.monotonic() - start
    finally:
        server.close()
    err = capfd.readouterr().err.strip()
    assert status == 2 and err.count("\n") == 0 and err.startswith("error: cannot open storage"), err
    assert f"127.0.0.1:{server.port}" in err and "timeout" in err.lower(), err
    assert elapsed < 3 * study_storage.CONNECT_TIMEOUT_S, elapsed
    assert list(tmp_path.iterdir()) == []
