"""Fixtures of the Python SDK conformance suite: a connection to the server run-python.sh started (env
OPENSANDBOX_URL, OPENSANDBOX_API_KEY), a manager, and sandboxes that are always killed afterwards.

Every sandbox a test makes goes through `make_sandbox`, which kills it at teardown even when the test failed,
so the runner's leak check (server.sh) only fires on a server bug."""

import os
import uuid
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from opensandbox import SandboxManagerSync, SandboxSync
from opensandbox.config import ConnectionConfigSync

URL = os.environ.get("OPENSANDBOX_URL", "http://127.0.0.1:8080")
API_KEY = os.environ.get("OPENSANDBOX_API_KEY")
IMAGE = os.environ.get("SANDBOX_IMAGE", "local/busybox:latest")
USE_SERVER_PROXY = os.environ.get("OPENSANDBOX_USE_SERVER_PROXY") == "1"
RUNTIME = os.environ.get("OPENSANDBOX_RUNTIME", "docker")
# busybox has no `tail -f /dev/null` semantics problem, but keep the entrypoint explicit and cheap
ENTRYPOINT = ["sleep", "3600"]
RESOURCE = {"cpu": "500m", "memory": "256Mi"}


def connection(use_server_proxy=None):
    parsed = urlparse(URL)
    return ConnectionConfigSync(
        domain=parsed.netloc,
        protocol=parsed.scheme,
        api_key=API_KEY,
        request_timeout=timedelta(seconds=60),
        use_server_proxy=USE_SERVER_PROXY if use_server_proxy is None else use_server_proxy,
        endpoint_cache_disabled=True,
        disable_metrics=True,
    )


def run_id():
    return "conf-" + uuid.uuid4().hex[:10]


@pytest.fixture
def conn():
    return connection()


@pytest.fixture
def manager(conn):
    mgr = SandboxManagerSync.create(connection_config=conn)
    yield mgr
    mgr.close()


@pytest.fixture
def make_sandbox(conn):
    """make_sandbox(**kwargs) -> SandboxSync: SandboxSync.create with this suite's defaults."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("connection_config", conn)
        kwargs.setdefault("entrypoint", ENTRYPOINT)
        kwargs.setdefault("resource", RESOURCE)
        kwargs.setdefault("ready_timeout", timedelta(seconds=60))
        kwargs.setdefault("timeout", timedelta(minutes=10))
        if "snapshot_id" not in kwargs:
            kwargs.setdefault("image", IMAGE)
        sbx = SandboxSync.create(**kwargs)
        made.append(sbx)
        return sbx

    yield make
    for sbx in made:
        try:
            sbx.kill()
        except Exception:  # already killed by the test
            pass
        sbx.close()


@pytest.fixture(scope="module")
def shared_sandbox():
    """One ready sandbox (agent reachable) for the read-mostly tests of a module."""
    sbx = SandboxSync.create(
        IMAGE,
        connection_config=connection(),
        entrypoint=ENTRYPOINT,
        resource=RESOURCE,
        metadata={"suite": "conformance-python"},
        ready_timeout=timedelta(seconds=60),
    )
    yield sbx
    try:
        sbx.kill()
    finally:
        sbx.close()
