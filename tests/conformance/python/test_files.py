"""Files through the SDK and the agent: write/read (text, binary, large), upload of a stream, byte ranges,
info, search, directories, move, permissions, replace, delete."""

import hashlib
import io
import os

import pytest
from opensandbox.exceptions import SandboxException
from opensandbox.models.filesystem import (
    ContentReplaceEntry,
    MoveEntry,
    SearchEntry,
    SetPermissionEntry,
    WriteEntry,
)

BASE = "/tmp/conf-files"


@pytest.fixture(scope="module")
def fs(shared_sandbox):
    shared_sandbox.files.create_directories([WriteEntry(path=BASE, mode=755)])
    return shared_sandbox.files


def test_write_read_text(fs):
    fs.write_file(f"{BASE}/hello.txt", "héllo\nworld\n")
    assert fs.read_file(f"{BASE}/hello.txt") == "héllo\nworld\n"


def test_binary_roundtrip_and_stream(fs):
    blob = os.urandom(3 * 1024 * 1024 + 17)
    fs.write_files([WriteEntry(path=f"{BASE}/blob.bin", data=io.BytesIO(blob))])
    assert fs.read_bytes(f"{BASE}/blob.bin") == blob
    streamed = b"".join(fs.read_bytes_stream(f"{BASE}/blob.bin", chunk_size=64 * 1024))
    assert hashlib.sha256(streamed).hexdigest() == hashlib.sha256(blob).hexdigest()


def test_byte_range(fs):
    fs.write_file(f"{BASE}/range.txt", "0123456789")
    assert fs.read_file(f"{BASE}/range.txt", range_header="bytes=2-5") == "2345"


def test_info_and_permissions(fs):
    path = f"{BASE}/perm.sh"
    fs.write_file(path, "#!/bin/sh\necho hi\n", mode=600)
    info = fs.get_file_info([path])[path]
    assert info.size == len("#!/bin/sh\necho hi\n")
    assert info.mode == 600
    fs.set_permissions([SetPermissionEntry(path=path, mode=755)])
    assert fs.get_file_info([path])[path].mode == 755


def test_search(fs):
    fs.create_directories([WriteEntry(path=f"{BASE}/tree/sub", mode=755)])
    fs.write_files(
        [
            WriteEntry(path=f"{BASE}/tree/a.py", data="a"),
            WriteEntry(path=f"{BASE}/tree/sub/b.py", data="b"),
            WriteEntry(path=f"{BASE}/tree/c.txt", data="c"),
        ]
    )
    found = fs.search(SearchEntry(path=f"{BASE}/tree", pattern="*.py"))
    assert sorted(e.path for e in found) == [f"{BASE}/tree/a.py", f"{BASE}/tree/sub/b.py"]


def test_move_replace_delete(fs):
    fs.write_file(f"{BASE}/m1.txt", "alpha beta alpha")
    fs.move_files([MoveEntry(src=f"{BASE}/m1.txt", dest=f"{BASE}/m2.txt")])
    with pytest.raises(SandboxException):
        fs.read_file(f"{BASE}/m1.txt")
    fs.replace_contents([ContentReplaceEntry(path=f"{BASE}/m2.txt", old_content="alpha", new_content="omega")])
    assert fs.read_file(f"{BASE}/m2.txt") == "omega beta omega"
    fs.delete_files([f"{BASE}/m2.txt"])
    with pytest.raises(SandboxException):
        fs.read_file(f"{BASE}/m2.txt")


def test_directories(fs):
    fs.create_directories([WriteEntry(path=f"{BASE}/d1/d2", mode=755)])
    assert fs.get_file_info([f"{BASE}/d1/d2"])[f"{BASE}/d1/d2"].size >= 0
    fs.delete_directories([f"{BASE}/d1"])
    with pytest.raises(SandboxException):
        fs.get_file_info([f"{BASE}/d1"])


def test_missing_file(fs):
    with pytest.raises(SandboxException):
        fs.read_file(f"{BASE}/does-not-exist")
