"""
``python -m sb3_breakout.record``: play games with a trained agent and write a GIF and an MP4.

Headless: the env renders with ``render_mode="rgb_array"`` (the ALE's own 210x160 RGB screen), no
display is opened. The agent plays as :mod:`sb3_breakout.evaluate` plays (the run's own wrappers
and frame stack, epsilon-greedy, per-game seeds: game ``i`` of ``record`` is game ``i`` of
``evaluate`` with the same flags), one video frame every ``--stride`` agent steps, with the game's
raw score, lives and game number drawn on it (OpenCV ``putText``).

Outputs ``<stem>.gif`` (looping, Pillow) and ``<stem>.mp4`` (H.264, ``yuv420p``, through the
ffmpeg binary of ``imageio-ffmpeg``: plays in browsers and players), ``<stem>`` being
``<run>/videos/<model>`` unless ``-o`` says otherwise. RL Zoo's ``python -m rl_zoo3.record_video``
also works on our run folders; this one adds the GIF, the score overlay and whole games.

The frames are held in memory until written (about 100 KB each at ``--scale 1``, four times that
at ``--scale 2``): ``--max-video-frames`` (2000) bounds it. The GIF merges identical consecutive
frames, so it may count fewer frames than the MP4.

Exit status: 0 done, 2 bad input (a one-line error naming the bad value; nothing written).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import psutil

from sb3_breakout import config as cfg
from sb3_breakout.atomic_write import OutputNotWritten, replace_atomically
from sb3_breakout.cli import OneLineArgumentParser, check_output_file, whole_number
from sb3_breakout.evaluate import (
    Protocol,
    add_protocol_arguments,
    check_env_builds,
    epsilon_greedy,
    first_game,
    new_game,
    protocol_from,
    queue_game,
)
from sb3_breakout.game_env import make_game_env
from sb3_breakout.runs import Target, add_target_arguments, default_output, load_model, target_from

FORMATS = ("gif", "mp4")
#: Bytes of one RGB screen of the ALE (210 x 160 x 3) at --scale 1.
SCREEN_BYTES = 210 * 160 * 3


def annotate(frame: np.ndarray, text: str, scale: int = 1) -> np.ndarray:
    """
    ``frame`` enlarged ``scale`` times (nearest neighbour, crisp pixels) with ``text`` in white on the
    black strip under Breakout's paddle (the screen's bottom rows).

    :param frame: an RGB screen, ``(H, W, 3)`` uint8.
    :return: a new ``(H*scale, W*scale, 3)`` uint8 array.
    """
    out = np.ascontiguousarray(frame)
    if scale != 1:
        out = cv2.resize(out, (out.shape[1] * scale, out.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    else:
        out = out.copy()
    cv2.putText(out, text, (2 * scale, out.shape[0] - 3 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.3 * scale,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_gif(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """
    A looping GIF (Pillow through imageio), written whole before it replaces ``path``. It is encoded in
    memory first: imageio's writer tries a failed write again when it is garbage-collected, and prints
    that second failure's traceback.
    """
    import imageio.v3 as iio

    data = iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    replace_atomically(path, lambda tmp: tmp.write_bytes(data))


#: ffmpeg's messages for a write that found no room, and their errno
_FFMPEG_NO_ROOM = {"No space left on device": errno.ENOSPC, "File too large": errno.EFBIG,
                   "Disk quota exceeded": errno.EDQUOT}


def run_ffmpeg(tmp: Path, frames: list[np.ndarray], fps: float) -> None:
    """
    Encode ``frames`` (RGB, equal even sizes) to an H.264 MP4 (``yuv420p``, the format browsers play;
    CRF 15, imageio-ffmpeg's ``quality=7``) at ``tmp`` with imageio-ffmpeg's ffmpeg binary.

    ffmpeg is run here rather than through ``imageio_ffmpeg.write_frames``, which does not look at
    ffmpeg's exit status: a disk that fills while ffmpeg writes the file's index (after the last frame)
    would leave a video that does not play, reported as written.

    :raises OSError: ffmpeg could not write for want of room (its errno), or failed otherwise (the
        last line it printed).
    """
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo",
               "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps}", "-i", "-", "-an",
               "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", "15", str(tmp)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for frame in frames:
            proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        proc.stdin.close()
    except BrokenPipeError:  # ffmpeg stopped early: its message says why
        pass
    stderr = proc.stderr.read().decode(errors="replace")
    if proc.wait() == -signal.SIGXFSZ:  # past a file-size limit (subprocess restores SIGXFSZ's default: a kill)
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(tmp))
    if proc.returncode != 0:
        for text, code in _FFMPEG_NO_ROOM.items():
            if text in stderr:
                raise OSError(code, text, str(tmp))
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {proc.returncode}"
        raise OSError(f"ffmpeg could not write {tmp}: {last}")


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """An H.264 MP4 (:func:`run_ffmpeg`), written whole before it replaces ``path``."""
    replace_atomically(path, lambda tmp: run_ffmpeg(tmp, frames, fps))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m sb3_breakout.record",
        description="Play games with a trained agent and write a GIF and an MP4 (headless).",
    )
    add_target_arguments(parser)
    add_protocol_arguments(parser, games=1)
    parser.add_argument("--stride", type=whole_number, default=1,
                        help="one video frame every N agent steps (1 step = 4 emulator frames) (default: 1)")
    parser.add_argument("--max-video-frames", type=whole_number, default=2000,
                        help="stop playing after this many video frames (default: 2000)")
    parser.add_argument("--fps", type=float, default=30.0,
                        help="video frames per second (default: 30; with --stride 1 twice real time)")
    parser.add_argument("--scale", type=whole_number, default=1,
                        help="enlarge the 210x160 screen N times (default: 1)")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS),
                        help="files to write (default: gif mp4)")
    parser.add_argument("-o", "--output", default=None,
                        help="output path without extension, or an existing folder to write <model>.gif/.mp4 "
                        "in (default: <run>/videos/<model>, e.g. .../videos/final)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """:raises cfg.ConfigError: a flag value out of range."""
    for name, low in (("stride", 1), ("max_video_frames", 1), ("scale", 1)):
        if getattr(args, name) < low:
            raise cfg.ConfigError(f"--{name.replace('_', '-')}={getattr(args, name)} is not allowed: "
                                  f"must be an integer >= {low}")
    if not 0 < args.fps <= 1000:
        raise cfg.ConfigError(f"--fps={args.fps} is not allowed: must be a number > 0 and <= 1000")
    # the frames are held in memory until written: --max-video-frames of them must fit
    frame_bytes = SCREEN_BYTES * args.scale ** 2
    available = psutil.virtual_memory().available
    if frame_bytes * args.max_video_frames > available:
        raise cfg.ConfigError(
            f"--max-video-frames={args.max_video_frames} at --scale={args.scale} is not allowed: the frames "
            f"would need {frame_bytes * args.max_video_frames / 1e9:.1f} GB, {available / 1e9:.1f} GB of RAM "
            f"is available (at most {max(available // frame_bytes, 0)} frames at this scale)")


def output_stem(args: argparse.Namespace, target: Target) -> Path:
    """
    ``-o`` without its extension (an existing folder: ``<folder>/<model>``), or ``<run>/videos/<model>``;
    checked to be writable.

    :raises cfg.ConfigError: a path that cannot be written.
    """
    if args.output is None:
        stem = default_output(target, "videos", "")
    elif not args.output.strip():
        raise cfg.ConfigError(f"-o {args.output!r} is not allowed: give a file path without extension")
    elif Path(args.output).is_dir():
        stem = Path(args.output) / target.label
    else:
        stem = Path(args.output)
    if stem.suffix in (".gif", ".mp4"):
        stem = stem.with_suffix("")
    for fmt in args.format:
        check_output_file(stem.with_name(f"{stem.name}.{fmt}"), "-o", overwrites=(f".{fmt}",))
    return stem


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        protocol: Protocol = protocol_from(args)
        check_args(args)
        target = target_from(args)
        stem = output_stem(args, target)
        model = load_model(target, args.device)
        check_env_builds(target, protocol, model)
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    env = make_game_env(target, protocol.max_frames, protocol.noop_max, render_mode="rgb_array")
    frames: list[np.ndarray] = []
    try:
        game = first_game(env, protocol, 0)
        for index in range(protocol.games):
            if index > 0:  # the env restarted into this game when the last one ended
                game = new_game(protocol, index, game.obs)
            queue_game(env, protocol, index + 1 if index + 1 < protocol.games else None)
            score, lives = 0.0, None
            frames.append(annotate(env.get_images()[0], f"game {index + 1}  score 0", args.scale))
            result = None
            while result is None and len(frames) < args.max_video_frames:
                action = epsilon_greedy(model, game.obs, game.rng, protocol.epsilon)
                game.obs, _, _, infos = env.step(np.array([action]))  # type: ignore[assignment]
                result = game.record(infos[0])
                if result is not None:  # the env has already reset: its screen is the next game's
                    break
                score, lives = float(sum(env.get_attr("rewards")[0])), infos[0].get("lives")
                if game.steps % args.stride == 0:
                    text = f"game {index + 1}  score {score:g}"
                    if lives is not None:
                        text += f"  lives {lives}"
                    frames.append(annotate(env.get_images()[0], text, args.scale))
            if result is not None:
                print(f"game {index}: score {result.score:g}, {result.frames} frames, "
                      f"{result.lives_lost} lives lost")
            else:
                print(f"game {index}: stopped at {len(frames)} video frames (--max-video-frames), "
                      f"score {score:g}")
                break
    finally:
        env.close()

    stem.parent.mkdir(parents=True, exist_ok=True)
    for fmt in args.format:
        path = stem.with_name(f"{stem.name}.{fmt}")
        try:
            (write_gif if fmt == "gif" else write_mp4)(path, frames, args.fps)
        except OutputNotWritten as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        height, width = frames[0].shape[:2]
        print(f"Wrote {path} ({len(frames)} frames of {width}x{height}, {args.fps:g} fps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
