"""The daily build done the straightforward pandas way: the benchmark's reference.

What a competent analyst would write without a warehouse: read every landing partition up to
the run's date into DataFrames, type-check them, join the element catalogue, resolve identities
with the same rules (value rules, shared devices, per-session and per-profile limits, anchors)
by label propagation, and build the same output tables as Parquet. It follows the SQL's rules
closely enough that ``bench_build.py --verify`` can compare the two on the same data; it is not
used by the pipeline.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from audience_profiles.identity import IdentityRules  # noqa: E402
from audience_profiles.landing import SOURCES  # noqa: E402
from audience_profiles.privacy import EMAIL_PATTERN  # noqa: E402

YES, NO = {"yes", "y", "true", "1"}, {"no", "n", "false", "0"}
DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
INT_RE = re.compile(r"^[0-9]{1,9}$")
# validate/_macros.sql's ISO 8601 forms: a date, an optional time, an optional Z or offset
ISO_TIMESTAMP_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.][0-9]{1,9})?)?"
    r"(Z|[+-]((0[0-9]|1[0-3]):?[0-5][0-9]|14:?00))?)?"
)
EARLIEST = "1900-01-01"  # validate/_macros.sql: earlier dates and times are quarantined


# --- landing ------------------------------------------------------------------------------


def read_source(root: Path, source: str, dates: list[str]) -> pd.DataFrame:
    frames = []
    folders = (
        [root / source] if source == "elements" else [root / source / f"date={d}" for d in dates]
    )
    for folder in folders:
        for path in sorted(folder.glob("*")):
            if path.suffix == ".csv":
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
                frame["_line"] = np.arange(len(frame)) + 2  # after the header
            elif path.suffix == ".json":
                # Each record as parsed, no type or date inference (read_json's switches for
                # that, convert_dates and keep_default_dates, are deprecated in pandas 3).
                with path.open() as records:
                    frame = pd.DataFrame.from_records(
                        [json.loads(line) for line in records if line.strip()]
                    )
                frame = frame.astype(object).where(frame.notna(), None)
                frame["_line"] = np.arange(len(frame)) + 1
            else:
                continue
            frame["_file"] = str(path)
            frame["dt"] = folder.name.removeprefix("date=")
            frames.append(frame)
    if not frames:  # no file for these dates: no rows, but every column the checks read
        return pd.DataFrame(
            columns=[*SOURCES[source].columns, "_line", "_file", "dt"], dtype=object
        )
    frame = pd.concat(frames, ignore_index=True)
    for column in SOURCES[source].columns:
        if column not in frame:  # an optional field no record has (JSON leaves absent ones out)
            frame[column] = None
    # a NUL character in any field quarantines the row (validate/_macros.sql nul_free)
    nul = pd.Series(False, index=frame.index)
    for column in SOURCES[source].columns:
        values = frame[column].where(frame[column].notna(), "").astype(str)
        nul |= values.str.contains("\x00", regex=False)
    return frame[~nul]


def text(series: pd.Series) -> pd.Series:
    return series.where(series.notna(), "").astype(str).str.strip()


def blank_to_none(series: pd.Series) -> pd.Series:
    series = text(series)
    return series.where(series != "", None)


def to_bool(series: pd.Series) -> pd.Series:
    lowered = text(series).str.lower()
    return lowered.map(lambda v: True if v in YES else False if v in NO else None)


def utc_timestamps(series: pd.Series) -> pd.Series:
    """ISO 8601 text as naive UTC timestamps (an offset applied, none meaning UTC); NaT if not."""
    value = text(series)
    iso = value.where(value.str.fullmatch(ISO_TIMESTAMP_RE.pattern) & (value >= EARLIEST))
    parsed = pd.to_datetime(iso, errors="coerce", format="ISO8601", utc=True)
    return parsed.dt.tz_localize(None)


def valid_email(series: pd.Series, pattern: str) -> pd.Series:
    return text(series).str.lower().str.fullmatch(pattern)


# --- validation and enrichment ---------------------------------------------------------------


def validate(root: Path, dates: list[str], email_pattern: str) -> dict[str, pd.DataFrame]:
    elements = read_source(root, "elements", dates)
    ok = (
        (text(elements["poll_id"]) != "")
        & text(elements["option"]).str.fullmatch(INT_RE.pattern)
        & (text(elements["title"]) != "")
        & (text(elements["option_label"]) != "")
    )  # any element_type is kept (another than the contract's five too)
    elements = elements[ok].assign(
        poll_id=lambda f: text(f["poll_id"]),
        option=lambda f: text(f["option"]).astype(int),
        title=lambda f: text(f["title"]),
        option_label=lambda f: text(f["option_label"]),
        element_type=lambda f: blank_to_none(f["element_type"]).str.lower(),
    )
    elements = elements.sort_values(["_file", "_line"]).drop_duplicates(
        ["poll_id", "option"], keep="last"
    )

    inter = read_source(root, "interactions", dates)
    date = text(inter["date"])
    ok = (
        date.str.fullmatch(DATE_RE.pattern)
        & pd.to_datetime(date, format="%Y-%m-%d", errors="coerce").notna()
        & (date >= EARLIEST)
        & (date <= inter["dt"])  # not dated after its partition
        & (text(inter["event_id"]) != "")
        & (text(inter["poll_id"]) != "")
        & (text(inter["session_id"]) != "")
        & text(inter["option"]).str.fullmatch(INT_RE.pattern)
        & text(inter["votes"]).str.fullmatch(INT_RE.pattern)
    )
    quarantined = {"interactions": inter[~ok]}
    inter = inter[ok].assign(
        date=lambda f: pd.to_datetime(text(f["date"])).dt.date,
        event_id=lambda f: text(f["event_id"]),
        poll_id=lambda f: text(f["poll_id"]),
        session_id=lambda f: text(f["session_id"]),
        option=lambda f: text(f["option"]).astype(int),
        votes=lambda f: text(f["votes"]).astype(int),
    )

    forms = read_source(root, "form_entries", dates)
    entry = utc_timestamps(forms["entry_datetime"])
    yes_no_ok = [
        (text(forms[c]) == "") | text(forms[c]).str.lower().isin(YES | NO)
        for c in ("optin_1", "optin_2", "accept_terms")
    ]
    form_id = text(forms["form_id"])
    ok = (
        entry.notna()
        & (text(forms["session_id"]) != "")
        & valid_email(forms["email"], email_pattern)
        & yes_no_ok[0]
        & yes_no_ok[1]
        & yes_no_ok[2]
        & ((form_id == "") | form_id.str.fullmatch(INT_RE.pattern))
    )
    quarantined["form_entries"] = forms[~ok]
    forms = forms[ok].assign(
        entry_datetime=entry[ok],
        first_name=lambda f: blank_to_none(f["first_name"]),
        last_name=lambda f: blank_to_none(f["last_name"]),
        email=lambda f: text(f["email"]).str.lower(),
        optin_1=lambda f: to_bool(f["optin_1"]),
        optin_2=lambda f: to_bool(f["optin_2"]),
        accept_terms=lambda f: to_bool(f["accept_terms"]),
        session_id=lambda f: text(f["session_id"]),
        form_name=lambda f: blank_to_none(f["form_name"]),
        form_id=lambda f: pd.to_numeric(blank_to_none(f["form_id"])).astype("Int64"),
    )

    ids = read_source(root, "identities", dates)
    observed = utc_timestamps(ids["observed_at"])
    # an SSO row's email is not checked: the identity rules leave an invalid one out
    ok = observed.notna() & (text(ids["session_id"]) != "") & (text(ids["external_id"]) != "")
    quarantined["identities"] = ids[~ok]
    ids = ids[ok].assign(
        observed_at=observed[ok],
        session_id=lambda f: text(f["session_id"]),
        external_id=lambda f: text(f["external_id"]),
        email=lambda f: blank_to_none(f["email"]).str.lower(),
        first_name=lambda f: blank_to_none(f["first_name"]),
        last_name=lambda f: blank_to_none(f["last_name"]),
    )

    enriched = inter.merge(
        elements[["poll_id", "option", "title", "element_type", "option_label"]],
        on=["poll_id", "option"],
        how="left",
    )
    return {
        "elements": elements,
        "interactions_enriched": enriched,
        "form_entries": forms,
        "identities": ids,
        "quarantined": quarantined,
    }


# --- identity ------------------------------------------------------------------------------


def links_as_of(data: dict, cutoff_dt: str, cutoff_ts: pd.Timestamp) -> pd.DataFrame:
    forms, ids = data["form_entries"], data["identities"]
    forms = forms[(forms["dt"] <= cutoff_dt) & (forms["entry_datetime"] < cutoff_ts)]
    ids = ids[(ids["dt"] <= cutoff_dt) & (ids["observed_at"] < cutoff_ts)]
    with_email = ids[ids["email"].notna()]

    def link(frame, lt, lcol, rt, rcol, at, source):
        return pd.DataFrame(
            {
                "left_type": lt,
                "left_value": frame[lcol].to_numpy(),
                "right_type": rt,
                "right_value": frame[rcol].to_numpy(),
                "observed_at": frame[at].to_numpy(),
                "dt": frame["dt"].to_numpy(),
                "source": source,
                "file": frame["_file"].to_numpy(),
                "line": frame["_line"].to_numpy(),
            }
        )

    return pd.concat(
        [
            link(
                forms,
                "session_id",
                "session_id",
                "email",
                "email",
                "entry_datetime",
                "form_entries",
            ),
            link(
                ids,
                "session_id",
                "session_id",
                "external_id",
                "external_id",
                "observed_at",
                "identities",
            ),
            link(
                with_email,
                "external_id",
                "external_id",
                "email",
                "email",
                "observed_at",
                "identities",
            ),
        ],
        ignore_index=True,
    )


def blocked_reason(node_type: str, value: str, rules: IdentityRules) -> str | None:
    if value is None:
        return "missing"
    if len(value) > rules.max_value_length:
        return f"longer than {rules.max_value_length} characters"
    lowered = value.lower()
    if lowered in {v.strip().lower() for v in rules.blocked_values[node_type]}:
        return "blocked value"
    for pattern in rules.blocked_patterns[node_type]:
        if re.fullmatch(pattern, lowered):
            return f"matches blocked pattern {pattern}"
    if node_type == "email" and value != value.strip().lower():
        return "not normalised (trim and lower-case)"
    if node_type == "email" and not re.fullmatch(rules.email_pattern, value):
        return "not a valid email"
    if node_type != "email" and value != value.strip():
        return "not normalised (trim)"
    return None


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Label propagation: every node takes the smallest label among itself and its neighbours,
    until nothing changes (one pass per step of the longest shortest path)."""
    label = np.arange(n)
    while True:
        offered = (
            pd.DataFrame(
                {"node": np.concatenate([a, b]), "label": np.concatenate([label[b], label[a]])}
            )
            .groupby("node")["label"]
            .min()
        )
        new = label.copy()
        new[offered.index] = np.minimum(label[offered.index], offered.to_numpy())
        if np.array_equal(new, label):
            return label
        label = new


def resolve(data: dict, rules: IdentityRules, cutoff_dt: str, cutoff_ts: str) -> dict:
    links = links_as_of(data, cutoff_dt, pd.Timestamp(cutoff_ts))
    rank = {t: i + 1 for i, t in enumerate(rules.priority)}
    links["link_rank"] = [
        min(rank[lt], rank[rt])
        for lt, rt in zip(links["left_type"], links["right_type"], strict=True)
    ]
    links["left"] = links["left_type"] + ":" + links["left_value"]
    links["right"] = links["right_type"] + ":" + links["right_value"]

    ends = pd.concat(
        [
            links[["left_type", "left_value", "left", "dt", "observed_at"]].set_axis(
                ["type", "value", "node", "dt", "observed_at"], axis=1
            ),
            links[["right_type", "right_value", "right", "dt", "observed_at"]].set_axis(
                ["type", "value", "node", "dt", "observed_at"], axis=1
            ),
        ]
    )
    # first seen: one row's landing day and observed second, as one number
    ends["seen_key"] = (pd.to_datetime(ends["dt"]) - pd.Timestamp("1970-01-01")).dt.days.astype(
        "int64"
    ) * 10_000_000_000 + (
        ends["observed_at"].dt.floor("s") - pd.Timestamp("1970-01-01")
    ).dt.total_seconds().astype("int64").clip(0, 9_999_999_999)
    values = ends.groupby("node").agg(
        type=("type", "first"),
        value=("value", "first"),
        first_dt=("dt", "min"),
        first_at=("observed_at", "min"),
        seen_key=("seen_key", "min"),
    )
    values["blocked"] = [
        blocked_reason(t, v, rules) for t, v in zip(values["type"], values["value"], strict=True)
    ]
    bad = values["blocked"].dropna()
    links["left_blocked"] = links["left"].map(bad)
    links["right_blocked"] = links["right"].map(bad)
    usable = links["left_blocked"].isna() & links["right_blocked"].isna()

    links["rule"], links["detail"] = None, None
    links.loc[links["left_blocked"].notna(), "detail"] = (
        links["left_type"] + " " + links["left_blocked"].astype(object).fillna("")
    )
    right_only = links["left_blocked"].isna() & links["right_blocked"].notna()
    links.loc[right_only, "detail"] = (
        links["right_type"] + " " + links["right_blocked"].astype(object).fillna("")
    )
    links.loc[~usable, "rule"] = "blocked_value"

    shared = {}
    for type_, limit in rules.shared_device.items():
        part = links[usable & (links["left_type"] == "session_id") & (links["right_type"] == type_)]
        counts = part.groupby("left")["right"].nunique()
        for session, count in counts[counts > limit].items():
            shared.setdefault(
                session, f"session carries {count} distinct {type_} values (limit {limit})"
            )
    is_shared = links["rule"].isna() & links["left"].isin(shared)
    links.loc[is_shared, "rule"] = "shared_device"
    links.loc[is_shared, "detail"] = links.loc[is_shared, "left"].map(shared)

    for type_, limit in rules.per_session.items():
        part = links[usable & (links["left_type"] == "session_id") & (links["right_type"] == type_)]
        pairs = part.groupby(["left", "right"], as_index=False).agg(
            last_at=("observed_at", "max"), value=("right_value", "first")
        )
        pairs = pairs.sort_values(["left", "last_at", "value"], ascending=[True, False, True])
        pairs["recency"] = pairs.groupby("left").cumcount() + 1
        over = set(map(tuple, pairs.loc[pairs["recency"] > limit, ["left", "right"]].to_numpy()))
        hit = links["rule"].isna() & np.array(
            [
                (left, right) in over
                for left, right in zip(links["left"], links["right"], strict=True)
            ]
        )
        links.loc[hit, "rule"] = "session_limit"
        links.loc[hit, "detail"] = f"session keeps its {limit} most recent {type_} value(s)"

    accepted = links[links["rule"].isna()]
    sessions_linked = set(accepted.loc[accepted["left_type"] == "session_id", "left"])
    nodes = values[
        values["blocked"].isna()
        & ((values["type"] != "session_id") | values.index.isin(sessions_linked))
    ].copy()

    codes = {node: i for i, node in enumerate(nodes.index)}
    a = accepted["left"].map(codes).to_numpy(dtype="int64")
    b = accepted["right"].map(codes).to_numpy(dtype="int64")
    nodes["label"] = components(len(nodes), a, b)

    cuts = {}
    for type_ in rules.per_profile:
        # the links cut for a higher-priority type are gone before the next type is split, as in
        # the SQL (limit_apply deletes them from the edges)
        kept = accepted
        if cuts:
            kept = accepted[
                [
                    (min(left, right), max(left, right)) not in cuts
                    for left, right in zip(accepted["left"], accepted["right"], strict=True)
                ]
            ]
        cuts.update(split_profiles(nodes, kept, type_))
    cut_key = np.array(
        [
            (min(left, right), max(left, right)) in cuts
            for left, right in zip(accepted["left"], accepted["right"], strict=True)
        ],
        dtype=bool,
    )
    cut_rows = accepted[cut_key].copy()
    cut_rows["rule"] = "profile_limit"
    cut_rows["detail"] = [
        cuts[(min(left, right), max(left, right))]
        for left, right in zip(cut_rows["left"], cut_rows["right"], strict=True)
    ]
    rejected = pd.concat([links[links["rule"].notna()], cut_rows], ignore_index=True)

    # anchors: emails and external_ids before sessions, then first seen, then the id
    nodes["anchor_key"] = nodes["seen_key"] + np.where(
        nodes["type"] == "session_id", 100_000_000_000_000_000, 0
    )
    nodes["hash"] = [hashlib.md5(n.encode()).hexdigest()[:20] for n in nodes.index]
    ordered = nodes.sort_values(["label", "anchor_key", "hash"])
    anchor = ordered.groupby("label")["hash"].first()
    nodes["profile_id"] = "ap_" + nodes["label"].map(anchor).astype(str)
    nodes["profile_first_seen"] = nodes.groupby("label")["first_at"].transform("min")
    identifiers = nodes.reset_index().rename(
        columns={"type": "identifier_type", "value": "identifier_value", "first_at": "first_seen"}
    )[
        [
            "identifier_type",
            "identifier_value",
            "profile_id",
            "first_dt",
            "first_seen",
            "profile_first_seen",
        ]
    ]
    kept = accepted[~cut_key]
    return {"identifiers": identifiers, "rejected": rejected, "accepted": kept}


def split_profiles(nodes: pd.DataFrame, accepted: pd.DataFrame, type_: str) -> dict:
    """Components holding several ``type_`` values: breadth-first from each, nearest first, then
    link rank, then the most recent link, then the value; links between parts are cut."""
    seeds = nodes[nodes["type"] == type_]
    conflicted = seeds.groupby("label").size()
    conflicted = set(conflicted[conflicted > 1].index)
    if not conflicted:
        return {}
    members = set(nodes.index[nodes["label"].isin(conflicted)])
    inside = accepted[accepted["left"].isin(members)]
    pairs = inside.groupby(["left", "right"], as_index=False).agg(
        link_rank=("link_rank", "min"), last_at=("observed_at", "max")
    )
    neighbours: dict[str, list] = {}
    for left, right, link_rank, last_at in pairs.itertuples(index=False):
        neighbours.setdefault(left, []).append((right, link_rank, last_at))
        neighbours.setdefault(right, []).append((left, link_rank, last_at))
    part = {node: node for node in seeds.index if nodes.at[node, "label"] in conflicted}
    frontier = deque(part)
    while frontier:
        offers: dict[str, tuple] = {}
        for node in frontier:
            for other, link_rank, last_at in neighbours.get(node, []):
                if other in part:
                    continue
                offer = (link_rank, -last_at.value, part[node])
                offers[other] = min(offers.get(other, offer), offer)
        for other, offer in offers.items():
            part[other] = offer[2]
        frontier = deque(offers)
    cuts = {}
    for left, right, *_ in pairs.itertuples(index=False):
        if part[left] != part[right]:
            seeds_ = sorted((part[left], part[right]))
            cuts[(min(left, right), max(left, right))] = (
                f"profile holds at most one {type_}: would join {seeds_[0]} and {seeds_[1]}"
            )
    offset = int(nodes["label"].max()) + 1
    new_label = {seed: offset + i for i, seed in enumerate(sorted(set(part.values())))}
    for node, seed in part.items():
        nodes.at[node, "label"] = new_label[seed]
    return cuts


def merges(prev: dict, cur: dict, new_links: pd.DataFrame, interval_start: str) -> pd.DataFrame:
    """Per merged profile, Kruskal over the survivor's new links in the reporting order (time,
    then the ends): the first link that connects the merged profile with the survivor's side
    names the merge, its end on the survivor's side the identifier."""
    p, c = prev["identifiers"], cur["identifiers"]
    key = lambda f: f["identifier_type"] + ":" + f["identifier_value"]  # noqa: E731
    prev_of = dict(zip(key(p), p["profile_id"], strict=True))
    cur_of = dict(zip(key(c), c["profile_id"], strict=True))
    members: dict[str, set] = {}
    for identifier, profile in cur_of.items():
        members.setdefault(profile, set()).add(identifier)
    first = (
        new_links.groupby(
            ["left", "right", "left_type", "left_value", "right_type", "right_value", "source"]
        )["observed_at"]
        .min()
        .reset_index()
        .sort_values(["observed_at", "left_type", "left_value", "right_type", "right_value"])
    )
    links_of: dict[str, list] = {}
    for link in first.itertuples(index=False):
        profile = cur_of.get(link.left)
        if profile is not None and profile == cur_of.get(link.right):
            links_of.setdefault(profile, []).append(link)
    gone = p[~p["profile_id"].isin(set(c["profile_id"]))]
    # each merged profile's anchor (its id derives from it); else its earliest email or
    # external_id, a session last
    rank = [
        0 if profile_id_of(f"{t}:{v}") == m else 2 if t == "session_id" else 1
        for m, t, v in zip(
            gone["profile_id"], gone["identifier_type"], gone["identifier_value"], strict=True
        )
    ]
    earliest = (
        gone.assign(rank=rank)
        .sort_values(["profile_id", "rank", "first_seen", "identifier_type", "identifier_value"])
        .drop_duplicates("profile_id")
    )
    old_ids = set(p["profile_id"])
    by_survivor: dict[str, list] = {}
    for m in earliest.itertuples(index=False):
        survivor = cur_of.get(f"{m.identifier_type}:{m.identifier_value}")
        if survivor is not None:
            by_survivor.setdefault(survivor, []).append(m)
    out = []
    for s, merged in by_survivor.items():
        anchors = sorted(i for i in members[s] if profile_id_of(i) == s)
        if s in old_ids:
            sides = {m.profile_id: {s} for m in merged}
        elif anchors:  # a new id: the survivor's side is the identifier it derives from
            sides = {m.profile_id: {prev_of.get(anchors[0], anchors[0])} for m in merged}
        else:  # ... or every other old profile now in it
            old_here = {prev_of[i] for i in members[s] if i in prev_of}
            sides = {m.profile_id: old_here - {m.profile_id} for m in merged}
        found = joined(links_of.get(s, []), prev_of, sides)
        for m in merged:
            link, end = found.get(m.profile_id, (None, None))
            row = (
                (
                    link.observed_at,
                    f"{link.source}:{link.left_type}-{link.right_type}",
                    *end.split(":", 1),
                )
                if link is not None
                else (
                    pd.Timestamp(interval_start),
                    "regrouped",
                    m.identifier_type,
                    m.identifier_value,
                )
            )
            out.append(
                {
                    "merged_profile_id": m.profile_id,
                    "surviving_profile_id": s,
                    "merged_at": row[0],
                    "reason": row[1],
                    "identifier_type": row[2],
                    "identifier_value": row[3],
                }
            )
    return pd.DataFrame(
        out,
        columns=[
            "merged_profile_id",
            "surviving_profile_id",
            "merged_at",
            "reason",
            "identifier_type",
            "identifier_value",
        ],
    )


def joined(links: list, prev_of: dict, sides: dict[str, set]) -> dict[str, tuple]:
    """Kruskal over one survivor's links in order: for each merged profile, the first link
    after which it is connected to its side, and that link's end on the side's part."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])  # path halving
            x = parent[x]
        return x

    found: dict[str, tuple] = {}
    waiting: dict[str, set] = {}  # root -> the merged profiles in its part, not yet joined
    for m, side in sides.items():
        if side:
            waiting.setdefault(m, set()).add(m)
    for link in links:
        a, b = find(prev_of.get(link.left, link.left)), find(prev_of.get(link.right, link.right))
        if a == b:
            continue
        for m_root, other, end in ((a, b, link.right), (b, a, link.left)):
            for m in list(waiting.get(m_root, ())):
                if other in {find(x) for x in sides[m]}:
                    found[m] = (link, end)
                    waiting[m_root].discard(m)
        parent[a] = b
        waiting.setdefault(b, set()).update(waiting.pop(a, ()))
    return found


def profile_id_of(identifier: str) -> str:
    return "ap_" + hashlib.md5(identifier.encode()).hexdigest()[:20]


# --- profiles ------------------------------------------------------------------------------

PROFILE_COLUMNS = [
    "profile_id",
    "email",
    "external_id",
    "first_name",
    "last_name",
    "optin_1",
    "optin_2",
    "accept_terms",
    "first_seen",
    "last_seen",
    "sessions",
    "interactions",
    "answers",
    "optin_1_at",
    "optin_1_source",
    "optin_2_at",
    "optin_2_source",
    "accept_terms_at",
    "accept_terms_source",
]
PROFILE_INTERACTION_COLUMNS = [
    "profile_id",
    "first_name",
    "last_name",
    "email",
    "interaction_date",
    "attribute",
    "option",
    "poll_id",
    "event_id",
    "session_id",
    "votes",
]


def profiles(data: dict, identity: dict, ds: str, interval_end: str) -> dict[str, pd.DataFrame]:
    ids = identity["identifiers"]
    if ids.empty:  # nobody identified yet (pandas cannot type the joins of empty frames)
        return {
            "audience_profiles": pd.DataFrame(columns=PROFILE_COLUMNS),
            "audience_profile_interactions": pd.DataFrame(columns=PROFILE_INTERACTION_COLUMNS),
        }
    by_type = {
        t: ids[ids["identifier_type"] == t].set_index("identifier_value")["profile_id"]
        for t in ("session_id", "email", "external_id")
    }
    end = pd.Timestamp(interval_end)
    forms = data["form_entries"]
    forms = forms[(forms["dt"] <= ds) & (forms["entry_datetime"] < end)]
    forms = forms.assign(
        profile_id=forms["email"].map(by_type["email"]),
        observed_at=forms["entry_datetime"],
        fact_source="form:"
        + forms["form_name"].fillna("")
        + forms["form_id"].map(lambda i: "" if pd.isna(i) else f" ({i})").astype(str),
        external_id=None,
    ).dropna(subset=["profile_id"])
    sso = data["identities"]
    sso = sso[(sso["dt"] <= ds) & (sso["observed_at"] < end)]
    sso = sso.assign(
        fact_source="sso",
        optin_1=None,
        optin_2=None,
        accept_terms=None,
        email_profile=sso["email"].map(by_type["email"]),
        account_profile=sso["external_id"].map(by_type["external_id"]),
    )
    # the account's profile takes the row, the email only if the rules put it there too; the
    # email's profile, where the account is not (blocked, or another profile), the email alone
    own = sso["email_profile"] == sso["account_profile"]
    emails_only = sso[sso["email_profile"].notna() & ~own].assign(
        profile_id=sso["email_profile"], first_name=None, last_name=None, external_id=None
    )
    sso = sso.assign(profile_id=sso["account_profile"], email=sso["email"].where(own, None)).dropna(
        subset=["profile_id"]
    )
    sso = pd.concat([sso, emails_only], ignore_index=True)
    columns = [
        "profile_id",
        "observed_at",
        "_file",
        "_line",
        "fact_source",
        "first_name",
        "last_name",
        "email",
        "external_id",
        "optin_1",
        "optin_2",
        "accept_terms",
    ]
    facts = pd.concat([forms[columns], sso[columns]], ignore_index=True).sort_values(
        ["profile_id", "observed_at", "_file", "_line"]
    )
    latest = {}
    for field in ("email", "external_id", "first_name", "last_name"):
        latest[field] = facts.dropna(subset=[field]).groupby("profile_id")[field].last()
    for field in ("optin_1", "optin_2", "accept_terms"):
        # at one instant a No wins over a Yes, whatever the file order
        stated = facts.dropna(subset=[field])
        stated = (
            stated.assign(_no=~stated[field].astype(bool))
            .sort_values(["profile_id", "observed_at", "_no", "_file", "_line"], kind="stable")
            .groupby("profile_id")
        )
        latest[field] = stated[field].last().astype(bool)
        latest[f"{field}_at"] = stated["observed_at"].last()
        latest[f"{field}_source"] = stated["fact_source"].last()
    last_fact = facts.groupby("profile_id")["observed_at"].max()

    enriched = data["interactions_enriched"]
    enriched = enriched[enriched["dt"] <= ds]
    mine = enriched.assign(profile_id=enriched["session_id"].map(by_type["session_id"])).dropna(
        subset=["profile_id"]
    )
    activity = mine.groupby("profile_id").agg(
        interactions=("date", "size"),
        first_interaction=("date", "min"),
        last_interaction=("date", "max"),
    )
    answered = mine.dropna(subset=["title", "option_label"]).sort_values(
        ["profile_id", "title", "date", "dt", "_file", "_line"]
    )
    answers = answered.groupby(["profile_id", "title"])["option_label"].last().reset_index()
    answers = pd.Series(
        {
            profile_id: json.dumps(
                dict(zip(g["title"], g["option_label"], strict=True)),
                separators=(",", ":"),
                ensure_ascii=False,
            )
            for profile_id, g in answers.groupby("profile_id")
        },
        dtype=object,
    )  # a Series even when no profile answered (apply() over no groups gives a DataFrame)

    per = ids.groupby("profile_id").agg(
        identity_first_seen=("profile_first_seen", "min"),
        identity_last_seen=("first_seen", "max"),
        sessions=("identifier_type", lambda t: int((t == "session_id").sum())),
    )
    out = per.join(pd.DataFrame(latest)).join(activity).join(last_fact.rename("last_fact_at"))
    first_interaction = pd.to_datetime(out["first_interaction"])
    last_interaction = pd.to_datetime(out["last_interaction"])
    out["first_seen"] = np.minimum(
        out["identity_first_seen"], first_interaction.fillna(out["identity_first_seen"])
    )
    out["last_seen"] = pd.concat(
        [
            out["last_fact_at"].fillna(out["identity_last_seen"]),
            out["identity_last_seen"],
            last_interaction.fillna(out["identity_last_seen"]),
        ],
        axis=1,
    ).max(axis=1)
    out["interactions"] = out["interactions"].fillna(0).astype("int64")
    out["answers"] = answers.reindex(out.index).fillna("{}")
    audience_profiles = out.reset_index()[PROFILE_COLUMNS]
    people = audience_profiles.set_index("profile_id")[["first_name", "last_name", "email"]]
    interactions = (
        mine.drop(columns=["option"])
        .join(people, on="profile_id")
        .rename(
            columns={"date": "interaction_date", "title": "attribute", "option_label": "option"}
        )[PROFILE_INTERACTION_COLUMNS]
    )
    return {"audience_profiles": audience_profiles, "audience_profile_interactions": interactions}


# --- the build -----------------------------------------------------------------------------


def build(landing_root: str, ds: str, out_dir: str, rules: IdentityRules) -> dict[str, int]:
    root = Path(landing_root)
    dates = sorted(
        {p.name.removeprefix("date=") for p in root.glob("*/date=*") if p.is_dir()} - {""}
    )
    dates = [d for d in dates if d <= ds]
    # validation holds form entries to the pipeline's pattern; identity.yml's email_pattern only
    # decides which emails are identifiers (an entry failing it stays, its email audited)
    data = validate(root, dates, EMAIL_PATTERN)
    day = pd.Timestamp(ds)
    start, end = str(day), str(day + pd.Timedelta(days=1))
    previous = str((day - pd.Timedelta(days=1)).date())
    prev = resolve(data, rules, previous, start)
    cur = resolve(data, rules, ds, end)
    accepted = cur["accepted"]
    new_links = accepted[(accepted["dt"] == ds) | (accepted["observed_at"] >= pd.Timestamp(start))]
    key = ["rule", "file", "line", "left_type", "right_type", "left_value", "right_value"]
    audit = cur["rejected"].merge(prev["rejected"][key], on=key, how="left", indicator=True)
    audit = audit[audit["_merge"] == "left_only"]
    tables = profiles(data, cur, ds, end)
    tables["profile_identifiers"] = cur["identifiers"][
        ["identifier_type", "identifier_value", "profile_id"]
    ]
    tables["profile_merges"] = merges(prev, cur, new_links, start)
    tables["identity_link_audit"] = audit[
        [
            "rule",
            "detail",
            "left_type",
            "left_value",
            "right_type",
            "right_value",
            "observed_at",
            "source",
            "file",
            "line",
        ]
    ]
    enriched = data["interactions_enriched"]
    tables["interactions_enriched"] = enriched[enriched["dt"] == ds][
        [
            "date",
            "event_id",
            "poll_id",
            "title",
            "element_type",
            "session_id",
            "option",
            "option_label",
            "votes",
        ]
    ]
    tables["quarantine"] = pd.concat(
        [q[q["dt"] == ds].assign(source=name) for name, q in data["quarantined"].items()]
    )[["source", "_file", "_line"]]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
    return {name: len(frame) for name, frame in tables.items()}


# --- comparison with the SQL build ----------------------------------------------------------

# The reference's own names for columns the SQL exports name otherwise.
RENAMED = {"quarantine": {"file": "_file AS file", "line": "_line AS line"}}


def compare_exports(sql_dir: Path, pandas_dir: Path, columns: dict[str, str]) -> dict[str, dict]:
    """Per table of ``columns`` (table -> its compared columns, comma-separated): the SQL
    export's rows and how many rows differ as a multiset (EXCEPT ALL both ways); where some
    differ, up to 5 of those only in each build."""
    import duckdb

    # A connection of its own: DuckDB's module-level one is shared by the whole process (the
    # test session), and a result left unread on it blocks everyone else's next statement.
    con = duckdb.connect()
    out = {}
    try:
        for table, compared in columns.items():
            renamed = RENAMED.get(table, {})
            pandas_columns = ", ".join(renamed.get(c, c) for c in compared.split(", "))
            a = f"SELECT {compared} FROM read_parquet('{sql_dir / table}.parquet')"
            b = f"SELECT {pandas_columns} FROM read_parquet('{pandas_dir / table}.parquet')"
            only_sql, only_pandas = f"{a} EXCEPT ALL {b}", f"{b} EXCEPT ALL {a}"
            rows, differing = con.execute(
                f"SELECT (SELECT count(*) FROM ({a})),"
                f" (SELECT count(*) FROM ({only_sql})) + (SELECT count(*) FROM ({only_pandas}))"
            ).fetchall()[0]
            out[table] = {"rows": rows, "differing": differing}
            if differing:
                out[table]["only in SQL"] = con.execute(f"{only_sql} LIMIT 5").fetchall()
                out[table]["only in pandas"] = con.execute(f"{only_pandas} LIMIT 5").fetchall()
    finally:
        con.close()
    return out
