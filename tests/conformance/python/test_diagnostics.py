"""Diagnostics (issue 17, diagnostic-api.yml): the container's output
as `logs` (scope container) and the sandbox's transitions as `events` (scope lifecycle)."""

import time
from datetime import timedelta

import pytest
from opensandbox.exceptions import SandboxApiException


def test_logs_and_events(make_sandbox, manager):
    sbx = make_sandbox(entrypoint=["sh", "-c", "echo conformance-diag-out; echo conformance-diag-err >&2; sleep 3600"])
    deadline = time.monotonic() + 20
    logs = sbx.get_diagnostic_logs("container")
    while "conformance-diag-out" not in (logs.content or "") and time.monotonic() < deadline:
        time.sleep(0.5)
        logs = sbx.get_diagnostic_logs("container")
    assert logs.sandbox_id == sbx.id
    assert logs.content_type.startswith("text/plain")
    assert "conformance-diag-out" in logs.content
    assert "conformance-diag-err" in logs.content
    assert logs.truncated is False

    sbx.renew(timedelta(minutes=20))
    events = manager.get_diagnostic_events(sbx.id, "lifecycle")
    assert events.sandbox_id == sbx.id
    assert "Running" in events.content


def test_unknown_sandbox(manager):
    with pytest.raises(SandboxApiException) as err:
        manager.get_diagnostic_logs("no-such-sandbox", "container")
    assert err.value.status_code == 404
