"""``iotpipe.local.control``: what ``local up|status|down`` do, callable without the CLI (and printing nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotpipe.errors import LocalError
from iotpipe.local import control
from iotpipe.local import state as local_state
from iotpipe.local.supervisor import LocalOptions


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(local_state.STATE_DIR_VARIABLE, str(tmp_path / ".iotpipe" / "local"))
    return tmp_path


@pytest.mark.usefixtures("folder")
def test_status_and_stop_of_a_folder_where_nothing_runs(capsys: pytest.CaptureFixture[str]) -> None:
    notes: list[str] = []
    found = control.status(notes.append)
    assert (found.state, found.failed, found.running) == (None, (), False)
    assert control.stop(notes.append) is None
    assert notes == [] and capsys.readouterr() == ("", "")


def test_a_detached_start_with_a_broken_config_fails_with_its_message_and_leaves_nothing(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "iotpipe.toml").write_text("[env.local.processor]\nmemory_mb = 1\n")
    with pytest.raises(LocalError) as raised:
        control.start_detached(LocalOptions(env="local", config_path=None, aws_port=0, mqtt_port=0,
                                            broker="auto", lock_fd=None), timeout_s=60)
    assert raised.value.exit_code == 2  # the child's own code for a wrong config, as in the foreground
    assert "memory_mb" in str(raised.value) and "local.log" in str(raised.value)
    assert control.status(lambda _: None).state is None  # no run left behind, and the folder is free again
    lock = local_state.DirectoryLock(local_state.state_dir())
    lock.release()
    assert capsys.readouterr() == ("", "")
