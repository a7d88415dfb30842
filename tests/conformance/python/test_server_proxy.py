"""use_server_proxy: the same agent calls with every request to the agent going through the server
(/sandboxes/{id}/proxy/{port}), and the endpoint the SDK is given pointing at the server."""

from datetime import timedelta
from urllib.parse import urlparse

from conftest import URL, connection
from opensandbox.models.execd import RunCommandOpts


def test_server_proxy_endpoint_commands_files(make_sandbox):
    sbx = make_sandbox(connection_config=connection(use_server_proxy=True))
    ep = sbx.get_endpoint(44772)
    server = urlparse(URL).netloc
    assert server in ep.endpoint, ep.endpoint
    assert f"/sandboxes/{sbx.id}/proxy/44772" in ep.endpoint, ep.endpoint

    ex = sbx.commands.run("for i in 1 2 3; do echo p$i; done; exit 4")
    assert [m.text for m in ex.logs.stdout] == ["p1", "p2", "p3"]
    assert ex.exit_code == 4

    sbx.files.write_file("/tmp/proxied.txt", "through the server")
    assert sbx.files.read_file("/tmp/proxied.txt") == "through the server"

    bg = sbx.commands.run("sleep 0.2; echo bg", opts=RunCommandOpts(background=True))
    assert bg.id
    sid = sbx.commands.create_session()
    try:
        out = sbx.commands.run_in_session(sid, "echo sess")
        assert out.logs.stdout[0].text.strip() == "sess"
    finally:
        sbx.commands.delete_session(sid)
    assert sbx.renew(timedelta(minutes=15)).expires_at is not None
