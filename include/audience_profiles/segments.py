"""Segments as data: the rules of ``segments.yml`` compiled to SQL building ``segment_memberships``.

A segment is a rule over a profile's attributes and engagement (docs/activation.md, "Segments")::

    segments:
      blue_fans:
        description: Their latest answer to the team question is Manchester Blue
        answer: {attribute: "Which team do you support?", equals: Manchester Blue}
      competition_regulars:
        form_entries: {min: 2, within_days: 30}
      engaged_blue_fans:
        all:
          - answer: {attribute: "Which team do you support?", equals: Manchester Blue}
          - any:
              - interaction: {element_type: prediction, min: 3, within_days: 7}
              - attribute: {column: optin_2, equals: true}

Conditions (each yields, per qualifying profile, the date it qualified from: ``since``):

- ``answer: {attribute, equals | in}``: the profile's latest answer to the element titled
  ``attribute`` (the answer the ``answers`` column holds) is one of the options. ``since``: the
  first matching answer after the last different one.
- ``form_entries: {min, within_days, form_name, form_id}``: at least ``min`` (default 1) form
  entries, in the ``within_days`` days ending on the run date (all of them without it).
  ``since``: the day of the ``min``-th of those entries.
- ``interaction: {element_type, event_id, poll_id, attribute, option, min, within_days}``: at
  least ``min`` interactions matching every filter given (each a value or a list). ``since``: the
  day of the ``min``-th.
- ``attribute: {column, equals | in}``: an ``audience_profiles`` column has one of the values
  (each of the column's type in the data contract, ``config.PROFILE_COLUMNS``; not ``answers``,
  JSON compared whole: an ``answer`` rule matches one); NULL never matches. ``since``:
  ``<column>_at`` when the table has it (the opt-ins do), else the profile's ``first_seen``.
- ``all: [...]`` / ``any: [...]``: every / some condition holds; ``since`` is the latest / the
  earliest of theirs.

Everything is derived from the data up to the run date, never from earlier runs, so re-running a
date gives the same rows. Each condition renders one template of ``include/sql/segments/``, in
the SQL subset both warehouse engines run.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audience_profiles.config import (
    DAYS_MAX,
    PROFILE_COLUMNS,
    ConfigError,
    PipelineConfig,
    load_yaml,
    read_config_file,
)
from audience_profiles.warehouse.base import Warehouse, check_ds

log = logging.getLogger(__name__)

SEGMENT_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
COLUMN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# The five element types the data contract names (docs/data-contract.md): segments filter on
# them; validate keeps others and warns (pipeline._warn_other_element_types).
ELEMENT_TYPES = ("vote", "quiz", "competition", "prediction", "team_selector")
COMBINATORS = ("all", "any")
# Per condition: its keys, and for the filters the column of the source table each one matches.
INTERACTION_FILTERS = {
    "element_type": "element_type",
    "event_id": "event_id",
    "poll_id": "poll_id",
    "attribute": "title",
    "option": "option_label",
}
FORM_FILTERS = {"form_name": "form_name", "form_id": "form_id"}
COUNT_KEYS = ("min", "within_days")
CONDITION_KEYS = {
    "answer": ("attribute", "equals", "in"),
    "form_entries": (*COUNT_KEYS, *FORM_FILTERS),
    "interaction": (*COUNT_KEYS, *INTERACTION_FILTERS),
    "attribute": ("column", "equals", "in"),
}
RULE_KINDS = (*COMBINATORS, *CONDITION_KEYS)


@dataclass(frozen=True)
class Rule:
    """One node of a segment's rule: a combinator with children, or a condition."""

    kind: str
    where: str  # its key in segments.yml, for messages
    params: dict[str, Any] = field(default_factory=dict)
    children: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Segment:
    segment_id: str
    description: str
    rule: Rule


@dataclass(frozen=True)
class SegmentSet:
    source: str
    segments: tuple[Segment, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(s.segment_id for s in self.segments)


# -- reading segments.yml ---------------------------------------------------------------------


class _Reader:
    """Validates the parsed YAML; every error names the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {message}")

    def segments(self, raw: Any) -> SegmentSet:
        if raw is None:  # an emptied or truncated file must not quietly empty every segment
            raise ConfigError(
                f"{self.source}: empty (or only comments); write segments: [] for no segments"
            )
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.source}: the top level must be a mapping with segments:")
        unknown = sorted(set(raw) - {"segments"})
        if unknown:
            raise self.fail(unknown[0], "unknown key (the file holds segments:)")
        items = raw.get("segments") or {}
        if not isinstance(items, dict):
            raise self.fail("segments", "must map segment ids to their rules")
        return SegmentSet(self.source, tuple(self.segment(k, v) for k, v in items.items()))

    def segment(self, segment_id: Any, body: Any) -> Segment:
        where = f"segments.{segment_id}"
        if not isinstance(segment_id, str) or not SEGMENT_ID.match(segment_id):
            raise self.fail(
                where,
                "a segment id is lower case letters, digits and _, starting with a letter, at "
                "most 64 characters",
            )
        if not isinstance(body, dict):
            raise self.fail(where, f"must be a mapping with one rule ({', '.join(RULE_KINDS)})")
        description = body.get("description", "")
        if not isinstance(description, str):
            raise self.fail(f"{where}.description", "must be text")
        unknown = sorted(set(body) - {"description", *RULE_KINDS})
        if unknown:
            raise self.fail(
                f"{where}.{unknown[0]}",
                f"unknown key (one of description, {', '.join(RULE_KINDS)})",
            )
        kinds = [k for k in body if k in RULE_KINDS]
        if len(kinds) != 1:
            raise self.fail(
                where, f"needs exactly one rule ({', '.join(RULE_KINDS)}), found {len(kinds)}"
            )
        return Segment(segment_id, description, self.rule(kinds[0], body[kinds[0]], where))

    def rule(self, kind: str, spec: Any, parent: str) -> Rule:
        where = f"{parent}.{kind}"
        if kind in COMBINATORS:
            if not isinstance(spec, list) or not spec:
                raise self.fail(where, "must be a non-empty list of conditions")
            children = []
            for i, item in enumerate(spec):
                item_where = f"{where}[{i}]"
                if (
                    not isinstance(item, dict)
                    or len(item) != 1
                    or next(iter(item)) not in RULE_KINDS
                ):
                    raise self.fail(
                        item_where, f"must be one condition ({', '.join(RULE_KINDS)}) per list item"
                    )
                ((child_kind, child_spec),) = item.items()
                children.append(self.rule(child_kind, child_spec, item_where))
            return Rule(kind, where, children=tuple(children))
        if not isinstance(spec, dict):
            raise self.fail(where, "must be a mapping")
        unknown = sorted(set(spec) - set(CONDITION_KEYS[kind]))
        if unknown:
            raise self.fail(
                f"{where}.{unknown[0]}", f"unknown key (one of {', '.join(CONDITION_KEYS[kind])})"
            )
        return Rule(kind, where, getattr(self, kind)(spec, where))

    def answer(self, spec: dict, where: str) -> dict:
        return {
            "attribute": self.text(spec, "attribute", where),
            "values": self.values(spec, where, (str,)),
            "values_key": "equals" if "equals" in spec else "in",  # for catalogue_misses
        }

    def attribute(self, spec: dict, where: str) -> dict:
        column = self.text(spec, "column", where)
        if not COLUMN_NAME.match(column):
            raise self.fail(f"{where}.column", f"{column!r} is not a column name")
        # Said here, as the run's first task reads the file, not by build_segments after the
        # whole build (which checks again, against the table the run built).
        if column not in PROFILE_COLUMNS:
            raise self.fail(f"{where}.column", _not_a_profile_column(column, PROFILE_COLUMNS))
        if column == "answers":
            # JSON text of every answer: equals would have to spell the whole object, its keys
            # in the order the build writes them, so it all but never matched.
            raise self.fail(
                f"{where}.column",
                "answers holds every answer as one JSON object, which equals and in compare "
                "whole: for an answer, write answer: {attribute: <element title>, equals: "
                "<option>}",
            )
        values = self.values(spec, where, (str, bool, int, float))
        values_key = "equals" if "equals" in spec else "in"
        # Against the contract's types, for the same reason: a value the column cannot hold
        # failed build_segments (a conversion error, for a time that is none).
        for value in values:
            mistake = _value_mistake(value, column, PROFILE_COLUMNS[column])
            if mistake:
                raise self.fail(f"{where}.{values_key}", mistake)
        return {"column": column, "values": values, "values_key": values_key}

    def form_entries(self, spec: dict, where: str) -> dict:
        filters = {}
        if "form_name" in spec:
            filters["form_name"] = self.listed(spec, "form_name", where, (str,))
        if "form_id" in spec:
            filters["form_id"] = self.listed(spec, "form_id", where, (int,))
        return {**self.counting(spec, where), "filters": filters}

    def interaction(self, spec: dict, where: str) -> dict:
        filters = {
            key: [str(v) for v in self.listed(spec, key, where, (str, int))]
            for key in INTERACTION_FILTERS
            if key in spec
        }
        for value in filters.get("element_type", []):
            if value not in ELEMENT_TYPES:
                raise self.fail(
                    f"{where}.element_type", f"{value!r} is not one of {', '.join(ELEMENT_TYPES)}"
                )
        return {**self.counting(spec, where), "filters": filters}

    def counting(self, spec: dict, where: str) -> dict:
        least = self.positive(spec, "min", where, default=1)
        within_days = self.positive(spec, "within_days", where, default=None)
        if within_days is not None and within_days > DAYS_MAX:
            # past a date's range, the window's first day failed the build (OverflowError)
            raise self.fail(
                f"{where}.within_days", f"must be {DAYS_MAX} or less, not {within_days!r}"
            )
        return {"min": least, "within_days": within_days}

    def text(self, spec: dict, key: str, where: str) -> str:
        value = spec.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", "is required (text)")
        return value.strip()  # element titles and column names are kept trimmed

    def positive(self, spec: dict, key: str, where: str, default: int | None) -> int | None:
        value = spec.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(
                f"{where}.{key}", f"must be a whole number of at least 1, not {value!r}"
            )
        return value

    def values(self, spec: dict, where: str, types: tuple[type, ...]) -> list:
        given = [k for k in ("equals", "in") if k in spec]
        if len(given) != 1:
            raise self.fail(where, "give exactly one of equals: (a value) or in: (a list)")
        if given == ["equals"]:
            return [self.scalar(spec["equals"], f"{where}.equals", types)]
        return self.listed(spec, "in", where, types)

    def listed(self, spec: dict, key: str, where: str, types: tuple[type, ...]) -> list:
        """A value or a non-empty list of values, as a list."""
        value = spec[key]
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(f"{where}.{key}", "must not be empty")
        return [self.scalar(v, f"{where}.{key}", types) for v in items]

    def scalar(self, value: Any, where: str, types: tuple[type, ...]) -> Any:
        # YAML reads yes/no as booleans: a text field must not silently receive True.
        if isinstance(value, bool) and bool not in types:
            raise self.fail(where, f"{value!r} is a yes/no value; quote it if it is text")
        if not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            # a form id is a number: telling a quoted one to quote it went round in circles
            hint = "a whole number, unquoted" if types == (int,) else "quote dates and ids"
            raise self.fail(where, f"must be {names}, not {value!r} ({hint})")
        return value


def parse_segments(raw: Any, source: str = "<dict>") -> SegmentSet:
    """Validate parsed ``segments.yml`` content into a :class:`SegmentSet`."""
    return _Reader(source).segments(raw)


def load_segments(path: str | Path) -> SegmentSet:
    file = Path(path)
    text = read_config_file(file, "the segment definitions")
    return parse_segments(load_yaml(text, str(file)), str(file))


def segments_for(config: PipelineConfig) -> SegmentSet | None:
    """The pipeline's segments, or None when it has none.

    No file at the default path means no segments. A ``segments_config`` set in pipeline.yml
    must exist: a mistyped path must not quietly empty every segment (and the address books
    synced from them). Destinations that name segments must name defined ones, for the same
    reason.
    """
    path = Path(config.segments_config)
    naming = [
        (index, dest)
        for index, dest in enumerate(config.destinations)
        if dest.enabled and isinstance(dest.options.get("segments"), dict)
    ]
    if not path.exists():
        if "segments_config" in config.raw:
            raise ConfigError(f"{config.source_file}: segments_config: {path} does not exist")
        if naming:  # found out here, before the build, not by the delivery at the end
            index, dest = naming[0]
            raise ConfigError(
                f"{config.source_file}: destinations[{index}].segments ({dest.name}): names "
                f"segments, but there is no segments file ({path})"
            )
        for index, dest in enumerate(config.destinations):
            if dest.enabled and "segment_memberships" in dest.tables:
                raise ConfigError(
                    f"{config.source_file}: destinations[{index}].tables ({dest.name}): lists "
                    f"segment_memberships, but there is no segments file ({path}) to build it from"
                )
        return None
    segments = load_segments(path)
    for index, dest in naming:
        named = dest.options["segments"]
        unknown = sorted(set(map(str, named)) - set(segments.ids))
        if unknown:
            raise ConfigError(
                f"{config.source_file}: destinations[{index}].segments ({dest.name}): "
                f"{', '.join(unknown)} not defined in {segments.source}"
            )
    return segments


# -- compiling to SQL -------------------------------------------------------------------------


def _sql_value(wh: Warehouse, value: Any) -> str:
    """A YAML value as a SQL literal of ``wh``'s dialect (Snowflake strings escape backslashes:
    a generic literal of ``AC\\DC`` would match nothing there, and a trailing backslash would
    end the string early)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return wh.literal(value)


@dataclass(frozen=True)
class _Run:
    """What the templates need to know about the run."""

    rs: str
    ds: str
    interval_end: str
    profile_columns: dict[str, str]  # name -> data type, as information_schema gives it
    interactions_from: str | None = None  # retention's first date kept (interactions_days)

    def window_start(self, within_days: int | None) -> str | None:
        """First day of a window of ``within_days`` days ending on the run date."""
        if within_days is None:
            return None
        return (dt.date.fromisoformat(self.ds) - dt.timedelta(days=within_days - 1)).isoformat()


def _compile(wh: Warehouse, rule: Rule, run: _Run, source: str) -> str:
    """SQL selecting ``(profile_id, since)``, one row per profile the rule holds for."""
    p = rule.params
    common = {"rs": run.rs, "ds": run.ds, "interactions_from": run.interactions_from}
    if rule.kind in COMBINATORS:
        parts = [_compile(wh, child, run, source) for child in rule.children]
        return wh.render("segments/combine", how=rule.kind, parts=parts)
    if rule.kind == "answer":
        return wh.render(
            "segments/answer",
            **common,
            attribute=wh.literal(p["attribute"]),
            options=[_sql_value(wh, v) for v in p["values"]],
        )
    if rule.kind in ("form_entries", "interaction"):
        columns = FORM_FILTERS if rule.kind == "form_entries" else INTERACTION_FILTERS
        return wh.render(
            f"segments/{rule.kind}",
            **common,
            interval_end=run.interval_end,
            min=p["min"],
            window_start=run.window_start(p["within_days"]),
            filters=[
                (columns[k], [_sql_value(wh, v) for v in vs]) for k, vs in p["filters"].items()
            ],
        )
    column = p["column"]
    if column not in run.profile_columns:
        raise ConfigError(
            f"{source}: {rule.where}.column: " + _not_a_profile_column(column, run.profile_columns)
        )
    for value in p["values"]:  # the reader checked the contract's types; these are the table's
        mistake = _value_mistake(value, column, run.profile_columns[column])
        if mistake:
            raise ConfigError(f"{source}: {rule.where}.{p['values_key']}: {mistake}")
    since = f"{column}_at" if f"{column}_at" in run.profile_columns else "first_seen"
    return wh.render(
        "segments/attribute",
        **common,
        column=column,
        since_column=since,
        values=[_sql_value(wh, v) for v in p["values"]],
    )


def _not_a_profile_column(column: str, columns) -> str:
    return f"{column!r} is not an audience_profiles column ({', '.join(sorted(columns))})"


# What an attribute value must be for each kind of column (see _column_kind).
_VALUE_TYPES = {
    "text": (str,),
    "yes/no": (bool,),
    "number": (int, float),
    "time": (str,),
    "date": (str,),
    "other": (str,),
}
# The times and dates both engines read alike: ISO, no zone (the columns hold UTC; DuckDB
# drops an offset, comparing 10:00+02:00 as 10:00).
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _column_kind(data_type: str) -> str:
    """A column's data type (the contract's, or information_schema's on DuckDB or Snowflake)
    as a kind of value."""
    name = data_type.upper()
    if "BOOL" in name:
        return "yes/no"
    if any(t in name for t in ("CHAR", "TEXT", "STRING")):
        return "text"
    if "TIME" in name:  # TIMESTAMP, TIMESTAMP_NTZ, DATETIME
        return "time"
    if "DATE" in name:
        return "date"
    if any(t in name for t in ("INT", "NUMBER", "NUMERIC", "DECIMAL", "FLOAT", "DOUBLE", "REAL")):
        return "number"
    return "other"


def _is_time(value: str) -> bool:
    if not _TIME.match(value):
        return False
    try:
        dt.datetime.strptime(value[:19].replace("T", " "), "%Y-%m-%d %H:%M:%S")
    except ValueError:  # 2022-02-30, 25:00:00: the engine's conversion error, after the build
        return False
    return True


def _is_date(value: str) -> bool:
    try:
        return bool(_DATE.match(value)) and bool(dt.date.fromisoformat(value))
    except ValueError:
        return False


def _value_mistake(value: Any, column: str, data_type: str) -> str | None:
    """Why an attribute rule's value cannot be compared with ``column`` of ``data_type``, with
    what to write instead; None when it can.

    An unquoted 12345 for a text column would be compared as a number (matching '0012345', and
    failing on the first id that is not one); a yes/no for a text column as a boolean; text that
    is no time, for a time, failed the build with a conversion error. equals and in are the only
    comparisons, so a value the column never holds (1.5 of a count, a date alone for a time:
    its midnight) would build an empty segment without a word."""
    kind = _column_kind(data_type)
    whole = kind == "number" and "INT" in data_type.upper()
    holds = {
        "text": "text",
        "yes/no": "yes/no values",
        "number": "whole numbers" if whole else "numbers",
        "time": "UTC times",
        "date": "dates",
    }.get(kind, "values written as text")
    expected = f"{column} holds {holds} ({data_type})"
    is_bool = isinstance(value, bool)
    if not isinstance(value, _VALUE_TYPES[kind]) or (is_bool and kind != "yes/no"):
        given = "a yes/no value" if is_bool else "text" if isinstance(value, str) else "a number"
        hint = {
            "yes/no": "write true or false, unquoted",
            "number": "write it unquoted",
            "time": "quote it, as 'YYYY-MM-DD HH:MM:SS'",
            "date": "quote it, as 'YYYY-MM-DD'",
        }.get(kind, "quote it")
        return f"{value!r} is {given} but {expected}: {hint}"
    if whole and isinstance(value, float) and not value.is_integer():  # .nan and .inf too
        return f"{value!r} is not a whole number but {expected}: it would match no profile"
    if kind == "time" and not _is_time(value):
        if _is_date(value):
            return (
                f"{value!r} is a date but {expected}: equals and in match the exact time, so "
                "a date matches its midnight only; give the time, 'YYYY-MM-DD HH:MM:SS'"
            )
        return f"{value!r} is not a time but {expected}: write 'YYYY-MM-DD HH:MM:SS', no zone"
    if kind == "date" and not _is_date(value):
        return f"{value!r} is not a date but {expected}: write 'YYYY-MM-DD'"
    return None


def render_memberships(
    wh: Warehouse,
    segments: SegmentSet,
    rs: str,
    ds: str,
    interval_end: str,
    interactions_from: str | None = None,
) -> str:
    """The SQL script that (re)creates ``<rs>.segment_memberships`` for the run."""
    columns = wh.column_types(rs, "audience_profiles")
    run = _Run(rs, ds, interval_end, columns, interactions_from)
    compiled = [
        (s.segment_id, _compile(wh, s.rule, run, segments.source)) for s in segments.segments
    ]
    return wh.render("segments/segment_memberships", rs=rs, segments=compiled)


def build_memberships(
    wh: Warehouse,
    segments: SegmentSet | None,
    rs: str,
    ds: str,
    interval_end: str,
    interactions_from: str | None = None,
) -> dict[str, int]:
    """Build the run's ``segment_memberships``; return the members per segment.

    Without segments the table is dropped, so publish exports none and no destination syncs a
    stale one.
    """
    if segments is None:
        wh.execute_script(f"DROP TABLE IF EXISTS {rs}.segment_memberships")
        return {}
    wh.execute_script(render_memberships(wh, segments, rs, ds, interval_end, interactions_from))
    counts = dict.fromkeys(segments.ids, 0)
    counts.update(
        (str(segment_id), int(n))
        for segment_id, n in wh.query(
            f"SELECT segment_id, count(*) FROM {rs}.segment_memberships GROUP BY segment_id"
        )
    )
    return counts


# -- names the catalogue does not have --------------------------------------------------------

# The columns a rule may name, outermost first: an event, a poll, its title, its type, its
# options. Each but the event is looked for among the catalogue's elements having what the rule
# names above it (an option of the title and type it names, a type of the poll), and said in the
# rule's words; the event among the interactions the run reads, which carry it themselves.
_LEVELS = ("event_id", "poll_id", "title", "element_type", "option_label")
_HAS = {
    "event_id": "has the event_id {!r}",  # said of an interaction
    "poll_id": "has the poll_id {!r}",
    "title": "is titled {!r}",
    "element_type": "has the element_type {!r}",
    "option_label": "has the option {!r}",
}


def _named(rule: Rule) -> list[tuple[str, dict[str, tuple[str, list[str]]]]]:
    """Per answer or interaction condition under ``rule``: (its key, {catalogue column it names:
    (the key naming it, the values)})."""
    if rule.kind in COMBINATORS:
        return [named for child in rule.children for named in _named(child)]
    p = rule.params
    if rule.kind == "answer":
        named = {"title": ("attribute", [p["attribute"]])}
        return [(rule.where, {**named, "option_label": (p["values_key"], list(p["values"]))})]
    if rule.kind == "interaction":
        filters = p["filters"]
        named = {c: (k, filters[k]) for k, c in INTERACTION_FILTERS.items() if k in filters}
        return [(rule.where, {c: named[c] for c in _LEVELS if c in named})]
    return []


def _described(context: list[tuple[str, list[str]]]) -> str:
    """`` titled 'Vote' with the poll_id '9' and the element_type 'vote'``: the elements looked
    among."""
    given = {column: " or ".join(map(repr, values)) for column, values in context}
    titled = f" titled {given['title']}" if "title" in given else ""
    having = [f"the {c} {given[c]}" for c in ("poll_id", "element_type") if c in given]
    return titled + (f" with {' and '.join(having)}" if having else "")


def _condition_misses(
    where: str, named: dict[str, tuple[str, list[str]]], rows: list[tuple], events: set, ds: str
) -> list[str]:
    """What one condition names that no element has (``rows``: the catalogue's elements having
    any name segments.yml gives, as (event_id, poll_id, title, element_type, option_label)), or,
    for an event id, no interaction up to ``ds`` (``events``: those carried)."""
    said: list[str] = []
    within, context = rows, []
    for i, column in enumerate(_LEVELS):
        if column not in named:
            continue
        key, values = named[column]
        event = column == "event_id"
        there = events if event else {row[i] for row in within}
        of = f"interaction up to {ds}" if event else f"element{_described(context)}"
        said += [
            f"{where}.{key}: no {of} {_HAS[column].format(v)}" for v in values if v not in there
        ]
        known = [v for v in values if v in there]
        if not known:
            break  # nothing it names here is there: that says it all
        if event:
            # Not a context: the element's event_id is optional and need not be the event its
            # interactions carry (a team selector is answered at every event).
            continue
        within = [row for row in within if row[i] in known]
        context.append((column, known))
    return said


def catalogue_misses(
    wh: Warehouse, segments: SegmentSet, ds: str, interactions_from: str | None = None
) -> dict[str, list[str]]:
    """Per segment, the poll ids, element titles, element types and option labels its ``answer``
    and ``interaction`` rules name that no element of the catalogue in force on ``ds`` has, or
    none having the rest the rule names; and the event ids no interaction the run reads carries
    (up to ``ds``, from ``interactions_from``): one query.

    A typo ("Manchester Bleu", a poll id mistyped) built an empty segment without a word, and a
    destination syncing it emptied its address book. Not an error: a segment may be written
    before its poll launches. Nor does such a rule always match nothing: the interactions of a
    poll whose element never landed carry its poll id, and those of a poll renamed or removed
    since keep the title, type and labels they were enriched with; an event id no interaction
    carries does."""
    named = {s.segment_id: _named(s.rule) for s in segments.segments}
    wanted: dict[str, set[str]] = {column: set() for column in _LEVELS}
    for conditions in named.values():
        for _, levels in conditions:
            for column, (_, values) in levels.items():
                wanted[column].update(values)
    if not any(wanted.values()):
        return {}
    found = wh.query(
        wh.render(
            "segments/catalogue_names",
            ds=check_ds(ds),
            named=[
                (column, [wh.literal(v) for v in sorted(values)])
                for column, values in wanted.items()
                if values and column != "event_id"
            ],
            events=[wh.literal(v) for v in sorted(wanted["event_id"])],
            interactions_from=check_ds(interactions_from) if interactions_from else None,
        )
    )
    # poll_id is required of every element: a row without one is an interaction's event
    rows = [tuple(row) for row in found if row[1] is not None]
    events = {row[0] for row in found if row[1] is None}
    misses: dict[str, list[str]] = {}
    for segment_id, conditions in named.items():
        said = [
            m
            for where, levels in conditions
            for m in _condition_misses(where, levels, rows, events, ds)
        ]
        if said:
            misses[segment_id] = said
    return misses
