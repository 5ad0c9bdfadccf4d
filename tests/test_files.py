"""files.py: writes into folders others may write to as well."""

from __future__ import annotations

import errno
import shutil
import threading

import pytest

from audience_profiles.files import replace_file


def test_two_writers_of_one_file_do_not_trip_over_each_other(tmp_path):
    """With one fixed temporary name, each removed or renamed the other's temporary file: one
    failed (FileNotFoundError, FileExistsError), or a half-written file took the target's place."""
    target = tmp_path / "index.html"
    errors: list[BaseException] = []

    def write(content: bytes) -> None:
        for _ in range(50):
            try:
                replace_file(target, content)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    contents = (b"a" * 500_000, b"b" * 500_000)
    writers = [threading.Thread(target=write, args=(c,)) for c in contents]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert errors == []
    assert target.read_bytes() in contents
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]  # no temporary left


def test_a_file_is_copied_into_place(tmp_path):
    source = tmp_path / "part.csv"
    source.write_bytes(b"x,y\n")
    replace_file(tmp_path / "out.csv", source)
    assert (tmp_path / "out.csv").read_bytes() == b"x,y\n"


def _fill_then_fail(source, out, length=0):
    out.write(source.read(4096))  # part of the content reaches the disk first
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_that_runs_out_of_disk_leaves_the_old_file_and_no_partial_copy(
    tmp_path, monkeypatch
):
    target = tmp_path / "part-00000.csv"
    target.write_bytes(b"old\n")
    content = tmp_path / "rendered.csv"
    content.write_bytes(b"x" * 100_000)
    monkeypatch.setattr(shutil, "copyfileobj", _fill_then_fail)

    with pytest.raises(OSError) as raised:
        replace_file(target, content)

    assert raised.value.errno == errno.ENOSPC
    # Named: "[Errno 28] No space left on device: '.../part-00000.csv'".
    assert str(target) in str(raised.value)
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000.csv", "rendered.csv"]
