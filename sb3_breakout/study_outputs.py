"""
What a study leaves in its folder: ``trials.csv``, ``best.yml`` (the best trial as a complete RL Zoo
entry) and the Optuna plots, each written to a temporary name and renamed into place.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from sb3_breakout.atomic_write import OutputNotWritten, replace_atomically, write_text_atomically
from sb3_breakout.search_space import apply_values
from sb3_breakout.trials import HYPERPARAMS_ATTR, Plan


# ========================================================================================= outputs
def _write_atomic(path: Path, text: str) -> None:
    """
    Write ``text`` to a temporary name and rename it into place. A full disk (ENOSPC, EFBIG) leaves the
    previous copy whole and ends the command with exit status 1 and one line: the study stays in its
    storage, and the same command run again writes the file.
    """
    try:
        write_text_atomically(path, text)
    except OutputNotWritten as exc:
        print(f"error: {exc}; the study is kept in its storage: free some space and run the same command "
              "again to write it", file=sys.stderr)
        raise SystemExit(1) from None


def best_entry(plan: Plan, trial: FrozenTrial) -> dict[str, Any]:
    """The complete RL Zoo entry of ``trial``: the study's entry with the trial's values merged in."""
    values = trial.user_attrs.get(HYPERPARAMS_ATTR) or trial.params
    return apply_values(plan.settings["entry"], values)


def write_best_yaml(path: Path, plan: Plan, study: optuna.Study, trial: FrozenTrial) -> None:
    """``best.yml``: one RL Zoo entry named by the env id, that both training CLIs read unchanged."""
    s = plan.settings
    header = [
        f"# Best trial of the Optuna study {plan.study_name!r} ({plan.storage.display}):",
        f"# trial {trial.number}, mean score {trial.value:.2f} over {s['eval_episodes']} full games "
        f"(epsilon {s['eval_eps']}) after {s['n_timesteps']:,} agent steps, profile {s['profile']}.",
        "# Tuned: " + ", ".join(f"{k}={v!r}" for k, v in trial.params.items()),
        f"#   python -m sb3_breakout.train --algo {s['algo']} --conf-file {path}",
        f"#   python -m rl_zoo3.train --algo {s['algo']} --env {s['env']} --conf-file {path}",
    ]
    body = yaml.safe_dump({s["env"]: best_entry(plan, trial)}, sort_keys=False, width=110)
    _write_atomic(path, "\n".join(header) + "\n" + body)


def write_plots(study: optuna.Study, out_dir: Path, n_complete: int) -> list[str]:
    """Optimization history and parameter importances as PNG (Agg); returns notes on what was skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    notes = []
    for name, plot, needed in (("optimization_history.png", plot_optimization_history, 1),
                               ("param_importances.png", plot_param_importances, 2)):
        if n_complete < needed:
            notes.append(f"{name} needs at least {needed} completed trials (the study has {n_complete}): "
                         "skipped")
            continue
        try:
            ax = plot(study)
            fig = ax.figure
            replace_atomically(out_dir / name, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=100,
                                                                               bbox_inches="tight"))
            plt.close(fig)
        except Exception as exc:  # e.g. importances when no parameter varied
            notes.append(f"{name} skipped: {type(exc).__name__}: {exc}")
        plt.close("all")
    return notes


def write_outputs(study: optuna.Study, plan: Plan) -> FrozenTrial | None:
    """``trials.csv``, ``best.yml`` and the plots in the study folder; returns the best trial or None."""
    out = plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "trials.csv", study.trials_dataframe().to_csv(index=False))
    trials = study.get_trials(deepcopy=False)
    n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
    best = study.best_trial if n_complete else None
    if best is not None:
        write_best_yaml(out / "best.yml", plan, study, best)
    for note in write_plots(study, out, n_complete):
        print(f"note: {note}")
    return best
