"""Study storages: trial counting (the live storages are exercised end to end in test_tune.py)."""

import optuna
from optuna.trial import TrialState

from sb3_breakout import study_storage as st


def test_retried_failures_do_not_count():
    """A trial failed by the heartbeat and retried is replaced by its retry; other failures count."""
    study = optuna.create_study()
    fail = optuna.trial.create_trial(state=TrialState.FAIL)
    study.add_trial(fail)  # 0: failed by the heartbeat, then retried as 1
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING,
                                              system_attrs={"failed_trial": 0, "retry_history": [0]}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))  # 2: raised
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=1.0))
    counts = st.count_trials(study.get_trials())
    assert (counts.failed, counts.retried, counts.waiting, counts.complete) == (1, 1, 1, 1)
    assert counts.finished == 2 and counts.claimed == 3
