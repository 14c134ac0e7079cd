"""Videos of a real (tiny) run: our GIF/MP4 decoded by real decoders, and RL Zoo's record_video."""

from functools import partial

import cv2
import numpy as np
from PIL import Image

from conftest import ENV, run_cli
from sb3_breakout import evaluate, game_env, record, runs


def decode_mp4(path):
    """All frames of an MP4 through OpenCV's own ffmpeg decoder, as RGB arrays."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    capture.release()
    return frames


def test_record_writes_a_gif_and_a_playable_mp4(tiny_run, tmp_path):
    stem = tmp_path / "videos" / "agent"
    result = run_cli(["-m", "sb3_breakout.record", str(tiny_run), "--games", "3", "--stride", "2",
                      "--max-video-frames", "80", "-o", str(stem)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stopped at 80 video frames" in result.stdout, result.stdout
    assert "80 frames of 160x210" in result.stdout, result.stdout

    with Image.open(stem.with_suffix(".gif")) as gif:
        assert gif.size == (160, 210) and gif.n_frames > 1
        assert gif.info.get("loop") == 0
    frames = decode_mp4(stem.with_suffix(".mp4"))
    assert len(frames) == 80
    assert all(f.shape == (210, 160, 3) for f in frames)
    assert np.mean([f.std() for f in frames]) > 10  # the Breakout screen, not a blank video
    assert not any(p.name.startswith(".") for p in stem.parent.iterdir())  # no temporary file left


def test_record_scales_and_plays_whole_games(tiny_run, tmp_path, capsys):
    stem = tmp_path / "big"
    assert record.main([str(tiny_run), "--load-checkpoint", "2000", "--games", "2", "--scale", "2",
                        "--max-frames", "2000", "--stride", "4", "--format", "mp4", "-o", str(stem)]) == 0
    out = capsys.readouterr().out
    # the same games as evaluate plays with the same flags
    target = runs.resolve_target(str(tiny_run), load_checkpoint=2000)
    protocol = evaluate.Protocol(games=2, max_frames=2000)
    make_env = partial(game_env.make_game_env, target, 2000)
    games = evaluate.play_games(runs.load_model(target), make_env, protocol)
    for g in games:
        assert f"game {g.game}: score {g.score:g}, {g.frames} frames, {g.lives_lost} lives lost" in out, out
    frames = decode_mp4(stem.with_suffix(".mp4"))
    assert len(frames) > 2 and all(f.shape == (420, 320, 3) for f in frames)
    assert not stem.with_suffix(".gif").exists()


def test_bad_input_is_a_one_line_error_and_writes_nothing(tiny_run, tmp_path, capsys):
    for argv, name in (([str(tiny_run), "--stride", "0"], "--stride=0"),
                       ([str(tiny_run), "--fps", "-1"], "--fps=-1"),
                       ([str(tiny_run), "--load-checkpoint", "5"], "step_5"),
                       ([str(tmp_path / "missing")], "missing")):
        assert record.main([*argv, "-o", str(tmp_path / "out" / "v")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.strip().count("\n") == 0 and name in err, err
    assert not (tmp_path / "out").exists() and not (tiny_run / "videos").exists()


def test_rl_zoo_record_video_works_on_our_run_folder(tiny_run, tmp_path):
    log_folder = tiny_run.parent.parent
    result = run_cli(["-m", "rl_zoo3.record_video", "--algo", "dqn", "--env", ENV, "-f", str(log_folder),
                      "--exp-id", "1", "-n", "200", "-o", str(tmp_path / "zoo")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    videos = list((tmp_path / "zoo").glob("*.mp4"))
    assert len(videos) == 1, list((tmp_path / "zoo").iterdir())
    frames = decode_mp4(videos[0])
    assert len(frames) >= 100 and frames[0].shape == (210, 160, 3)
