"""Persistent bash sessions through the SDK: state (cwd, variables) survives between runs, a working
directory per session and per run, deletion."""

import pytest
from opensandbox.exceptions import SandboxException


def text(ex):
    return "\n".join(m.text for m in ex.logs.stdout).strip()


def test_session_keeps_state(shared_sandbox):
    cmds = shared_sandbox.commands
    sid = cmds.create_session(working_directory="/tmp")
    try:
        assert text(cmds.run_in_session(sid, "pwd")) == "/tmp"
        cmds.run_in_session(sid, "export CONF_SESSION=kept; cd /etc")
        assert text(cmds.run_in_session(sid, "echo $CONF_SESSION; pwd")).split() == ["kept", "/etc"]
        assert text(cmds.run_in_session(sid, "pwd", working_directory="/")) == "/"
        ex = cmds.run_in_session(sid, "false")
        assert ex.exit_code == 1
    finally:
        cmds.delete_session(sid)


def test_sessions_are_separate(shared_sandbox):
    cmds = shared_sandbox.commands
    a = cmds.create_session()
    b = cmds.create_session()
    try:
        assert a != b
        cmds.run_in_session(a, "X=only-a")
        assert text(cmds.run_in_session(b, "echo ${X:-unset}")) == "unset"
        assert text(cmds.run_in_session(a, "echo $X")) == "only-a"
    finally:
        cmds.delete_session(a)
        cmds.delete_session(b)


def test_deleted_session_is_gone(shared_sandbox):
    cmds = shared_sandbox.commands
    sid = cmds.create_session()
    cmds.delete_session(sid)
    with pytest.raises(SandboxException):
        cmds.run_in_session(sid, "echo nope")
