"""The tuning search space: read, narrowed from a file, checked against the entry, merged into it."""

import pytest

from conftest import ENV
from sb3_breakout import config as cfg
from sb3_breakout import search_space as ss


def test_search_space_is_narrowed_fixed_and_dropped_from_yaml(tmp_path):
    override = tmp_path / "narrow.yml"
    override.write_text("learning_rate: {low: 1.0e-4, high: 2.0e-4, log: true}\nbatch_size: 64\ngamma: null\n"
                        "train_freq: [4]\nfinal_eps: {low: 0.01, high: 0.05, step: 0.01}\n")
    default = ss.load_search_space()
    space = ss.load_search_space(override)
    assert set(default) - set(space) == {"gamma"}
    assert space["learning_rate"] == ss.Param("learning_rate", "range", False, low=1e-4, high=2e-4,
                                                log=True)
    assert space["batch_size"].kind == "fixed" and space["batch_size"].value == 64
    assert space["buffer_size"] == default["buffer_size"]
    entry = cfg.load_entry(cfg.default_config("dqn"), ENV)
    ss.check_space(space, entry)
    merged = ss.apply_values(entry, {"learning_rate": 1.5e-4, "final_eps": 0.02, "random_steps": 7})
    assert merged["learning_rate"] == 1.5e-4 and entry["learning_rate"] == 2.5e-4
    eps = next(iter(merged["callback"][0].values()))
    assert eps == dict(random_steps=7, decay_steps=1_000_000, initial_eps=1.0, final_eps=0.02)


@pytest.mark.parametrize("algo", ["dqn", "qrdqn"])
def test_a_sampled_gamma_and_interval_train_as_written_in_the_fast_entries(algo):
    """The fast entries sum 3-step returns with a discount of their own and play 4 games: a sampled gamma goes
    into both places (the learner refuses two discounts), a target interval becomes the multiple of 4 SB3 keeps."""
    entry = cfg.load_entry(cfg.default_config(algo), ENV, "fast")
    merged = ss.apply_values(entry, {"gamma": 0.97, "target_update_interval": 1003, "train_freq": 2})
    assert merged["gamma"] == 0.97 and merged["replay_buffer_kwargs"] == "dict(n_steps=3, gamma=0.97)"
    assert merged["target_update_interval"] == 1000 and merged["train_freq"] == 2  # train_freq: SB3's unit, as is
    cfg.validate_entry(merged, algo)
    assert ss.apply_values({"replay_buffer_kwargs": {"n_steps": 3, "gamma": 0.99}}, {"gamma": 0.9})[
        "replay_buffer_kwargs"] == {"n_steps": 3, "gamma": 0.9}
    assert ss.apply_values(entry, {"target_update_interval": 2})["target_update_interval"] == 4  # at least n_envs


@pytest.mark.parametrize("text, message", [
    ("gamma: {low: 0.9, high: 1.5}", "gamma high=1.5"),
    ("learning_rate: {low: 1.0e-3, high: 1.0e-5, log: true}", "low=0.001 is larger than high=1e-05"),
    ("max_grad_norm: {low: 0, high: 1, log: true}", "max_grad_norm"),
    ("buffer_size: 1000.5", "buffer_size=1000.5"),
    ("train_freq: []", "must not be empty"),
    ("batch_size: {low: 32}", "{low: A, high: B}"),
])
def test_bad_ranges_are_named(tmp_path, text, message):
    path = tmp_path / "bad.yml"
    path.write_text(text + "\n")
    with pytest.raises(cfg.ConfigError, match=None) as info:
        ss.load_search_space(path)
    assert message in str(info.value) and "\n" not in str(info.value)
