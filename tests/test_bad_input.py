"""
What a hurried user types into ``python -m sb3_breakout.train`` and ``scripts/learning_curve.py train``:
every bad value is one line on stderr naming it, exit status 2, and not one file written or changed.

The table is the record of what was tried (issue 17). The commands run in-process (``main(argv)``,
the real parsers, checks, env and learner) with stderr captured at the file-descriptor level, so
that a traceback or the ALE's banner would show as extra lines; the user's four reported commands
also run as real subprocesses.
"""

import importlib.util
import shlex
import shutil
from pathlib import Path

import pytest
import torch as th
import yaml

from conftest import ENV, run_cli
from sb3_breakout import train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "learning_curve.py"
_spec = importlib.util.spec_from_file_location("learning_curve_for_bad_input", SCRIPT)
learning_curve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(learning_curve)

NO_GPU = not th.cuda.is_available()

# (tool, arguments, words the one line must contain). tool: "train" (python -m sb3_breakout.train,
# with -f logs -n 100 --no-progress unless given) or "curve" (scripts/learning_curve.py train -f runs).
# "{run}" is a copy of a finished 2,000-step run with checkpoints at 1,000 and 2,000.
BAD = [
    # -params: values that are not Python, not KEY:VALUE, nan/inf, out of range
    ("train", "-params buffer_size:abc", ["'buffer_size:abc'", "'abc' is not a Python value", "NameError"]),
    ("train", "-params learning_rate:nan", ["learning_rate=nan", "> 0"]),
    ("train", "-params learning_rate:inf", ["learning_rate=inf", "finite"]),
    ("train", "-params \"learning_rate:'lin_inf'\"", ["learning_rate='lin_inf'", "finite"]),
    ("train", "-params learning_rate:lin_inf", ["learning_rate='lin_inf'", "finite"]),
    ("train", "-params learning_rate:lin_abc", ["learning_rate='lin_abc'", "> 0"]),
    ("train", "-params stats_window_size:lin_1", ["'lin_1' is not a Python value"]),  # only the rate has schedules
    ("train", "--env-kwargs frameskip:lin_1", ["'lin_1' is not a Python value"]),
    ("train", "-params learning_rate:-1", ["learning_rate=-1", "> 0"]),
    ("train", "-params gamma:1e400", ["gamma=inf", "(0, 1]"]),
    ("train", "-params buffer_size", ["'buffer_size' is not KEY:VALUE"]),
    ("train", "-params :5", ["':5' is not KEY:VALUE"]),
    ("train", "-params batch_size:0", ["batch_size=0", ">= 1"]),
    ("train", "-params train_freq:0", ["train_freq=0", ">= 1"]),
    ("train", "-params exploration_fraction:[1]", ["exploration_fraction=[1]", "[0, 1]"]),
    ("train", "-params buffer_size:100 batch_size:1000", ["batch_size=1000", "buffer_size=100"]),
    ("train", "-params buffer_size:1e30", ["replay buffer of 1e+30 transitions", "RAM"]),
    ("train", "-params 'policy_kwargs:dict(net_arch=[64]'", ["'dict(net_arch=[64]' is not a Python value",
                                                              "SyntaxError"]),
    ("train", "-params 'policy_kwargs:dict(n_quantiles=2)'", ["'n_quantiles'", "dqn"]),
    ("train", "-params learning_rat:0.001", ["unknown hyperparameter 'learning_rat'"]),
    # ... that pass the checks and fail while the learner is built: no run folder is left behind
    ("train", "-params 'policy_kwargs:dict(net_arch=[-1])'", ["dqn learner cannot be built", "with -params",
                                                              "negative dimension -1"]),
    ("train", "-params 'policy_kwargs:dict(optimizer_kwargs=dict(betas=(2,0)))'",
     ["learner cannot be built", "Invalid beta parameter"]),
    ("train", "-params 'replay_buffer_kwargs:dict(foo=1)'", ["learner cannot be built", "'foo'"]),
    ("train", "-params optimize_memory_usage:True replay_buffer_class:None",
     ["learner cannot be built", "optimize_memory_usage"]),
    ("train", "--algo qrdqn -params 'policy_kwargs:dict(n_quantiles=0)'", ["n_quantiles=0", ">= 1"]),
    # sb3-contrib's QRDQN would drop the optimizer keywords (and the fused Adam) without a class
    ("train", "--algo qrdqn -params 'policy_kwargs:dict(optimizer_kwargs=dict(eps=1e-8))'",
     ["optimizer_kwargs={'eps': 1e-08} without optimizer_class", "dict(eps=0.01 / batch_size)",
      "optimizer_class=importlib.import_module('torch.optim').Adam"]),
    # numbers typed wrong
    ("train", "-n abc", ["-n/--n-timesteps", "'abc' is not a whole number"]),
    ("train", "-n 2.5", ["'2.5' is not a whole number"]),
    ("train", "-n nan", ["'nan' is not a whole number"]),
    ("train", "-n 0", ["--n-timesteps=0", ">= 1"]),
    ("train", "-n -5", ["--n-timesteps=-5", ">= 1"]),
    ("train", "--seed abc", ["--seed", "'abc' is not a whole number"]),
    ("train", "--seed 99999999999", ["--seed=99999999999", "4294967295"]),
    ("train", "--save-freq 1e", ["--save-freq", "'1e' is not a whole number"]),
    ("train", "--keep-checkpoints 0", ["--keep-checkpoints=0", ">= 1"]),
    ("train", "--eval-freq 50 --eval-episodes 0", ["--eval-episodes=0", ">= 1"]),
    ("train", "--log-interval 0", ["--log-interval=0", ">= 1"]),
    ("train", "--verbose 7", ["--verbose=7", "0, 1 or 2"]),
    ("train", "--num-threads 0", ["--num-threads='0'", "auto, an integer >= 1"]),
    ("train", "--num-threads many", ["--num-threads='many'", "auto, an integer >= 1"]),
    # devices
    ("train", "--device gpu", ["--device 'gpu'", "auto, cpu, cuda"]),
    ("train", "--device cuda:7", ["--device 'cuda:7'", "GPU"]),
    pytest.param("train", "--device cuda", ["--device 'cuda'", "no CUDA GPU"],
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU"), id="train --device cuda"),
    # folders and files
    ("train", "-f /proc/x", ["'/proc/x/dqn' cannot be created", "/proc/x"]),
    ("train", "-f a_file", ["log folder 'a_file' cannot be written"]),
    ("train", "-f a_file/logs", ["log folder 'a_file/logs' cannot be written"]),
    ("train", "-tb a_file", ["TensorBoard folder 'a_file' cannot be written"]),
    ("train", "-tb /proc/x", ["'/proc/x' cannot be created"]),
    ("train", "-conf a_file", ["config file 'a_file' must map entry names"]),
    ("train", "-conf /proc", ["cannot read config file '/proc'"]),
    ("train", "-conf no_such.yml", ["cannot read config file 'no_such.yml'"]),
    ("train", "-conf a_binary", ["config file 'a_binary' is not a text file"]),
    ("train", "-conf int_keys.yml", ["config file 'int_keys.yml'", "entry name 1 is not allowed"]),
    ("train", "-conf ''", ["--conf-file '' is not allowed", "a YAML file"]),
    ("train", "-f " + "a" * 300, ["log folder '" + "a" * 300, "File name too long"]),
    ("train", "-params env_kwargs:5", ["env_kwargs=5 is not allowed", "mapping"]),
    ("train", "--num-threads 100000000", ["--num-threads=100000000", "at most"]),
    # env, algorithm, profile
    ("train", "--env BreakoutNoFrameskip-v5", ["no entry for env 'BreakoutNoFrameskip-v5'",
                                                "env ids there: BreakoutNoFrameskip-v4"]),
    ("train", "--env PongNoFrameskip-v4 --profile fast", ["'PongNoFrameskip-v4'", "ids there: BreakoutNoFrameskip-v4"]),
    ("train", "--algo qrdqn --env PongNoFrameskip-v4", ["'PongNoFrameskip-v4'", "ids there: BreakoutNoFrameskip-v4"]),
    ("train", "--env-kwargs junk", ["--env-kwargs", "'junk' is not KEY:VALUE"]),
    ("train", "--env-kwargs foo:1", ["env_kwargs", "'foo'", "not accepted"]),
    ("train", "--env-kwargs frameskip:-1", ["env_kwargs", "frameskip", "-1", "not accepted"]),
    ("train", "--env-kwargs max_episode_steps:-5", ["max_episode_steps", "-5", "not accepted"]),
    ("train", "--algo ppo", ["--algo 'ppo'", "dqn, qrdqn"]),
    ("train", "--profile Fast", ["no entry 'BreakoutNoFrameskip-v4-Fast'", "deepmind, keras, fast"]),
    ("train", "--frobnicate", ["unrecognized arguments: --frobnicate"]),
    # --resume
    ("train", "--resume .", ["--resume '.' is not a run folder"]),
    ("train", "--resume ''", ["--resume '' is not allowed", "a run folder"]),
    ("train", "--resume a_file", ["--resume 'a_file' is not a run folder"]),
    ("train", "--resume nowhere", ["--resume 'nowhere' is not a run folder"]),
    ("train", "--resume logs", ["--resume 'logs' is not a run folder"]),
    ("train", "--resume {run} -n 1500", ["checkpoint is at step 2000", "-n N with N > 2000"]),
    ("train", "--resume {run} --algo qrdqn", ["--algo qrdqn does not match", "trained with dqn"]),
    ("train", "--resume {run} -n 3000 -params gamma:0.9", ["-params gamma:0.9 is not allowed with --resume"]),
    # scripts/learning_curve.py train: its own flags, and train's checks before anything starts
    ("curve", "-n abc", ["-n/--n-timesteps", "invalid int value: 'abc'"]),
    ("curve", "-n -5", ["--n-timesteps=-5"]),
    ("curve", "-n 0", ["--n-timesteps=0", ">= 1"]),
    ("curve", "-n 100 --eval-every 0", ["--eval-every=0", ">= 1"]),
    ("curve", "-n 100 --eval-games 0 --background", ["--eval-games=0", ">= 1"]),
    ("curve", "-n 100 -params buffer_size:abc --background", ["'abc' is not a Python value"]),
    ("curve", "-n 100 -params learning_rate:nan", ["learning_rate=nan"]),
    ("curve", "-n 100 --algo ppo", ["--algo 'ppo'"]),
    ("curve", "-n 100 --num-threads 0", ["--num-threads='0'"]),
    ("curve", "-n 100 --profile nope --background", ["no entry 'BreakoutNoFrameskip-v4-nope'"]),
    ("curve", "-n 100 -f a_file --background", ["log folder 'a_file' cannot be written"]),
    ("curve", "-n 100 -f /proc/x --background", ["log folder '/proc/x' cannot be created"]),
]


def case_id(case) -> str:
    values = case.values if hasattr(case, "values") else case
    return f"{values[0]} {values[1]}"


def snapshot(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``folder``; files with their size and mtime (a folder's own mtime moves when a
    run folder made for a learner that then fails to build is removed again: not counted)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in folder.rglob("*")}


def invoke(tool: str, argv: list[str]) -> int:
    """``main(argv)`` of the tool; argparse's own refusals exit (SystemExit) with their status."""
    try:
        if tool == "train":
            return train.main(argv)
        return learning_curve.main(["train", *argv])
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("tool, args, words", BAD, ids=[case_id(c) for c in BAD])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tool, args, words, tmp_path, monkeypatch, capfd, request):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_binary").write_bytes(b"\x80\x81\xfe\xff binary")
    (tmp_path / "int_keys.yml").write_text("1: {}\n")
    earlier = tmp_path / "logs" / "dqn" / f"{ENV}_1"  # an earlier run, which must stay as it is
    earlier.mkdir(parents=True)
    (earlier / "0.monitor.csv").write_text("#\nr,l,t\n1.0,100,1.0\n")
    if "{run}" in args:
        shutil.copytree(request.getfixturevalue("tiny_run"), tmp_path / "run")
    argv = shlex.split(args.replace("{run}", str(tmp_path / "run")))
    if tool == "train":
        argv = [*argv, "--no-progress"] + ([] if "--num-threads" in argv else ["--num-threads", "1"])
        argv = argv if "-f" in argv else [*argv, "-f", "logs"]
        argv = argv if {"-n", "--resume"} & set(argv) else [*argv, "-n", "100"]
    else:
        argv = argv if "-f" in argv else [*argv, "-f", "runs"]
    before = snapshot(tmp_path)
    capfd.readouterr()

    status = invoke(tool, argv)

    err = capfd.readouterr().err.strip()
    assert status == 2, err
    assert err.count("\n") == 0 and err.startswith("error: "), err
    for word in words:
        assert word in err, (word, err)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args, words", [
    ("-params buffer_size:abc", ["'abc' is not a Python value"]),
    ("-params learning_rate:nan", ["learning_rate=nan is not allowed"]),
    ("-params policy_kwargs:dict(net_arch=[-1])", ["learner cannot be built", "negative dimension -1"]),
    ("-f /proc/x", ["/proc/x"]),
])
def test_the_reported_commands_in_a_fresh_folder(args, words, tmp_path):
    """The four commands of the report, as the user ran them: a real process, exit 2, one line, no folder."""
    result = run_cli(["-m", "sb3_breakout.train", "-n", "100", "--num-threads", "1", *shlex.split(args)],
                     cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    err = result.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    for word in words:
        assert word in err, (word, err)
    assert list(tmp_path.iterdir()) == []


def test_a_resume_that_fails_to_build_keeps_its_run_folder(tiny_run, tmp_path, capfd):
    """A resumed run whose learner cannot be built: one line, exit 2, and the run folder is not removed."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    config = run_dir / ENV / "config.yml"
    entry = yaml.safe_load(config.read_text())
    entry["replay_buffer_kwargs"] = "dict(no_such_argument=1)"  # passes the checks, refused by the buffer
    config.write_text(yaml.safe_dump(entry))
    files = {p.relative_to(run_dir) for p in run_dir.rglob("*")}
    capfd.readouterr()
    status = train.main(["--resume", str(run_dir), "-n", "3000", "--no-progress", "--num-threads", "1"])
    err = capfd.readouterr().err.strip()
    assert status == 2
    assert err.count("\n") == 0 and "learner cannot be built" in err and str(run_dir) in err, err
    assert {p.relative_to(run_dir) for p in run_dir.rglob("*")} >= files  # nothing of the run removed


def test_a_resume_whose_args_file_was_edited_wrong_is_refused(tiny_run, tmp_path, capfd):
    """A hand-edited args.yml (seed: x) is checked as the command line is: one line, exit 2, run untouched."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    args_file = run_dir / ENV / "args.yml"
    args_file.write_text(args_file.read_text().replace("- - seed\n    - 0\n", "- - seed\n    - x\n"))
    assert "- x\n" in args_file.read_text()
    before = snapshot(run_dir)
    capfd.readouterr()
    status = train.main(["--resume", str(run_dir), "-n", "3000", "--no-progress", "--num-threads", "1"])
    err = capfd.readouterr().err.strip()
    assert status == 2
    assert err.count("\n") == 0 and f"the run file {args_file} has seed='x', not an integer" in err, err
    assert snapshot(run_dir) == before
