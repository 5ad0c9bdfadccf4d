"""Run ``fakesnow -s`` with two fixes (used by tests/services/fakesnow.py).

- fakesnow 0.12 encodes TIMESTAMP results as Arrow structs without a validity mask, so a NULL
  timestamp reaches the connector as 1970-01-01 00:00:00. The fix keeps NULLs NULL.
- Its ``trim_cast_varchar`` transform rebuilds ``TRIM(x, characters)`` without the characters, so
  only spaces were trimmed (the privacy hash trims every white space character). The fix keeps
  them.

Everything else is fakesnow's own server, started by its own command line.
"""

from __future__ import annotations

import sys

import fakesnow.arrow
import fakesnow.transforms
import pyarrow as pa
import pyarrow.compute as pc
from fakesnow.cli import main
from sqlglot import exp

_encode = fakesnow.arrow.timestamp_to_sf_struct


def timestamp_to_sf_struct(ts: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(ts, pa.ChunkedArray):
        ts = ts.combine_chunks()
    struct = _encode(ts)
    if not ts.null_count:
        return struct
    children = [pc.fill_null(struct.field(i), 0) for i in range(struct.type.num_fields)]
    return pa.StructArray.from_arrays(children, fields=list(struct.type), mask=ts.is_null())


fakesnow.arrow.timestamp_to_sf_struct = timestamp_to_sf_struct

_trim_cast_varchar = fakesnow.transforms.trim_cast_varchar


def trim_cast_varchar(expression: exp.Expr) -> exp.Expr:
    fixed = _trim_cast_varchar(expression)
    if fixed is not expression:
        fixed.set("expression", expression.args.get("expression"))
    return fixed


fakesnow.transforms.trim_cast_varchar = trim_cast_varchar

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
