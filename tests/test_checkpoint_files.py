"""A checkpoint on disk: listing by step, the manifest's check, a same-step save caught by a kill."""

import json
import shutil

import pytest

from sb3_breakout.checkpoint_files import (
    CheckpointError,
    checkpoint_root,
    checkpoint_step,
    latest_valid_checkpoint,
    list_checkpoints,
    verify_checkpoint,
)


def test_checkpoints_are_listed_by_step_not_by_name(tmp_path):
    # step_99000 sorts after step_100000 by name; a resume must take the newest by step, and unfinished
    # (.tmp) or set-aside (.replaced) folders and stray files are not checkpoints
    for name in ["step_100000", "step_99000", "step_481612", "step_500000.tmp", "step_400000.replaced", "step_x"]:
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_7").write_text("a file")
    listed = list_checkpoints(tmp_path)
    assert [checkpoint_step(c) for c in listed] == [99_000, 100_000, 481_612]


def test_manifest_catches_a_flipped_byte_without_unpickling(tiny_run, tmp_path):
    """A resume checks the files against manifest.json (sizes, CRC-32): a same-size bit flip is named."""
    copy = tmp_path / "step_1000"
    shutil.copytree(tiny_run / "checkpoints" / "step_1000", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert set(manifest) == {"model.zip", "replay_buffer.pkl", "state.pkl"}
    verify_checkpoint(copy)  # intact
    buffer_pkl = copy / "replay_buffer.pkl"
    data = bytearray(buffer_pkl.read_bytes())
    data[len(data) // 2] ^= 0xFF
    buffer_pkl.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"replay_buffer\.pkl is truncated or corrupt \(CRC-32 mismatch\)"):
        verify_checkpoint(copy)


def test_a_kill_between_the_renames_of_a_same_step_save_loses_no_checkpoint(tiny_run, tmp_path):
    """
    Saving again at a step that has a checkpoint moves the old one to ``step_N.replaced`` before the
    new one is renamed into place; a kill between the two renames left neither name a checkpoint, and
    resume fell back to an older one. The moved copy is put back.
    """
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    root = checkpoint_root(run)
    (root / "step_2000").rename(root / "step_2000.replaced")  # the state a kill there leaves
    (root / "step_2000.tmp").mkdir()  # the new copy, not finished
    assert [c.name for c in list_checkpoints(run)] == ["step_1000"]
    checkpoint, skipped = latest_valid_checkpoint(run)
    assert checkpoint == root / "step_2000" and skipped == []
    assert not (root / "step_2000.replaced").exists()
    verify_checkpoint(checkpoint)
