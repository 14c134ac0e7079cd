"""bf16: auto -- NatureCNN measures the update in both precisions and keeps one; a YAML entry with it trains."""

import re

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from conftest import run_cli, small_entry, write_conf
from sb3_breakout import precision
from sb3_breakout.torch_layers import NatureCNN

SPACE = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


def test_auto_picks_one_precision_and_logs_both_times(capsys):
    precision._CHOICES.clear()
    online, target = NatureCNN(SPACE, bf16="auto"), NatureCNN(SPACE, bf16="auto")
    frames = th.randint(0, 256, (2, 4, 84, 84), dtype=th.uint8)
    with th.no_grad():  # as SB3 acts: the measurement needs gradients and takes them itself
        out = online(frames)
    assert out.shape == (2, 512) and out.dtype == th.float32
    choice = online.precision
    assert online.bf16 in (True, False) and online.bf16 == choice.bf16
    assert choice.fp32_s > 0 and choice.bf16_s > 0
    assert choice.bf16 == (choice.bf16_s * precision.MARGIN < choice.fp32_s)
    line = capsys.readouterr().out
    assert re.search(r"fp32 \d+\.\d ms, bf16 \d+\.\d ms -> (fp32|bf16)", line), line
    target(frames)  # the target network takes the same choice without measuring again
    assert target.precision is choice and target.bf16 == online.bf16
    assert capsys.readouterr().out == ""
    threads = th.get_num_threads()
    try:  # --num-threads auto changes the thread count while training: the run keeps its one precision
        th.set_num_threads(2 if threads == 1 else 1)
        online(frames)
        fresh = NatureCNN(SPACE, bf16="auto")  # a network built later in the run (a resumed model's target)
        fresh(frames)
        assert online.precision is fresh.precision is choice and fresh.bf16 == online.bf16
        assert capsys.readouterr().out == ""  # not measured again
    finally:
        th.set_num_threads(threads)


def test_rule_keeps_bf16_only_when_clearly_faster():
    assert precision.prefer_bf16(fp32_s=0.030, bf16_s=0.020)
    assert not precision.prefer_bf16(fp32_s=0.030, bf16_s=0.028)  # 7% faster: not clearly
    assert not precision.prefer_bf16(fp32_s=0.020, bf16_s=0.030)


def test_bad_bf16_value_is_refused():
    with pytest.raises(ValueError, match="bf16='yes' is not allowed: True, False or 'auto'"):
        NatureCNN(SPACE, bf16="yes")


def test_yaml_entry_with_bf16_auto_trains(tmp_path):
    nature = "importlib.import_module('sb3_breakout.torch_layers').NatureCNN"
    entry = small_entry(policy_kwargs=f"dict(features_extractor_class={nature}, net_arch=[], "
                                      "features_extractor_kwargs=dict(bf16='auto'), optimizer_kwargs=dict(fused=True))")
    conf = write_conf(tmp_path, entry)
    result = run_cli(["-m", "sb3_breakout.train", "-conf", str(conf), "-n", "300", "--seed", "0", "-f", "logs",
                      "--num-threads", "1", "--save-freq", "0"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(re.findall(r"NatureCNN bf16=auto on cpu \(1 torch threads\): one update .* -> (fp32|bf16)",
                          result.stdout)) == 1, result.stdout
    assert (tmp_path / "logs" / "dqn" / "BreakoutNoFrameskip-v4_1" / "BreakoutNoFrameskip-v4.zip").is_file()
