"""Snapshots (issue 17, sandbox-lifecycle.yml): snapshot a running sandbox,
wait for Ready, list with filters, restore a new sandbox from it (no image), delete."""

import time

import pytest
from opensandbox.exceptions import SandboxApiException
from opensandbox.models.sandboxes import SnapshotFilter



def wait_ready(manager, snapshot_id, seconds=120):
    deadline = time.monotonic() + seconds
    snap = manager.get_snapshot(snapshot_id)
    while snap.status.state == "Creating" and time.monotonic() < deadline:
        time.sleep(0.5)
        snap = manager.get_snapshot(snapshot_id)
    return snap


def test_snapshot_restore_delete(make_sandbox, manager):
    src = make_sandbox()
    src.commands.run("echo snapshotted > /tmp/marker.txt")
    snap = src.create_snapshot(name="conf-snap")
    assert snap.id and snap.sandbox_id == src.id and snap.name == "conf-snap"
    assert snap.status.state in ("Creating", "Ready")
    assert src.get_info().status.state == "Running"  # the source keeps running
    snap = wait_ready(manager, snap.id)
    assert snap.status.state == "Ready", snap.status

    listed = manager.list_snapshots(SnapshotFilter(sandbox_id=src.id))
    assert [s.id for s in listed.snapshot_infos] == [snap.id]
    ready = manager.list_snapshots(SnapshotFilter(sandbox_id=src.id, states=["Ready"], page_size=1))
    assert [s.id for s in ready.snapshot_infos] == [snap.id]

    restored = make_sandbox(snapshot_id=snap.id)
    assert restored.get_info().snapshot_id == snap.id
    text = "\n".join(m.text for m in restored.commands.run("cat /tmp/marker.txt").logs.stdout)
    assert text.strip() == "snapshotted"
    restored.kill()

    manager.delete_snapshot(snap.id)
    with pytest.raises(SandboxApiException) as err:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            manager.get_snapshot(snap.id)
            time.sleep(0.3)
    assert err.value.status_code == 404


def test_unknown_snapshot(manager, make_sandbox):
    with pytest.raises(SandboxApiException) as err:
        manager.get_snapshot("no-such-snapshot")
    assert err.value.status_code == 404
    with pytest.raises(SandboxApiException) as err:
        make_sandbox(snapshot_id="no-such-snapshot", skip_health_check=True)
    assert err.value.status_code in (400, 404)
