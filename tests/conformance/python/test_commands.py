"""Commands through the SDK and the in-sandbox agent: output, exit codes, streaming handlers, cwd, env,
background commands with status and logs, interrupt."""

import time
from datetime import timedelta

from opensandbox.models.execd import RunCommandOpts
from opensandbox.models.execd_sync import ExecutionHandlersSync


def stdout_text(execution):
    """The agent sends one message per line, without its newline (as upstream's agent does)."""
    return "\n".join(m.text for m in execution.logs.stdout)


def test_run_stdout_stderr_exit_code(shared_sandbox):
    ex = shared_sandbox.commands.run("echo out; echo err >&2; exit 0")
    assert stdout_text(ex).strip() == "out"
    assert [m.text for m in ex.logs.stderr] == ["err"]
    assert ex.exit_code == 0
    assert ex.error is None
    assert ex.id


def test_nonzero_exit_code(shared_sandbox):
    ex = shared_sandbox.commands.run("exit 3")
    assert ex.exit_code == 3
    assert ex.error is not None


def test_streaming_handlers(shared_sandbox):
    seen, errs, done, inits = [], [], [], []
    handlers = ExecutionHandlersSync(
        on_stdout=lambda m: seen.append(m.text),
        on_stderr=lambda m: errs.append(m.text),
        on_execution_complete=lambda c: done.append(c),
        on_init=lambda i: inits.append(i.id),
    )
    ex = shared_sandbox.commands.run("for i in 1 2 3; do echo line$i; sleep 0.2; done; echo bad >&2", handlers=handlers)
    assert seen == ["line1", "line2", "line3"]
    assert errs == ["bad"]
    assert len(done) == 1 and done[0].execution_time_in_millis >= 400
    assert inits == [ex.id]


def test_working_directory_and_env(shared_sandbox):
    ex = shared_sandbox.commands.run("pwd", opts=RunCommandOpts(working_directory="/tmp"))
    assert stdout_text(ex).strip() == "/tmp"
    ex = shared_sandbox.commands.run("echo $CONF_VAR", opts=RunCommandOpts(envs={"CONF_VAR": "v1"}))
    assert stdout_text(ex).strip() == "v1"


def test_command_timeout(shared_sandbox):
    t0 = time.monotonic()
    ex = shared_sandbox.commands.run("sleep 30", opts=RunCommandOpts(timeout=timedelta(seconds=1)))
    assert time.monotonic() - t0 < 20
    assert ex.exit_code != 0 or ex.error is not None


def test_background_status_logs_interrupt(shared_sandbox):
    cmds = shared_sandbox.commands
    ex = cmds.run("echo started; sleep 0.3; echo done", opts=RunCommandOpts(background=True))
    assert ex.id
    deadline = time.monotonic() + 20
    status = cmds.get_command_status(ex.id)
    while status.running and time.monotonic() < deadline:
        time.sleep(0.2)
        status = cmds.get_command_status(ex.id)
    assert status.running is False
    assert status.exit_code == 0
    logs = cmds.get_background_command_logs(ex.id)
    assert logs.content.split() == ["started", "done"]

    long = cmds.run("sleep 60", opts=RunCommandOpts(background=True))
    assert cmds.get_command_status(long.id).running is True
    cmds.interrupt(long.id)
    deadline = time.monotonic() + 20
    while cmds.get_command_status(long.id).running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cmds.get_command_status(long.id).running is False


def test_metrics(shared_sandbox):
    m = shared_sandbox.get_metrics()
    assert m.memory_total_in_mib > 0
    assert m.cpu_count > 0


def test_uid_gid(shared_sandbox):
    ex = shared_sandbox.commands.run("id -u; id -g", opts=RunCommandOpts(uid=1234, gid=2345))
    assert stdout_text(ex).split() == ["1234", "2345"]
