"""
``python -m sb3_breakout.evaluate``: score a trained agent with the DQN papers' evaluation protocol.

The protocol (Mnih et al. 2015, "Human-level control through deep reinforcement learning", Methods,
"Evaluation procedure"), each part a flag with this default:

- ``--games 30`` full games: all 5 lives, whatever the training profile. Games are counted by the
  ``Monitor`` that sits under the profile's wrappers, as SB3's ``evaluate_policy`` counts them, so
  the agent still gets the life-loss resets (with FIRE) it was trained with, and a game ends only
  at game over or at the frame cap;
- ``--epsilon 0.05``: epsilon-greedy on the network's greedy action;
- ``--noop-max 30``: each game starts with a random number of no-op actions, 1 to 30, drawn by the
  profile's own no-op reset (SB3's ``NoopResetEnv`` / gymnasium's ``AtariPreprocessing``, which
  both draw from 1 to ``noop_max``);
- ``--max-frames 108000``: at most 108,000 emulator frames (30 minutes at 60 Hz) per game, as
  ``gym.make(..., max_episode_steps=108000)`` in place of the training run's 40,000;
- ``--seed 0``: game ``i`` is played with env seed ``seed + i`` and its own epsilon RNG (the ``i``-th
  child of ``numpy.random.SeedSequence(seed)``).

Each game is scored on the raw game reward the Monitor records (never the clipped or penalised
training reward). The env is built from the run's ``config.yml`` (``env_wrapper``, ``frame_stack``,
``env_kwargs``) with RL Zoo's ``get_wrapper_class`` and SB3's ``make_vec_env``, as RL Zoo's
``create_test_env`` builds it, so the agent sees exactly what it saw in training.

Human-normalised score: ``(score - random) / (human - random)`` with random 1.7 and human 30.5, the
Breakout reference scores of the DQN-family papers after 2015 (van Hasselt et al. 2016, "Deep
Reinforcement Learning with Double Q-learning", and Wang et al. 2016, "Dueling Network Architectures",
human scores from Nair et al. 2015); the Nature paper's Extended Data Table 2 has human 31.8.

Results do not depend on ``--n-envs``: a game's env seed and epsilon RNG depend on the game's index
only, never on the env slot that plays it, and its greedy action comes from a forward pass on that
game's observation alone (a batch of one), so batching cannot change a near-tie ``argmax``.

Exit status: 0 done, 2 bad input (a one-line error naming the bad value; nothing written).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from sb3_breakout import config as cfg
from sb3_breakout.atomic_write import OutputNotWritten, write_text_atomically
from sb3_breakout.cli import OneLineArgumentParser, check_output_file, cpu_count, whole_number
from sb3_breakout.game_env import make_game_env
from sb3_breakout.runs import Target, add_target_arguments, default_output, load_model, target_from

#: Breakout reference scores for normalisation (van Hasselt et al. 2016 / Wang et al. 2016).
RANDOM_SCORE = 1.7
HUMAN_SCORE = 30.5
#: The Nature paper's human score for Breakout (Extended Data Table 2), for comparison only.
NATURE_HUMAN_SCORE = 31.8
#: the largest --max-frames and --noop-max: 2**31 - 1 emulator frames (~14 months of play at 60 Hz)
MAX_FRAMES = 2**31 - 1


# --------------------------------------------------------------------------------- the protocol
@dataclass(frozen=True)
class Protocol:
    """
    The evaluation protocol (see the module docstring).

    :param games: number of full games (30).
    :param epsilon: probability of a uniformly random action (0.05).
    :param noop_max: no-op actions at a game's start: 1 to ``noop_max`` (30).
    :param max_frames: emulator frames per game before it is cut (108,000 = 30 minutes at 60 Hz).
    :param seed: game ``i`` uses env seed ``seed + i`` and epsilon RNG :func:`game_rng` (0).
    """

    games: int = 30
    epsilon: float = 0.05
    noop_max: int = 30
    max_frames: int = 108_000
    seed: int = 0

    def check(self) -> None:
        """:raises cfg.ConfigError: a value out of range, naming the flag and what is allowed."""
        if self.games < 1:
            raise cfg.ConfigError(f"--games={self.games} is not allowed: must be an integer >= 1")
        if not 0.0 <= self.epsilon <= 1.0 or math.isnan(self.epsilon):
            raise cfg.ConfigError(f"--epsilon={self.epsilon} is not allowed: must be a number in [0, 1]")
        if not 1 <= self.noop_max <= MAX_FRAMES:
            raise cfg.ConfigError(f"--noop-max={self.noop_max} is not allowed: must be an integer >= 1 and <= "
                                  f"{MAX_FRAMES} (the profiles' no-op reset draws 1 to noop_max no-ops)")
        if not 1 <= self.max_frames <= MAX_FRAMES:
            raise cfg.ConfigError(f"--max-frames={self.max_frames} is not allowed: must be an integer >= 1 and "
                                  f"<= {MAX_FRAMES}")
        if self.max_frames <= self.noop_max:  # else every game ends in its no-ops, restarting for ever
            raise cfg.ConfigError(f"--max-frames={self.max_frames} with --noop-max={self.noop_max} is not allowed: "
                                  "--max-frames must be larger than --noop-max (a game starts with up to "
                                  "--noop-max no-op frames)")
        if self.seed < 0:
            raise cfg.ConfigError(f"--seed={self.seed} is not allowed: must be an integer >= 0")

    def game_seed(self, game: int) -> int:
        """Env seed of game ``game`` (0-based)."""
        return self.seed + game

    def game_rng(self, game: int) -> np.random.Generator:
        """Epsilon RNG of game ``game``: the ``game``-th child of ``SeedSequence(seed)``."""
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(game,)))


def epsilon_greedy(model: BaseAlgorithm, obs: np.ndarray, rng: np.random.Generator, epsilon: float) -> int:
    """
    A uniformly random action with probability ``epsilon``, else the greedy one.

    Every call draws one uniform number from ``rng`` (and one integer when it explores), so a game's
    random stream depends on its own steps only. The greedy action is SB3's
    ``policy.predict(deterministic=True)`` on this one observation (a batch of one), never on a
    batch of several games: batched convolutions may round differently and flip a near-tie argmax.
    Written here because SB3's ``DQN.predict`` explores with the shared ``action_space`` RNG.

    :param obs: one observation, ``(1, C, H, W)`` or ``(C, H, W)``.
    """
    if rng.random() < epsilon:
        return int(rng.integers(model.action_space.n))  # type: ignore[attr-defined]
    action, _ = model.policy.predict(obs, deterministic=True)
    return int(np.asarray(action).reshape(-1)[0])


@dataclass
class GameResult:
    """
    One finished game.

    :param game: index (0-based). :param seed: its env seed.
    :param score: raw game score (Monitor ``r``). :param frames: emulator frames (Monitor ``l``).
    :param agent_steps: actions taken (4 emulator frames each, fewer on the last).
    :param lives_lost: lives lost during the game (ALE ``info["lives"]``; 5 at game over in Breakout).
    :param truncated: True when the frame cap ended the game before game over.
    """

    game: int
    seed: int
    score: float
    frames: int
    agent_steps: int
    lives_lost: int
    truncated: bool


@dataclass
class _Game:
    """Book-keeping of a game in play."""

    index: int
    seed: int
    rng: np.random.Generator
    obs: np.ndarray
    steps: int = 0
    lives_lost: int = 0
    lives: int | None = None

    def record(self, info: dict[str, Any]) -> GameResult | None:
        """Count one step from its info; the result once the Monitor says the game is over."""
        self.steps += 1
        lives = info.get("lives")
        if lives is not None:
            if self.lives is not None and lives < self.lives:
                self.lives_lost += self.lives - lives
            self.lives = lives
        episode = info.get("episode")
        if episode is None:
            return None
        return GameResult(self.index, self.seed, float(episode["r"]), int(episode["l"]), self.steps,
                          self.lives_lost, bool(info.get("TimeLimit.truncated", False)))


def queue_game(env: VecEnv, protocol: Protocol, game: int | None) -> None:
    """
    Make ``env``'s next game restart (its ``reset()``, or the VecEnv's own restart when the current
    game ends) start game ``game``: its seed, from which the reset no-ops are drawn too. None: the
    env plays no further game (an unseeded restart).
    """
    env.env_method("queue_seed", None if game is None else protocol.game_seed(game))


def new_game(protocol: Protocol, game: int, obs: np.ndarray) -> _Game:
    """Book-keeping of game ``game`` from its first observation."""
    return _Game(game, protocol.game_seed(game), protocol.game_rng(game), obs)


def first_game(env: VecEnv, protocol: Protocol, game: int) -> _Game:
    """Reset a fresh ``env`` into game ``game``."""
    queue_game(env, protocol, game)
    return new_game(protocol, game, env.reset())  # type: ignore[arg-type]


def play_games(
    model: BaseAlgorithm,
    make_env: Callable[[], VecEnv],
    protocol: Protocol,
    n_envs: int = 1,
    on_game: Callable[[GameResult], None] | None = None,
) -> list[GameResult]:
    """
    Play ``protocol.games`` games on ``n_envs`` envs in parallel (each a 1-env ``VecEnv`` from
    ``make_env``, built with :class:`GameSeeder`); when an env starts a game it is given the next
    unplayed one to play after it. All envs step together (``step_async`` on all, then
    ``step_wait``), so ``SubprocVecEnv`` envs emulate in parallel.

    Written here rather than with one n-env VecEnv because a VecEnv restarts a finished env on its
    own and cannot reset one env of several; 1-env VecEnvs keep SB3's own frame stacking and
    restarts, and each game starts from its own seed, whichever env plays it.

    :return: the games in index order.
    """
    envs = [make_env() for _ in range(max(1, min(n_envs, protocol.games)))]
    results: list[GameResult] = []
    playing: dict[int, _Game] = {}
    queued: dict[int, int | None] = {}
    next_game = 0

    def queue_next(slot: int) -> None:  # the game this env plays after its current one
        nonlocal next_game
        queued[slot] = next_game if next_game < protocol.games else None
        queue_game(envs[slot], protocol, queued[slot])
        next_game += 1

    try:
        for slot, env in enumerate(envs):
            playing[slot] = first_game(env, protocol, next_game)
            next_game += 1
        for slot in range(len(envs)):
            queue_next(slot)
        while playing:
            for slot, game in playing.items():
                envs[slot].step_async(np.array([epsilon_greedy(model, game.obs, game.rng, protocol.epsilon)]))
            for slot in list(playing):
                game = playing[slot]
                game.obs, _, _, infos = envs[slot].step_wait()  # type: ignore[assignment]
                result = game.record(infos[0])
                if result is None:
                    continue
                results.append(result)
                if on_game is not None:
                    on_game(result)
                following = queued[slot]
                if following is None:
                    del playing[slot]
                else:  # the env has restarted into it: game.obs is its first observation
                    playing[slot] = new_game(protocol, following, game.obs)
                    queue_next(slot)
    finally:
        for env in envs:
            env.close()
    return sorted(results, key=lambda r: r.game)


# ---------------------------------------------------------------------------------- the summary
def human_normalized(score: float, random: float = RANDOM_SCORE, human: float = HUMAN_SCORE) -> float:
    """``(score - random) / (human - random)``: 0 for the random agent, 1 for the human tester."""
    return (score - random) / (human - random)


def summarize(scores: list[float]) -> dict[str, float]:
    """Mean, population std (ddof=0, as SB3's ``evaluate_policy``), median, min, max, and the
    human-normalised mean."""
    arr = np.asarray(scores, dtype=float)
    mean = float(arr.mean())
    return {
        "mean": mean,
        "std": float(arr.std()),
        "median": float(statistics.median(scores)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "human_normalized": human_normalized(mean),
    }


def format_table(results: list[GameResult], summary: dict[str, float]) -> str:
    lines = [f"{'game':>4} {'seed':>6} {'score':>7} {'frames':>7} {'steps':>6} {'lives lost':>10}  capped"]
    for r in results:
        lines.append(f"{r.game:>4} {r.seed:>6} {r.score:>7.1f} {r.frames:>7} {r.agent_steps:>6} "
                     f"{r.lives_lost:>10}  {'yes' if r.truncated else ''}")
    lines.append(
        f"{len(results)} games: score {summary['mean']:.2f} ± {summary['std']:.2f} (mean ± std), median "
        f"{summary['median']:.1f}, min {summary['min']:.1f}, max {summary['max']:.1f}; human-normalised "
        f"{summary['human_normalized']:.3f} ({100 * summary['human_normalized']:.1f}%, "
        f"random {RANDOM_SCORE}, human {HUMAN_SCORE})"
    )
    return "\n".join(lines)


def check_env_builds(target: Target, protocol: Protocol, model: BaseAlgorithm) -> None:
    """Build the run's env once (a damaged ``config.yml``, a model of other observations: a ConfigError)."""
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # its banner on stderr is not an error
    where = f"the run {target.run_dir}" if target.run_dir is not None else f"the profile of {target.model_path}"
    try:
        probe = make_game_env(target, protocol.max_frames, protocol.noop_max)
    except Exception as exc:  # ImportError of a wrapper, ValueError of frame_stack, a bad env_kwargs ...
        reason = " ".join(str(exc).split())[:300]
        raise cfg.ConfigError(f"{where} cannot build its env from its config.yml: {type(exc).__name__}: "
                              f"{reason}") from None
    obs_shape = probe.observation_space.shape
    probe.close()
    if obs_shape != model.observation_space.shape:
        raise cfg.ConfigError(f"the model {target.model_path} expects observations "
                              f"{model.observation_space.shape} but {where} gives {obs_shape}")


def check_n_envs(n_envs: int) -> None:
    most = 4 * cpu_count()  # each env may be a process
    if not 1 <= n_envs <= most:
        raise cfg.ConfigError(f"--n-envs={n_envs} is not allowed: must be an integer >= 1 and <= {most} "
                              "(4 per CPU of this machine)")


def portable_path(path: Path) -> str:
    """``path`` relative to the working folder when it lies below it (an evaluation JSON kept in a
    repository then names no folder of the machine that wrote it), else as given."""
    try:
        absolute, here = Path(os.path.abspath(path)), Path(os.path.abspath(os.getcwd()))
        return absolute.relative_to(here).as_posix() if absolute.is_relative_to(here) else str(path)
    except (OSError, ValueError):
        return str(path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` whole (:func:`~sb3_breakout.atomic_write.replace_atomically`)."""
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")


# ----------------------------------------------------------------------------------------- CLI
def add_protocol_arguments(parser: argparse.ArgumentParser, games: int = 30) -> None:
    defaults = Protocol(games=games)
    parser.add_argument("--games", type=whole_number, default=defaults.games,
                        help=f"full games (default: {defaults.games})")
    parser.add_argument("--epsilon", type=float, default=defaults.epsilon,
                        help=f"probability of a random action (default: {defaults.epsilon})")
    parser.add_argument("--noop-max", type=whole_number, default=defaults.noop_max,
                        help=f"each game starts with 1 to N no-ops (default: {defaults.noop_max})")
    parser.add_argument("--max-frames", type=whole_number, default=defaults.max_frames,
                        help="emulator frames per game before it is cut "
                        f"(default: {defaults.max_frames:,} = 30 min)")
    parser.add_argument("--seed", type=whole_number, default=defaults.seed,
                        help="game i plays with env seed SEED+i and its own epsilon RNG "
                        f"(default: {defaults.seed})")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m sb3_breakout.evaluate",
        description="Evaluate a trained agent with the DQN papers' protocol: full games, epsilon 0.05, "
        "up to 30 no-ops, 108,000 frames, 30 games.",
    )
    add_target_arguments(parser)
    add_protocol_arguments(parser)
    parser.add_argument("--n-envs", type=int, default=1, help="games played in parallel (default: 1)")
    parser.add_argument("--vec-env", choices=("dummy", "subproc"), default=None,
                        help="dummy: all envs in this process; subproc: one process each "
                        "(default: subproc when --n-envs > 1)")
    parser.add_argument("-o", "--output", default=None,
                        help="JSON file (default: <run>/evaluation/<model>.json, or "
                        "<zip stem>.evaluation.json beside a zip outside any run)")
    return parser


def protocol_from(args: argparse.Namespace) -> Protocol:
    protocol = Protocol(args.games, args.epsilon, args.noop_max, args.max_frames, args.seed)
    protocol.check()
    return protocol


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        protocol = protocol_from(args)
        check_n_envs(args.n_envs)
        if args.output is not None:
            check_output_file(args.output, overwrites=(".json",))
        target = target_from(args)
        output = Path(args.output) if args.output is not None else default_output(target, "evaluation", ".json")
        check_output_file(output, overwrites=(".json",))
        model = load_model(target, args.device)
        check_env_builds(target, protocol, model)
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    vec_env = args.vec_env or ("subproc" if args.n_envs > 1 else "dummy")
    vec_env_cls = SubprocVecEnv if vec_env == "subproc" else DummyVecEnv
    make_env = partial(make_game_env, target, protocol.max_frames, protocol.noop_max, vec_env_cls=vec_env_cls)

    print(f"Evaluating {target.model_path} on {target.env_id} (profile {target.profile or 'n/a'}, "
          f"preprocessing {target.preprocessing or 'n/a'}): "
          f"{protocol.games} games, epsilon {protocol.epsilon}, 1-{protocol.noop_max} no-ops, "
          f"<= {protocol.max_frames:,} frames, seed {protocol.seed}, {args.n_envs} env(s)", flush=True)
    start = time.perf_counter()
    def report(r: GameResult) -> None:
        print(f"game {r.game}: score {r.score:g}, {r.frames} frames", flush=True)

    results = play_games(model, make_env, protocol, args.n_envs, on_game=report)
    wall = time.perf_counter() - start
    summary = summarize([r.score for r in results])
    print(format_table(results, summary))
    data = {
        "model": portable_path(target.model_path),
        "run": portable_path(target.run_dir) if target.run_dir is not None else None,
        "env_id": target.env_id,
        "algo": target.algo,
        "profile": target.profile,
        "preprocessing": target.preprocessing,
        "frame_stack": target.hyperparams.get("frame_stack"),
        "num_timesteps": int(getattr(model, "num_timesteps", 0)),
        "protocol": asdict(protocol),
        "n_envs": args.n_envs,
        "reference_scores": {
            "random": RANDOM_SCORE, "human": HUMAN_SCORE,
            "source": "van Hasselt et al. 2016 / Wang et al. 2016 (Nature 2015: human 31.8)",
        },
        "summary": summary,
        "games": [asdict(r) for r in results],
        "wall_time_s": round(wall, 3),
    }
    try:
        write_json(output, data)
    except OutputNotWritten as exc:  # the games' summary is printed above
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
