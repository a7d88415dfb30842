"""Drives upstream's MCP server (opensandbox-mcp, pinned in requirements.txt) against our server, with the
`mcp` client library over stdio: starts `opensandbox-mcp --transport stdio` pointing at OPENSANDBOX_URL,
lists its tools, then sandbox_create -> command_run -> sandbox_kill, and checks through the REST API that
the sandbox existed and is gone. Exit code 0 when every step passed.
Env: OPENSANDBOX_URL, OPENSANDBOX_API_KEY, SANDBOX_IMAGE, OPENSANDBOX_USE_SERVER_PROXY=1."""

import asyncio
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

URL = os.environ["OPENSANDBOX_URL"]
API_KEY = os.environ.get("OPENSANDBOX_API_KEY", "")
IMAGE = os.environ.get("SANDBOX_IMAGE", "local/busybox:latest")


def rest_status(sandbox_id):
    req = urllib.request.Request(f"{URL}/v1/sandboxes/{sandbox_id}", headers={"OPEN-SANDBOX-API-KEY": API_KEY})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, None


def result_data(res):
    """The tool's structured result (a dict), whatever the content form."""
    if res.structured_content is not None:
        data = res.structured_content
        return data.get("result", data) if isinstance(data, dict) and set(data) == {"result"} else data
    return json.loads(res.content[0].text)


async def main():
    failures = []

    def check(name, cond, detail=""):
        print(("PASS " if cond else "FAIL ") + name + ("" if cond else f": {detail}"), flush=True)
        if not cond:
            failures.append(name)

    exe = shutil.which("opensandbox-mcp") or os.path.join(os.path.dirname(sys.executable), "opensandbox-mcp")
    args = ["--transport", "stdio", "--domain", urlparse(URL).netloc, "--protocol", urlparse(URL).scheme,
            "--api-key", API_KEY, "--request-timeout-seconds", "60"]
    if os.environ.get("OPENSANDBOX_USE_SERVER_PROXY") == "1":
        args.append("--use-server-proxy")
    env = dict(os.environ, OPENSANDBOX_DISABLE_METRICS="1")
    params = StdioServerParameters(command=exe, args=args, env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = {t.name for t in (await session.list_tools()).tools}
            check("tools listed", {"sandbox_create", "command_run", "sandbox_kill"} <= tools, sorted(tools))

            res = await session.call_tool("sandbox_create", {
                "image": IMAGE, "entrypoint": ["sleep", "3600"], "timeout_seconds": 600,
                "ready_timeout_seconds": 60, "resource": {"cpu": "500m", "memory": "256Mi"},
                "metadata": {"via": "mcp"},
            })
            check("sandbox_create", not res.is_error, res.content)
            if res.is_error:
                return 1
            created = result_data(res)
            sandbox_id = created["sandbox_id"]
            status, body = rest_status(sandbox_id)
            check("sandbox visible through REST", status == 200 and body["metadata"].get("via") == "mcp",
                  (status, body))

            res = await session.call_tool("command_run", {"sandbox_id": sandbox_id,
                                                          "command": "echo from-mcp; exit 5"})
            check("command_run", not res.is_error, res.content)
            if not res.is_error:
                ex = result_data(res)
                stdout = "".join(m["text"] for m in ex["logs"]["stdout"])
                check("command stdout", stdout.strip() == "from-mcp", ex)
                check("command exit code", ex.get("exit_code") == 5, ex)

            res = await session.call_tool("sandbox_kill", {"sandbox_id": sandbox_id})
            check("sandbox_kill", not res.is_error and result_data(res).get("status") == "killed", res.content)
            deadline = time.monotonic() + 30
            status = None
            while time.monotonic() < deadline:
                status, _ = rest_status(sandbox_id)
                if status == 404:
                    break
                time.sleep(0.3)
            check("sandbox gone after sandbox_kill", status == 404, status)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
