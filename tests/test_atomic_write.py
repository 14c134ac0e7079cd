"""
A full disk while a tool writes its output loses nothing already saved: the earlier copy keeps its
bytes, no temporary file is left, and the tool says so in one line with exit status 1.

The full disk is a real one for the tool's process: ``RLIMIT_FSIZE`` set at its start with SIGXFSZ
ignored, so a write past the limit fails with EFBIG as one on a full disk fails with ENOSPC (see
tests/test_chaos.py). The tools run as the user runs them, in a subprocess, on a copy of the session's
tiny run; their stdout and stderr are pipes (files would fall under the limit too).
"""

import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "learning_curve.py"


def run_limited(args, cwd, limit=None):
    """``python <args>`` with files limited to ``limit`` bytes (None: no limit)."""
    def setup():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          preexec_fn=setup)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def assert_refused_whole(result, path: Path, before: bytes):
    err = result.stderr.strip()
    assert result.returncode == 1, result.stderr[-3000:]
    assert err.count("\n") == 0, err
    assert err.startswith(f"error: {path} was not written: File too large") and "previous copy is kept" in err, err
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []


def test_evaluate_on_a_full_disk_keeps_the_earlier_result(tiny_run, tmp_path):
    out = tmp_path / "eval.json"
    command = ["-m", "sb3_breakout.evaluate", str(tiny_run), "--games", "1", "--max-frames", "2000",
               "--num-threads", "1", "-o", str(out)]
    assert run_limited(command, tmp_path).returncode == 0
    before = out.read_bytes()
    assert_refused_whole(run_limited([*command, "--seed", "5"], tmp_path, limit=len(before) // 2), out, before)


def test_record_on_a_full_disk_keeps_the_earlier_video(tiny_run, tmp_path):
    # ffmpeg writes an MP4's index after the last frame: a cut file does not play, and imageio-ffmpeg did
    # not look at ffmpeg's exit status, so the cut file replaced the good one and the tool said "Wrote"
    stem = tmp_path / "v"
    command = ["-m", "sb3_breakout.record", str(tiny_run), "--games", "1", "--max-frames", "2000",
               "--max-video-frames", "60", "--num-threads", "1", "-o", str(stem)]
    for fmt in ("mp4", "gif"):
        assert run_limited([*command, "--format", fmt], tmp_path).returncode == 0
        path = stem.with_suffix(f".{fmt}")
        before = path.read_bytes()
        result = run_limited([*command, "--format", fmt, "--seed", "5"], tmp_path, limit=len(before) // 2)
        assert_refused_whole(result, path, before)


def test_plot_and_report_on_a_full_disk_keep_the_earlier_files(tiny_run, tmp_path):
    png = tmp_path / "curve.png"
    command = ["-m", "sb3_breakout.plot", str(tiny_run), "-o", str(png)]
    assert run_limited(command, tmp_path).returncode == 0
    before = png.read_bytes()
    assert_refused_whole(run_limited([*command, "--dpi", "300"], tmp_path, limit=len(before) // 2), png, before)

    # report copies the run's Monitor CSV beside its plot: a copy cut short read back as fewer games
    out = tmp_path / "report"
    command = [str(SCRIPT), "report", str(tiny_run), "--out", str(out)]
    assert run_limited(command, tmp_path).returncode == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    monitor = out / "0.monitor.csv"
    result = run_limited(command, tmp_path, limit=len(files["0.monitor.csv"]) // 2)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr[-3000:]
    assert "was not written: File too large" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert monitor.read_bytes() == files["0.monitor.csv"]


def test_a_greedy_check_on_a_full_disk_keeps_the_earlier_checks(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    greedy = run_dir / "greedy_eval.csv"
    greedy.write_text("step,monitor_step,mean,std,scores\n1000,1100,1.00,0.00,1\n")  # 1000 checked, 2000 to do
    before = greedy.read_bytes()
    command = [str(SCRIPT), "follow", str(run_dir), "--eval-every", "1000", "--eval-games", "1"]
    result = run_limited(command, tmp_path, limit=len(before) + 10)  # the new row does not fit
    assert_refused_whole(result, greedy, before)
    # room again: the check is made, after the earlier one, and the file reads as two checks
    assert run_limited(command, tmp_path).returncode == 0
    lines = greedy.read_text().splitlines()
    assert lines[:2] == before.decode().splitlines() and len(lines) == 3 and lines[2].startswith("2000,")


def test_an_empty_greedy_file_left_by_an_older_version_is_begun_again(tiny_run, tmp_path):
    # an older version appended in place: a full disk at its first check left a 0-byte file, on which
    # every later check failed after playing its games
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "greedy_eval.csv").write_text("")
    result = run_limited([str(SCRIPT), "follow", str(run_dir), "--eval-every", "2000", "--eval-games", "1"],
                         tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (run_dir / "greedy_eval.csv").read_text().splitlines()
    assert lines[0] == "step,monitor_step,mean,std,scores" and lines[1].startswith("2000,") and len(lines) == 2
