"""Learning-curve PNGs from a real (tiny) run's Monitor CSV."""

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from sb3_breakout import plot


def read_rows(path):
    return pd.read_csv(path, skiprows=1)


def test_plot_writes_a_png_with_a_reference_curve(tiny_run, tmp_path):
    reference = tmp_path / "reference.csv"  # same columns as docs/reference/zoo_dqn_breakout_curve.csv
    reference.write_text("steps,score\n0,1.2\n1000,1.4\n2000,1.9\n")
    out = tmp_path / "curve.png"
    result = run_cli(["-m", "sb3_breakout.plot", str(tiny_run), "--reference", str(reference),
                      "-o", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    image = mpimg.imread(out)
    assert image.shape[:2] == (800, 1000)  # 10x8 inches at 100 dpi
    assert image[..., :3].std() > 0.05  # something was drawn
    games = len(read_rows(tiny_run / "0.monitor.csv"))
    assert f"{games} games" in result.stdout


def test_run_is_read_in_agent_steps_and_seconds(tiny_run):
    rows = read_rows(tiny_run / "0.monitor.csv")
    run = plot.load_run(tiny_run)
    np.testing.assert_allclose(run.steps, np.cumsum(rows["l"]) / 4)
    np.testing.assert_allclose(run.scores, rows["r"])
    # l/4 also counts reset no-ops and the FIRE / no-op steps after life losses: a little over 2,000 in all
    assert run.steps[-1] < 2000 * 1.25 and np.all(np.diff(run.seconds) >= 0)
    steps, speed = run.speed()
    assert len(steps) > 0 and np.all(speed > 0)
    # the speed spans add up to the run's steps over its time
    assert steps[-1] == pytest.approx(run.steps[-1])
    assert run.running_mean(100)[-1] == pytest.approx(rows["r"].mean())


def test_a_resumed_monitor_file_keeps_its_order(tiny_run, tmp_path):
    """Rows appended by --resume restart t from 0 under the old header: they stay last."""
    folder = tmp_path / "resumed"
    folder.mkdir()
    text = (tiny_run / "0.monitor.csv").read_text()
    appended = "\n".join(f"{r:.1f},{length},{t:.6f}" for r, length, t in [(7.0, 800, 0.5), (9.0, 800, 1.5)])
    (folder / "0.monitor.csv").write_text(text.rstrip("\n") + "\n" + appended + "\n")
    run = plot.load_run(folder)
    assert list(run.scores[-2:]) == [7.0, 9.0] and np.all(np.diff(run.seconds) >= 0)


def test_older_resumes_are_joined_with_one_offset_for_all_games(tmp_path):
    """Two games' files, resumed once by a trainer that restarted t: every resumed game comes after every
    earlier one, the resumed segment starting where the latest earlier game ended (not per file)."""
    folder = tmp_path / "run"
    folder.mkdir()
    rows = {0: [(1.0, 400, 10.0), (2.0, 400, 30.0), (3.0, 400, 5.0)],    # t restarts: resumed
            1: [(4.0, 400, 20.0), (5.0, 400, 50.0), (6.0, 400, 8.0)]}
    for i, games in rows.items():
        (folder / f"{i}.monitor.csv").write_text(
            '#{"t_start": 1000.0, "env_id": "BreakoutNoFrameskip-v4"}\nr,l,t\n'
            + "".join(f"{r},{length},{t}\n" for r, length, t in games))
    run = plot.load_run(folder)
    assert list(run.scores) == [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    np.testing.assert_allclose(run.seconds, [10.0, 20.0, 30.0, 50.0, 55.0, 58.0])


def test_speed_spreads_each_game_over_the_time_it_was_played(tmp_path):
    """Two parallel games at 10 agent steps/s each, one of 30 short games, one of a single long game: the
    speed is 20 agent steps/s throughout, not a burst where the long game ends."""
    folder = tmp_path / "run"
    folder.mkdir()
    header = '#{"t_start": 1000.0, "env_id": "BreakoutNoFrameskip-v4"}\nr,l,t\n'
    (folder / "0.monitor.csv").write_text(header + "".join(f"1.0,400,{10.0 * k}\n" for k in range(1, 31)))
    (folder / "1.monitor.csv").write_text(header + "5.0,12000,300.0\n")
    steps, speed = plot.load_run(folder).speed(points=10)
    assert steps[-1] == pytest.approx(6_000)
    np.testing.assert_allclose(speed, 20.0)


def test_seeds_sharing_a_name_make_one_band(tiny_run, tmp_path, capsys):
    other = tmp_path / "seed2"
    other.mkdir()
    lines = (tiny_run / "0.monitor.csv").read_text().splitlines()
    header = json.loads(lines[0][1:])
    rows = [line.split(",") for line in lines[2:]]
    (other / "0.monitor.csv").write_text("#" + json.dumps(header) + "\n" + lines[1] + "\n" + "".join(
        f"{float(r) + 2},{length},{t}\n" for r, length, t in rows))
    out = tmp_path / "band.png"
    assert plot.main([f"dqn={tiny_run},{other}", str(tiny_run), "-o", str(out), "--window", "5"]) == 0
    assert mpimg.imread(out).shape[:2] == (800, 1000)
    grid, mean, std = plot.group_band([(np.array([0.0, 10.0]), np.array([0.0, 10.0])),
                                       (np.array([0.0, 20.0]), np.array([2.0, 22.0]))])
    assert grid[0] == 0 and grid[-1] == 10  # only where both seeds have data
    np.testing.assert_allclose(mean, grid + 1)
    np.testing.assert_allclose(std, 1.0)
    assert plot.parse_spec("a=x,y") == ("a", ["x", "y"])
    assert plot.parse_spec("logs/run_3/") == ("run_3", ["logs/run_3/"])


def test_a_folder_without_monitor_files_is_refused(tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    out = tmp_path / "curve.png"
    result = run_cli(["-m", "sb3_breakout.plot", str(empty), "-o", str(out)], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0, result.stderr
    assert str(empty) in result.stderr and "Monitor" in result.stderr
    assert not out.exists()


def test_bad_reference_and_flags_are_refused(tiny_run, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("step,reward\n1,2\n")
    for argv, name in (([str(tiny_run), "--reference", str(bad)], "steps,score"),
                       ([str(tiny_run), "--window", "0"], "--window=0"),
                       (["=x"], "'=x'"),
                       ([str(tmp_path / "nope")], "nope")):
        assert plot.main([*argv, "-o", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.strip().count("\n") == 0 and name in err, err
    assert not (tmp_path / "x.png").exists()
