"""The replay's checkpoint file: what a rerun accepts to resume from, and the errors that say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotpipe import replay

WINDOW = replay.Window(1_772_445_600_000, 1_772_449_200_000, ("press-07",))
DEV = "arn:aws:kinesis:eu-west-1:123456789012:stream/sensor-data-stream-dev"
PROD = "arn:aws:kinesis:eu-west-1:123456789012:stream/sensor-data-stream-prod"


def test_a_checkpoint_resumes_the_same_window_of_the_same_stream(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    replay.write_checkpoint(path, WINDOW, {"shardId-000000000000": "12"}, DEV)
    assert replay.read_checkpoint(path, WINDOW, DEV) == {"shardId-000000000000": "12"}
    assert replay.read_checkpoint(tmp_path / "none.json", WINDOW, DEV) == {}


@pytest.mark.parametrize("text", ['{"window": {"from": 1', "[1, 2]", '{"window": null, "done": 3}', "\udcff",
                                  '{"window": {"from": 1772445600000, "to": 1772449200000, '
                                  '"devices": ["press-07"]}, "done": {"shardId-000000000000": "x"}}'])
def test_a_corrupt_checkpoint_is_a_replay_error_naming_the_file_and_the_fix(tmp_path: Path, text: str) -> None:
    path = tmp_path / "cp.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(replay.ReplayError, match=f"checkpoint {path} is not a replay checkpoint .*delete it"):
        replay.read_checkpoint(path, WINDOW, DEV)


def test_a_checkpoint_of_another_stream_is_refused(tmp_path: Path) -> None:
    # Shard ids are the same in every env: prod's checkpoint would make a dev replay skip dev's records.
    path = tmp_path / "cp.json"
    replay.write_checkpoint(path, WINDOW, {"shardId-000000000000": "12"}, PROD)
    with pytest.raises(replay.ReplayError, match="belongs to a replay of stream sensor-data-stream-prod"):
        replay.read_checkpoint(path, WINDOW, DEV)


def test_another_windows_checkpoint_names_the_flags_that_resume_it(tmp_path: Path) -> None:
    # --from 2h is relative: a rerun a minute later asks for another window; the error gives the absolute one.
    path = tmp_path / "cp.json"
    replay.write_checkpoint(path, WINDOW, {"shardId-000000000000": "12"}, DEV)
    later = replay.Window(WINDOW.start_ms + 60_000, WINDOW.end_ms + 60_000, WINDOW.devices)
    with pytest.raises(replay.ReplayError) as raised:
        replay.read_checkpoint(path, later, DEV)
    assert ("--from 2026-03-02T10:00:00.000Z --to 2026-03-02T11:00:00.000Z --device press-07"
            in str(raised.value))


def test_a_second_replay_on_the_same_checkpoint_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    # Two runs shared the checkpoint's temporary file (one crashed in os.replace) and invoked every record twice.
    path = tmp_path / "cp.json"
    refused = pytest.raises(replay.ReplayError, match=f"another replay is using checkpoint {path} .*delete {path}.lock")
    with replay.checkpoint_lock(path), refused, replay.checkpoint_lock(path):
        pass
    with pytest.raises(KeyboardInterrupt), replay.checkpoint_lock(path):  # Ctrl-C releases it
        raise KeyboardInterrupt
    with replay.checkpoint_lock(path):
        assert path.with_name("cp.json.lock").exists()
    assert not path.with_name("cp.json.lock").exists()
