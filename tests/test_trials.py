"""A trial's time left and its clock, as :class:`sb3_breakout.trials.TrialProgress` prints them."""

import pytest

from sb3_breakout.trials import clock, time_left


def test_time_left_counts_training_per_step_and_evaluations_once_one_is_timed():
    # 100 of 1,000 steps in 10 s of training, no evaluation yet: 90 s of training, 5 evaluations untimed
    assert time_left(10.0, 100, 1_000, 0.0, 0, 5) == (pytest.approx(90.0), 5)
    # 400 steps in 40 s of training, 2 evaluations of 30 s each: 60 s of training + 3 x 30 s
    assert time_left(40.0, 400, 1_000, 60.0, 2, 5) == (pytest.approx(150.0), 0)
    assert time_left(100.0, 1_000, 1_000, 150.0, 5, 5) == (0.0, 0)  # done
    assert time_left(0.0, 0, 1_000, 0.0, 0, 5) == (None, 5)  # before the first step


@pytest.mark.parametrize("seconds, text", [(0.0, "0:00:00"), (59.9, "0:00:59"), (3_725.0, "1:02:05"),
                                           (90_000.0, "1 day, 1:00:00"), (-3.0, "0:00:00")])
def test_clock(seconds, text):
    assert clock(seconds) == text
