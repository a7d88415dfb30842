"""Lifecycle through the SDK: create, get, list (filters, paging), renew, patch metadata, pause/resume,
endpoints, kill, and the errors an SDK user sees for unknown ids."""

import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import IMAGE, RUNTIME, run_id
from opensandbox import SandboxSync
from opensandbox.exceptions import SandboxApiException
from opensandbox.models.sandboxes import SandboxFilter


def wait_state(manager, sandbox_id, wanted, seconds=60):
    deadline = time.monotonic() + seconds
    state = None
    while time.monotonic() < deadline:
        state = manager.get_sandbox_info(sandbox_id).status.state
        if state == wanted:
            return state
        time.sleep(0.2)
    raise AssertionError(f"{sandbox_id}: state {state}, wanted {wanted}")


def test_create_get_list_kill(make_sandbox, manager):
    rid = run_id()
    sbx = make_sandbox(metadata={"run": rid, "team": "conformance"}, env={"GREETING": "hi"})
    info = sbx.get_info()
    assert info.id == sbx.id
    assert info.status.state == "Running"
    assert info.metadata["run"] == rid
    assert info.image is not None and info.image.image == IMAGE
    assert info.entrypoint == ["sleep", "3600"]
    assert info.expires_at is not None and info.expires_at > datetime.now(timezone.utc)
    assert abs((info.created_at - datetime.now(timezone.utc)).total_seconds()) < 120

    same = manager.get_sandbox_info(sbx.id)
    assert same.id == sbx.id and same.metadata == info.metadata

    listed = manager.list_sandbox_infos(SandboxFilter(metadata={"run": rid}))
    assert [s.id for s in listed.sandbox_infos] == [sbx.id]
    assert listed.pagination.total_items == 1
    running = manager.list_sandbox_infos(SandboxFilter(metadata={"run": rid}, states=["Running"]))
    assert [s.id for s in running.sandbox_infos] == [sbx.id]
    paused = manager.list_sandbox_infos(SandboxFilter(metadata={"run": rid}, states=["Paused"]))
    assert paused.sandbox_infos == []

    sbx.kill()
    with pytest.raises(SandboxApiException) as err:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # kill may finish in the background (Terminating, then gone)
            manager.get_sandbox_info(sbx.id)
            time.sleep(0.2)
    assert err.value.status_code == 404
    assert manager.list_sandbox_infos(SandboxFilter(metadata={"run": rid})).sandbox_infos == []


def test_list_paging(make_sandbox, manager):
    rid = run_id()
    ids = {make_sandbox(metadata={"run": rid}, skip_health_check=True).id for _ in range(3)}
    seen = []
    page1 = manager.list_sandbox_infos(SandboxFilter(metadata={"run": rid}, page_size=2, page=1))
    assert len(page1.sandbox_infos) == 2
    assert page1.pagination.total_items == 3
    assert page1.pagination.has_next_page
    page2 = manager.list_sandbox_infos(SandboxFilter(metadata={"run": rid}, page_size=2, page=2))
    assert len(page2.sandbox_infos) == 1
    assert not page2.pagination.has_next_page
    seen = [s.id for s in page1.sandbox_infos + page2.sandbox_infos]
    assert set(seen) == ids


def test_renew(make_sandbox, manager):
    sbx = make_sandbox(timeout=timedelta(minutes=5), skip_health_check=True)
    before = sbx.get_info().expires_at
    resp = sbx.renew(timedelta(minutes=30))
    assert resp.expires_at > before + timedelta(minutes=20)
    after = manager.get_sandbox_info(sbx.id).expires_at
    assert abs((after - resp.expires_at).total_seconds()) < 2
    # renew through the manager too
    resp2 = manager.renew_sandbox(sbx.id, timedelta(minutes=10))
    assert resp2.expires_at < resp.expires_at


def test_patch_metadata(make_sandbox):
    sbx = make_sandbox(metadata={"a": "1", "b": "2"}, skip_health_check=True)
    info = sbx.patch_metadata({"a": "10", "b": None, "c": "3"})
    assert info.metadata == {"a": "10", "c": "3"}
    assert sbx.get_info().metadata == {"a": "10", "c": "3"}


def test_pause_resume(make_sandbox, manager, conn):
    sbx = make_sandbox()
    if RUNTIME == "kubernetes":  # refused there, with a clear error, and the sandbox keeps running
        with pytest.raises(SandboxApiException) as err:
            sbx.pause()
        # the SDK models no error body for pause (its error is UNEXPECTED_RESPONSE); ours is in the text
        assert err.value.status_code == 400 and "SANDBOX::API_NOT_SUPPORTED" in str(err.value)
        assert manager.get_sandbox_info(sbx.id).status.state == "Running"
        return
    sbx.commands.run("echo before > /tmp/pause-marker")
    sbx.pause()
    wait_state(manager, sbx.id, "Paused")
    listed = manager.list_sandbox_infos(SandboxFilter(states=["Paused"]))
    assert sbx.id in [s.id for s in listed.sandbox_infos]
    resumed = SandboxSync.resume(sbx.id, connection_config=conn, resume_timeout=timedelta(seconds=60))
    try:
        wait_state(manager, sbx.id, "Running")
        out = resumed.commands.run("cat /tmp/pause-marker")
        assert out.logs.stdout[0].text.strip() == "before"
    finally:
        resumed.close()


def test_connect_existing(make_sandbox, conn):
    sbx = make_sandbox()
    again = SandboxSync.connect(sbx.id, connection_config=conn, connect_timeout=timedelta(seconds=30))
    try:
        assert again.id == sbx.id
        assert again.is_healthy()
        assert again.commands.run("echo connected").logs.stdout[0].text.strip() == "connected"
    finally:
        again.close()


def test_unknown_sandbox(manager):
    for call in (
        lambda: manager.get_sandbox_info("no-such-sandbox"),
        lambda: manager.kill_sandbox("no-such-sandbox"),
        lambda: manager.renew_sandbox("no-such-sandbox", timedelta(minutes=5)),
    ):
        with pytest.raises(SandboxApiException) as err:
            call()
        assert err.value.status_code == 404
        assert err.value.error.code.endswith("SANDBOX_NOT_FOUND"), err.value.error.code


def test_bad_input_is_a_400(conn, manager):
    before = manager.list_sandbox_infos(SandboxFilter()).pagination.total_items
    with pytest.raises(SandboxApiException) as err:
        SandboxSync.create(IMAGE, connection_config=conn, resource={"cpu": "lots"}, skip_health_check=True)
    assert err.value.status_code == 400
    assert err.value.error.code.startswith("SANDBOX::"), err.value.error.code
    assert manager.list_sandbox_infos(SandboxFilter()).pagination.total_items == before


def test_endpoints(make_sandbox, manager):
    sbx = make_sandbox()
    ep = sbx.get_endpoint(44772)
    assert ep.endpoint
    assert ":" in ep.endpoint or "/" in ep.endpoint
    ep2 = sbx.get_endpoint(8080)
    assert ep2.endpoint and ep2.endpoint != ep.endpoint
