"""Line-based reads and directory listing of the agent (issue 17, execd-api.yaml): offset (1-based first line) and limit (line count) on /files/download, exclusive
with a byte range; /directories/list with depth."""

import pytest
from opensandbox.exceptions import SandboxException
from opensandbox.models.filesystem import DirectoryListEntry, WriteEntry

BASE = "/tmp/conf-lines"


@pytest.fixture(scope="module")
def fs(shared_sandbox):
    fs = shared_sandbox.files
    fs.create_directories([WriteEntry(path=f"{BASE}/dir/sub", mode=755)])
    fs.write_file(f"{BASE}/numbers.txt", "".join(f"line {i}\n" for i in range(1, 1001)))
    return fs


# upstream's agent joins the selected lines with "\n" and ends without one (its line terminators, CRLF
# included, are not part of a line)
def test_offset_limit(fs):
    assert fs.read_file(f"{BASE}/numbers.txt", offset=1, limit=2) == "line 1\nline 2"
    assert fs.read_file(f"{BASE}/numbers.txt", offset=995, limit=3) == "line 995\nline 996\nline 997"
    # past the end: what is there
    assert fs.read_file(f"{BASE}/numbers.txt", offset=999, limit=10) == "line 999\nline 1000"
    assert fs.read_file(f"{BASE}/numbers.txt", offset=2000, limit=10) == ""


def test_offset_only_reads_to_the_end(fs):
    assert fs.read_file(f"{BASE}/numbers.txt", offset=1000) == "line 1000"


def test_lines_and_range_are_exclusive(fs):
    with pytest.raises(SandboxException):
        fs.read_file(f"{BASE}/numbers.txt", offset=1, limit=1, range_header="bytes=0-3")


def test_list_directory(fs):
    fs.write_file(f"{BASE}/dir/a.txt", "a")
    fs.write_file(f"{BASE}/dir/sub/b.txt", "b")
    top = fs.list_directory(DirectoryListEntry(path=f"{BASE}/dir", depth=1))
    assert sorted(e.path for e in top) == [f"{BASE}/dir/a.txt", f"{BASE}/dir/sub"]
    deep = fs.list_directory(DirectoryListEntry(path=f"{BASE}/dir", depth=2))
    assert f"{BASE}/dir/sub/b.txt" in [e.path for e in deep]
