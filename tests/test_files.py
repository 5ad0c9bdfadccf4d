"""files.py: writes into folders others may write to as well."""

from __future__ import annotations

import threading

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
