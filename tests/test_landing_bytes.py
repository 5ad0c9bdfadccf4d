"""Hostile landing bytes against the contract's promise (docs/data-contract.md): every input row is
in an output table or in quarantine, the counts reconcile, and a file that cannot be read fails,
naming it (and the line, where there is one).

The files' bytes are generated: quotes left open or doubled, a value spanning lines, LF, CRLF and
lone CR mixed, a last line without its ending, a byte order mark at the start and inside, NUL
bytes, bytes that are not UTF-8, values over 1,024 characters and a line over DuckDB's maximum
line size, extra, missing and unnamed columns, the header repeated, blank and white-space lines,
JSON lines that are arrays, scalars, nested, truncated or name a field twice, a JSON document
(an array of records, records over several lines) instead of JSON Lines, a field holding the
delimiter, trailing delimiters, and random byte edits on top. A reference reader here, in plain
Python, reads the same bytes by the contract's own words (the rows and the line each starts on,
or why the file fails); the extract and validate steps must agree with it, row by row.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from audience_profiles import landing, pipeline
from audience_profiles.landing import SOURCES, LandingError, stage_files
from tests.support import write_config

DS = "2022-04-29"

# --- the reference reader: the contract's rules, from the bytes --------------------------------


class Fails(Exception):
    """The contract has the file fail the extract; ``what``: words its message must hold."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


@dataclass
class Row:
    line: int  # the physical line the record starts on (the header is line 1)
    unreadable: bool  # a malformed CSV row, not a JSON object, a nested or repeated field
    values: dict | None = None  # column -> value, for a row that can be read
    raw: str = ""


def physical_lines(data: bytes) -> list[tuple[str, str]]:
    """``(text, ending)`` per line: a CRLF, a lone CR and an LF each end one; a last line without
    an ending is one. A UTF-8 byte order mark at the start is allowed; a line that is not UTF-8
    fails the file, naming it."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    lines = []
    for number, m in enumerate(re.finditer(rb"([^\r\n]*)(\r\n|\r|\n|$)", data), start=1):
        if m.start() == len(data) and not m.group(0):
            break
        try:
            lines.append((m.group(1).decode("utf-8"), m.group(2).decode()))
        except UnicodeDecodeError:
            raise Fails(f"line {number} is not UTF-8 text") from None
    return lines


def split_fields(state: dict, text: str, ending: str) -> list[str] | str | None:
    """One more line of a CSV record: its fields once it ends, ``"after quote"`` for text after
    a closing quote, None while a quote is open. A value is quoted when its first character after
    any spaces is a quote; ``""`` in it is a quote; spaces around the quotes are not part of it;
    a quote later in an unquoted value is text; an open quote takes the line break, as written."""
    fields, pos, end = state["fields"], 0, len(text)
    while True:
        if state["quoted"] is None:
            start = pos
            while pos < end and text[pos] == " ":
                pos += 1
            if pos == end or text[pos] != '"':
                comma = text.find(",", start)
                fields.append(text[start:] if comma < 0 else text[start:comma])
                if comma < 0:
                    return fields
                pos = comma + 1
                continue
            state["quoted"], pos = [], pos + 1
        value = state["quoted"]
        while pos < end and not (text[pos] == '"' and text[pos + 1 : pos + 2] != '"'):
            value.append(text[pos])
            pos += 2 if text[pos] == '"' else 1
        if pos >= end:
            value.append(ending)
            return None
        fields.append("".join(value))
        state["quoted"], pos = None, pos + 1
        while pos < end and text[pos] == " ":
            pos += 1
        if pos == end:
            return fields
        if text[pos] != ",":
            return "after quote"
        pos += 1


def csv_rows(source: str, data: bytes) -> list[Row]:
    lines = physical_lines(data)
    if not lines:
        raise Fails("the file is empty")
    if not lines[0][0].strip():
        raise Fails("line 1 is blank")
    header = split_fields({"fields": [], "quoted": None}, lines[0][0], "")
    if not isinstance(header, list):
        raise Fails("malformed CSV header")
    names = [h.strip() for h in header]
    invisible = "\ufeff\u200b\u200c\u200d\u2060"  # a name hiding one of them is named first
    bare = ["".join(c for c in n if c not in invisible) for n in names]
    if any(
        b != n and b.lower() in SOURCES[source].columns for b, n in zip(bare, names, strict=True)
    ):
        raise Fails("invisible characters in column names")
    if any(c not in names for c in SOURCES[source].required):
        raise Fails("missing required column")
    if any(names.count(c) > 1 for c in SOURCES[source].columns):
        raise Fails("appear more than once")
    width = named = len(names)
    while named and not names[named - 1]:  # `...,votes,`: columns a row may leave out
        named -= 1
    rows, i = [], 1
    while i < len(lines):
        if lines[i][0] == "":  # an empty line is no record
            i += 1
            continue
        start, state = i, {"fields": [], "quoted": None}
        while (fields := split_fields(state, *lines[i])) is None and i + 1 < len(lines):
            i += 1
        record, i = lines[start : i + 1], i + 1
        if isinstance(fields, list):
            while len(fields) > width and fields[-1] == "":  # `...,1,,` is the header's width
                fields.pop()
            fields += [""] * (width - len(fields)) if named <= len(fields) else []
        if not isinstance(fields, list) or len(fields) != width:  # each line on its own
            rows += [Row(start + 1 + k, True, raw=t) for k, (t, _) in enumerate(record)]
            continue
        raw = "".join(t + e for t, e in record)[: -len(record[-1][1]) or None]
        values = {c: fields[names.index(c)] if c in names else "" for c in SOURCES[source].columns}
        rows.append(Row(start + 1, False, values, raw))
    return rows


class _Object(list):
    """A JSON object's (key, value) pairs, a key named twice kept twice."""


def _without_trailing_commas(text: str) -> str:
    """Finding 3: DuckDB's JSON reader takes a comma before a closing ``}`` or ``]``
    (``{"a": 1,}``), which JSON does not; modelled here, as the row is read as written."""
    out: list[str] = []
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif (
            ch == ","
            and text[i + 1 :].lstrip(" \t")[:1] in ("}", "]")
            and "".join(out).rstrip(" \t")[-1:] not in ("", ",", "{", "[", ":")
        ):
            continue
        out.append(ch)
    return "".join(out)


def _json_object(text: str) -> _Object | None:
    for candidate in (text, _without_trailing_commas(text)):
        try:
            parsed = json.loads(candidate, object_pairs_hook=_Object, parse_constant=_Literal)
        except (ValueError, RecursionError):
            continue
        return parsed if isinstance(parsed, _Object) else None
    return None


class _Literal(float):
    """``NaN``, ``Infinity`` or ``-Infinity`` as written: read as text."""


def _not_text(value) -> bool:
    """A value the extract does not take as text: an object or array, or a number with a
    fraction or exponent (read as a double, its digits would change; ``1e400`` too)."""
    return isinstance(value, list) or not isinstance(value, _Literal)


def _json_document(lines: list[tuple[str, str]]) -> str | None:
    """The words of the failure when the file is one JSON document, not JSON Lines: its first
    record (from its first line not of white space) opens a top-level array whose first element
    is an object, or is one object over several lines, parsed as JSON up to its end; a later
    line that is an object on its own ends the search (a cut first record, then JSON Lines)."""
    numbered = [(n, t) for n, (t, _) in enumerate(lines, start=1) if t != ""]
    start = next((i for i, (_, t) in enumerate(numbered) if t.lstrip("\ufeff").strip()), None)
    if start is None:
        return None
    first, head = numbered[start]
    head = head.lstrip("\ufeff").strip()
    if _json_object(head) is not None or head[:1] not in ("[", "{"):
        return None
    text = head[1:] if head[0] == "[" else head
    for number, line in numbered[start:][: landing.DOCUMENT_LINES]:
        if number != first:
            if len(text) > landing.DOCUMENT_CHARS:
                return None
            text += "\n" + line
        try:
            value, end = json.JSONDecoder().raw_decode(text.lstrip())
        except (ValueError, RecursionError):
            if number != first and _json_object(line) is not None:
                return None
            continue
        if not isinstance(value, dict):
            return None
        if head[0] == "[":
            after = text.lstrip()[end:].lstrip()[:1]
            return "opens a JSON array of records" if after in ("", ",", "]") else None
        return f"lines {first}-{number} are one JSON object" if number != first else None
    return None


def json_rows(source: str, data: bytes) -> list[Row]:
    """Every non-empty line is a record: an object, or quarantined (`not a JSON object`); an
    object or array in a field read, or a field read named twice, quarantines it too. A file
    that is one JSON document (an array of records, a record over several lines) fails."""
    columns, rows, keys, objects = SOURCES[source].columns, [], set(), False
    if (document := _json_document(physical_lines(data))) is not None:
        raise Fails(document)
    for number, (text, _) in enumerate(physical_lines(data), start=1):
        if text == "":
            continue
        pairs = _json_object(text)
        if pairs is None:
            rows.append(Row(number, True, raw=text))
            continue
        objects = True
        keys.update(k for k, _ in pairs)
        values = {c: [v for k, v in pairs if k == c] for c in columns}
        # a fraction or exponent (json.loads gives a float; the literals NaN and Infinity, a
        # _Literal, are read as text)
        unreadable = any(
            len(v) > 1 or (v and isinstance(v[0], list | float) and _not_text(v[0]))
            for v in values.values()
        )
        read = {c: v[0] if v else None for c, v in values.items()}
        rows.append(Row(number, unreadable, None if unreadable else read, text))
    if objects and any(c not in keys for c in SOURCES[source].required):
        raise Fails("missing required field")
    return rows


def expected_rows(source: str, name: str, data: bytes) -> list[Row]:
    return (csv_rows if name.endswith(".csv") else json_rows)(source, data)


# --- hostile bytes -----------------------------------------------------------------------------

VALID = {
    "date": DS,
    "event_id": "e1",
    "poll_id": "p1",
    "session_id": "s1",
    "option": "0",
    "votes": "1",
    "title": "Team?",
    "option_label": "Blue",
    "element_type": "vote",
    "entry_datetime": f"{DS}T10:00:00",
    "email": "ann@example.com",
    "first_name": "Ann",
    "last_name": "Lee",
    "optin_1": "yes",
    "optin_2": "no",
    "accept_terms": "1",
    "form_name": "Win",
    "form_id": "29",
    "observed_at": f"{DS} 09:30:00",
    "external_id": "u-1",
}
LONG = 1100  # over 1,024 characters
HUGE = 2_100_000  # over DuckDB's maximum line size (2,097,152 bytes)
BOM = b"\xef\xbb\xbf"
# The four characters DuckDB's line reader (landing._read_lines) splits a line on: it dropped
# what followed them on the line (test_the_line_readers_separator_* below)
SEPARATOR = b"\x1c\x1d\x1e\x1f"
# A byte order mark's first one or two bytes as the whole file (DuckDB read it as empty)
TRUNCATED_BOMS = (b"\xef", b"\xef\xbb")


def csv_field(value: str):
    v = value.encode()
    return st.sampled_from(
        [v] * 10
        + [
            b'"' + v + b'"',
            b'  "' + v + b'"  ',  # spaces before an opening quote and after a closing one
            b'"' + v + b'""x"',  # a doubled quote
            b'"' + v + b',x"',  # the delimiter, quoted
            v + b",x",  # the delimiter, unquoted: a column more
            b'"' + v,  # a quote left open
            v + b'"',  # a quote later in an unquoted value: text
            b'"' + v + b'"x',  # text after a closing quote
            b'"' + v + b'" "y"',
            b'"' + v + b'\nz"',  # a value over lines: LF, CRLF, lone CR, blank lines
            b'"' + v + b'\r\nz"',
            b'"' + v + b'\rz"',
            b'"' + v + b'\n\nz"',
            b' "' + v + b'\r\n\r\n z" ',
            v + b"\x00",
            v + SEPARATOR + b",x",
            BOM + v,
            v + "\u2028".encode() + v + "\u0085".encode(),  # not line breaks here
            b"\x0b" + v + b"\x0c",
            b"",
            b"   ",
            b"\t",
            b'""',
            b'""""',
            b'"',
            b'"""',
            b"x" * LONG,
            b'"' + b"y" * LONG + b'"',
        ]
    )


ENDINGS = st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"])
EDITS = [b'"', b",", b"\r", b"\n", b"\r\n", b"\x00", BOM, b" ", b"\t", b"{", b"}", b"[", b"\\"]
EDITS += [b":", b'""', b'"\n', b'\n"', b'\r"', b'",', b',"', SEPARATOR]
NOT_UTF8 = [b"\xff", b"\xc3", b"\xbb"]


@st.composite
def edited(draw, body: bytes, keep: int | None) -> bytes:
    """Up to three bytes inserted, deleted or replaced, past the first ``keep`` ones (0: any,
    and the file may be emptied, cut short or hold a byte that is not UTF-8; None: no edit)."""
    if keep is None:
        return body
    what = draw(st.sampled_from(["none"] * 6 + ["edit"] * 3 + ([] if keep else ["empty", "cut"])))
    if what == "empty":
        return b""
    if what == "cut" and body:
        return body[: draw(st.integers(0, len(body) - 1))]
    for _ in range(draw(st.integers(1, 3)) if what == "edit" else 0):
        if keep >= len(body):
            break
        pos = draw(st.integers(keep, len(body) - 1))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        new = draw(st.sampled_from(EDITS + ([] if keep else NOT_UTF8)))
        body = body[:pos] + (b"" if op == "delete" else new) + body[pos + (op != "insert") :]
    return body


def lines_to_bytes(draw, lines: list[bytes]) -> bytes:
    """The lines, each with an ending (mixed), the last one maybe without."""
    return b"".join(
        line + draw(st.sampled_from([b"\n", b""]) if i == len(lines) - 1 else ENDINGS)
        for i, line in enumerate(lines)
    )


@st.composite
def csv_file(draw, source: str, risky: bool = True) -> bytes:
    """A CSV file of ``source``; not ``risky``: one the contract reads (no change to the header
    that fails it, no byte that is not UTF-8)."""
    src = SOURCES[source]
    names = list(src.required) + draw(st.lists(st.sampled_from(src.optional or ("",)), unique=True))
    extra = ["extra", "", "line", "_file", "Date", '5" TV', ' "q" ', '"e,x"', '"c""d"']
    names = draw(
        st.permutations(
            [n for n in names if n] + draw(st.lists(st.sampled_from(extra), max_size=2))
        )
    )
    change = draw(
        st.sampled_from([None] * 12 + ["trailing", "quoted", "spaced"] + ["drop", "twice"] * risky)
    )
    header = [n.encode() for n in names]
    if change == "drop":
        header.remove(draw(st.sampled_from(src.required)).encode())
    elif change == "twice":
        header.append(draw(st.sampled_from(src.required)).encode())
    elif change in ("quoted", "spaced"):
        header = [b'"' + h + b'"' if change == "quoted" else b" " + h + b" " for h in header]
    start = draw(st.sampled_from([b""] * 10 + [BOM] + [b"\n", BOM + b"\n"] * risky))
    lines = [start + b",".join(header) + b"," * (change == "trailing")]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(
            st.sampled_from(["row"] * 6 + ["blank", "space", "header", "bom", "short", "long"])
        )
        fields = [draw(csv_field(VALID.get(n, "z"))) for n in names]
        if kind == "short":
            fields = fields[: draw(st.integers(0, len(fields) - 1))]
        elif kind == "long":  # trailing delimiters, a value past the header's columns
            fields += draw(st.sampled_from([[b""], [b"", b""], [b"x"], [b"", b"x"]]))
        line = {"blank": b"", "space": b" \t ", "header": lines[0].removeprefix(start)}.get(kind)
        lines.append(line if line is not None else BOM * (kind == "bom") + b",".join(fields))
    return draw(edited(lines_to_bytes(draw, lines), 0 if risky else len(lines[0]) + 2))


def json_value(value: str):
    return st.sampled_from(
        [value] * 3
        + [f" {value}\t", value + "\u0000", "\ufeff" + value, value + "\n" + value, "x" * LONG]
        + ["", None, 0, 1.5, True, {"a": 1}, [value], []]
    )


@st.composite
def json_line(draw, source: str, risky: bool = True) -> bytes:
    src = SOURCES[source]
    kinds = ["object"] * 6 + ["array", "scalar", "twice", "cut", "space", "blank", "nul", "split"]
    kinds += ["pretty"]  # an object over several lines
    kind = draw(st.sampled_from(kinds + ["bom", "nan", "comma"] + ["no key"] * risky))
    obj = {
        c: draw(json_value(VALID.get(c, "z")))
        for c in src.columns
        if c in src.required or draw(st.booleans())
    }
    if draw(st.booleans()):
        obj["extra"] = draw(json_value("q"))
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    if kind == "twice":  # a field named twice
        again = json.dumps(draw(st.sampled_from(src.columns)))
        text = text[:-1] + f", {again}: {json.dumps(draw(json_value('d')))}}}"
    line = {
        "array": json.dumps([obj]),
        "pretty": json.dumps(obj, indent=draw(st.sampled_from([0, 2, "\t"]))),
        "cut": text[: draw(st.integers(0, len(text) - 1))],
        "space": " \t ",
        "blank": "",
        "bom": "\ufeff" + text,
        "nan": text[:-1] + ', "votes": NaN}',
        "comma": text[:-1] + ",}",
        "no key": json.dumps({k: v for k, v in obj.items() if k != src.required[0]}),
    }.get(kind, text)
    if kind == "scalar":
        return draw(st.sampled_from([b"1", b'"s"', b"null", b"true", b"{}", b"[]"]))
    if kind == "nul":  # a raw 0x00 byte: not JSON
        return line.encode().replace(b'"', b'"\x00', 1)
    if kind == "split":  # a raw line break inside a string: two lines, neither an object
        return line.encode().replace(b'", "', b'\n", "', 1).replace(b'","', b'\r","', 1)
    return line.encode()


@st.composite
def json_file(draw, source: str, risky: bool = True) -> bytes:
    lines = draw(st.lists(json_line(source, risky), max_size=6))
    if lines and draw(st.integers(0, 9)) == 0:  # a JSON array of them, one element per line
        lines = [b"[", *(line + b"," for line in lines[:-1]), lines[-1], b"]"]
    start = draw(st.sampled_from([b""] * 3 + [BOM]))
    return draw(edited(start + lines_to_bytes(draw, lines), 0 if risky else None))


def files(risky: bool = True):
    """``(source, file name, bytes)``: one CSV or JSON lines file of any source."""
    return st.tuples(
        st.sampled_from(sorted(SOURCES)), st.sampled_from(["a.csv", "a[1].json"])
    ).flatmap(
        lambda sn: st.tuples(
            st.just(sn[0]),
            st.just(sn[1]),
            (csv_file if sn[1].endswith(".csv") else json_file)(sn[0], risky),
        )
    )


# --- the extract, one file at a time -----------------------------------------------------------


def _none_if_empty(value):
    return None if value in ("", None) else value


def check_staged(tmp: Path, source: str, name: str, data: bytes) -> None:
    """Stage one file as the extract does; compare with the reference, row by row."""
    path = tmp / name
    path.write_bytes(data)
    try:
        want = expected_rows(source, name, data)
    except Fails as fails:
        with pytest.raises(LandingError) as failed:
            stage_files(source, [(str(path), path)], tmp / "out.parquet")
        assert str(failed.value).startswith(f"{path}: "), failed.value  # naming the file
        assert fails.what in str(failed.value)
        return
    stage_files(source, [(str(path), path)], tmp / "out.parquet")
    columns = SOURCES[source].columns
    quoted = ", ".join(f'"{c}"' for c in columns)
    got = duckdb.sql(
        f"SELECT _line, _error, _raw, {quoted} "
        f"FROM read_parquet('{tmp / 'out.parquet'}') ORDER BY _line"
    ).fetchall()
    assert [g[0] for g in got] == [w.line for w in want], "a row lost, added or misnumbered"
    for g, w in zip(got, want, strict=True):
        assert (g[1] is not None) == w.unreadable, (g[0], g[1])
        assert g[1] is None or g[1], "an empty reason"
        if w.unreadable:
            continue
        staged = dict(zip(columns, g[3:], strict=True))
        if name.endswith(".csv"):  # each value, and the line(s) as written
            assert {c: _none_if_empty(v) for c, v in staged.items()} == {
                c: _none_if_empty(v) for c, v in w.values.items()
            }, g[0]
            assert g[2] == w.raw, g[0]
        else:  # strings as they were (numbers and true/false: as text, DuckDB's way)
            assert all(staged[c] == v for c, v in w.values.items() if isinstance(v, str)), g[0]


# About 40 ms an example; 12,000 were run while writing it, the chunk sizes at random too.
@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    files(),
    st.sampled_from([None, 1, 2, 3]),
    st.sampled_from([None, 1, 2, 7]),
)
@example(  # a line over DuckDB's maximum line size: a quoted value over two lines of it
    (
        "interactions",
        "a.csv",
        b"date,event_id,poll_id,session_id,option,votes\n"
        + b'2022-04-29,"'
        + b"h" * HUGE
        + b"\r\n"
        + b"h" * 10
        + b'",p1,s1,0,1\n2022-04-29,e2,p1,s1,0,1',
    ),
    None,
    None,
)
@example(
    (
        "form_entries",
        "a.json",
        b'{"entry_datetime": "x", "email": "' + b"h" * HUGE + b'", "session_id": 1}\n[]',
    ),
    None,
    None,
)
def test_a_hostile_file_stages_as_the_contract_reads_it(tmp_path_factory, file, batch, chunk):
    """Every row of the file staged once, at the line it starts on, unreadable exactly when the
    contract says so, with its values and its raw lines as written; or the file fails, named.
    ``batch`` and ``chunk``: the Python paths' batch of lines and the line-ending check's chunk
    of bytes, made small, so that a record or a CRLF straddles them."""
    source, name, data = file
    tmp = tmp_path_factory.mktemp("bytes")
    with (
        mock.patch.object(landing, "RECORD_BATCH", batch or landing.RECORD_BATCH),
        mock.patch.object(landing, "LINE_ENDING_CHUNK", chunk or landing.LINE_ENDING_CHUNK),
    ):
        check_staged(tmp, source, name, data)
    shutil.rmtree(tmp, ignore_errors=True)


# --- a landing of one date: extract and validate -----------------------------------------------

BASE = {  # a clean file beside the hostile ones: the catalogue and the day's interactions
    "elements": b"poll_id,title,option,option_label\np1,Team?,0,Blue\n",
    "interactions": b"date,event_id,poll_id,session_id,option,votes\n2022-04-29,e0,p1,s0,0,1\n",
}


def hostile_files(source: str):
    """Up to two hostile files of ``source``; one in eight may be one the contract fails."""

    def one(name: str):
        kind = csv_file if name.endswith(".csv") else json_file
        return st.sampled_from([False] * 7 + [True]).flatmap(
            lambda risky: kind(source, risky).map(lambda d: (name, d))
        )

    names = st.lists(
        st.sampled_from(["h.csv", "h[1].csv", "h.json", "h?.jsonl"]), max_size=2, unique=True
    )
    return names.flatmap(lambda ns: st.tuples(*(one(n) for n in ns)))


@pytest.fixture(scope="module")
def one_date(tmp_path_factory):
    """A pipeline config whose landing each example replaces (validate replaces the date)."""
    root = tmp_path_factory.mktemp("landing-bytes")
    return write_config(root, destinations=[], start_date=DS)


def land(config, landing: dict) -> dict[tuple[str, str], list[Row] | Fails]:
    """Write the landing of ``DS``; what the reference reads in each file, by (source, file)."""
    shutil.rmtree(config.landing_root, ignore_errors=True)
    expected = {}
    for source in pipeline.VALIDATION_ORDER:
        folder = Path(config.landing_root) / landing_folder(source)
        folder.mkdir(parents=True)
        base = [("0-base.csv", BASE[source])] if source in BASE else []
        for name, data in base + list(landing[source]):
            (folder / name).write_bytes(data)
            try:
                expected[(source, str(folder / name))] = expected_rows(source, name, data)
            except Fails as fails:
                expected[(source, str(folder / name))] = fails
    return expected


def landing_folder(source: str) -> str:
    return source if source == "elements" else f"{source}/date={DS}"


# About 0.35 s an example; 1,000 were run while writing it.
@settings(
    max_examples=45,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.fixed_dictionaries({s: hostile_files(s) for s in pipeline.VALIDATION_ORDER}))
def test_a_landing_of_hostile_files_reconciles_row_by_row(one_date, landing):
    """The date's extract and validate: either a file fails, named, as the contract says; or
    each file's rows (the reference's lines) are the lines of its rows in the output tables and
    in quarantine, each once, the unreadable ones in quarantine for that reason, no reason empty;
    and the counts validate reports (the run report's) are the reference's."""
    config = one_date
    expected = land(config, landing)
    failing = {file: f for (_, file), f in expected.items() if isinstance(f, Fails)}
    window = pipeline.RunWindow.for_date(DS)
    try:
        staged = [pipeline.extract_source(s, window, config) for s in pipeline.VALIDATION_ORDER]
        counts = pipeline.validate(window, staged, config)["sources"]
    except LandingError as exc:
        named = [file for file in failing if str(exc).startswith(f"{file}: ")]
        assert named, f"failed, naming no file the contract fails: {exc}"
        assert failing[named[0]].what in str(exc)
        return
    assert not failing, f"read files the contract fails: {failing}"
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        for (source, file), rows in expected.items():
            dated = "" if source == "elements" else f" AND dt = DATE '{DS}'"
            kept = con.execute(
                f"SELECT _line FROM {source} WHERE _file = ?{dated}", [file]
            ).fetchall()
            quarantined = dict(
                con.execute(
                    "SELECT line, reason FROM quarantine WHERE dt = ? AND source = ? AND file = ?",
                    [DS, source, file],
                ).fetchall()
            )
            lines = sorted([k for (k,) in kept] + list(quarantined))
            assert lines == [r.line for r in rows], (source, file, "a row lost or duplicated")
            assert all(quarantined.values()), (source, file, "an empty reason")
            for row in rows:
                if row.unreadable:  # its read error is its whole reason
                    reason = quarantined[row.line]
                    assert reason.startswith(
                        ("malformed CSV row: ", "not a JSON object")
                    ) or re.fullmatch(
                        r"\w+: (not a string or number|named more than once|a number with a "
                        r"fraction or exponent \(write it as a string\))(; .*)?",
                        reason,
                    ), (source, file, row.line, reason)
    for source in pipeline.VALIDATION_ORDER:
        read = sum(len(rows) for (s, _), rows in expected.items() if s == source)
        assert counts[source]["read"] == read, source
        assert counts[source]["valid"] + counts[source]["quarantined"] == read, source


# --- the findings ------------------------------------------------------------------------------

HEADER = b"date,event_id,poll_id,session_id,option,votes\n"


def test_the_line_readers_separator_in_a_csv_row_is_text(tmp_path):
    check_staged(
        tmp_path, "interactions", "a.csv", HEADER + b"2022-04-29,e1,p1,s1,0,1" + SEPARATOR + b",x\n"
    )


def test_the_line_readers_separator_after_a_json_object_is_not_skipped(tmp_path):
    line = json.dumps({c: VALID[c] for c in SOURCES["interactions"].columns}).encode()
    check_staged(tmp_path, "interactions", "a.json", line + SEPARATOR + b"[]\n")


def test_the_line_readers_separator_in_a_value_over_lines_is_text(tmp_path):
    data = b'observed_at,session_id,external_id\n"2022-04-29\nx' + SEPARATOR + b'",s1,u1\n'
    check_staged(tmp_path, "identities", "a.csv", data)


@pytest.mark.parametrize("name", ["a.json", "a.csv"])
@pytest.mark.parametrize("data", TRUNCATED_BOMS)
def test_a_cut_byte_order_mark_is_not_utf8(tmp_path, name, data):
    check_staged(tmp_path, "interactions", name, data)
