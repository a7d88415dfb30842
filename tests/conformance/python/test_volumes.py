"""Volumes on create (issue 17): a host bind mount under storage.allowed_host_paths (run-python.sh allows a
temporary $CONFORMANCE_HOST_DIR),
read-only, subPath, a named (pvc) volume the server creates and removes with deleteOnSandboxTermination,
and a refused host path as a 400 that leaves nothing behind."""

import os
import uuid

import pytest
from opensandbox.exceptions import SandboxApiException
from opensandbox.models.sandboxes import PVC, Host, SandboxFilter, Volume

HOST_DIR = os.environ.get("CONFORMANCE_HOST_DIR", "/tmp/osb-conformance-host")


def out(ex):
    return "\n".join(m.text for m in ex.logs.stdout)


@pytest.fixture
def host_dir():
    os.makedirs(os.path.join(HOST_DIR, "sub"), exist_ok=True)
    with open(os.path.join(HOST_DIR, "marker.txt"), "w") as f:
        f.write("from-host\n")
    with open(os.path.join(HOST_DIR, "sub", "inner.txt"), "w") as f:
        f.write("inner\n")
    return HOST_DIR


def test_host_volume_rw_ro_subpath(make_sandbox, host_dir):
    sbx = make_sandbox(
        volumes=[
            Volume(name="rw", host=Host(path=host_dir), mount_path="/mnt/rw"),
            Volume(name="ro", host=Host(path=host_dir), mount_path="/mnt/ro", read_only=True),
            Volume(name="sub", host=Host(path=host_dir), mount_path="/mnt/sub", sub_path="sub"),
        ]
    )
    assert out(sbx.commands.run("cat /mnt/rw/marker.txt")).strip() == "from-host"
    sbx.commands.run("echo written > /mnt/rw/from-sandbox.txt")
    with open(os.path.join(host_dir, "from-sandbox.txt")) as f:
        assert f.read().strip() == "written"
    assert sbx.commands.run("echo x > /mnt/ro/nope").exit_code != 0
    assert out(sbx.commands.run("ls /mnt/sub")).split() == ["inner.txt"]


def test_refused_host_path_is_400_and_leaves_nothing(conn, manager, make_sandbox):
    before = manager.list_sandbox_infos(SandboxFilter()).pagination.total_items
    with pytest.raises(SandboxApiException) as err:
        make_sandbox(volumes=[Volume(name="etc", host=Host(path="/etc"), mount_path="/mnt/etc")])
    assert err.value.status_code == 400
    with pytest.raises(SandboxApiException) as err:
        make_sandbox(
            volumes=[Volume(name="esc", host=Host(path=HOST_DIR), mount_path="/mnt/x", sub_path="../..")]
        )
    assert err.value.status_code == 400
    assert manager.list_sandbox_infos(SandboxFilter()).pagination.total_items == before


def test_named_volume_created_and_deleted(make_sandbox, manager):
    claim = "conf-" + uuid.uuid4().hex[:8]
    vol = Volume(
        name="data",
        pvc=PVC(claim_name=claim, create_if_not_exists=True, delete_on_sandbox_termination=False),
        mount_path="/data",
    )
    first = make_sandbox(volumes=[vol])
    first.commands.run("echo persisted > /data/f.txt")
    first.kill()
    vol2 = Volume(
        name="data",
        pvc=PVC(claim_name=claim, create_if_not_exists=False, delete_on_sandbox_termination=True),
        mount_path="/data",
    )
    second = make_sandbox(volumes=[vol2])
    assert out(second.commands.run("cat /data/f.txt")).strip() == "persisted"
    second.kill()
