"""Connected components in SQL (include/sql/identity/cc_*.sql) on DuckDB.

- hypothesis: on random graphs the SQL labels equal a plain Python union-find's components, and
  every label is its component's smallest node id; with the star round (sessions linked only to
  values), every session is in the map and labels are the smallest value id;
- cost: rounds and pointer jumps grow with log2 of a path's length (its diameter), and not with
  the number of nodes (many short paths, a large star).
"""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_profiles.config import WarehouseConfig
from audience_profiles.identity import connected_components
from audience_profiles.warehouse.duckdb import DuckDBWarehouse
from tests.support import union_find


@pytest.fixture(scope="module")
def wh():
    warehouse = DuckDBWarehouse(WarehouseConfig(path=":memory:", threads=2))
    yield warehouse
    warehouse.close()


def sql_components(wh, edges: list[tuple[int, int]]):
    frame = pd.DataFrame(
        [(min(a, b), max(a, b)) for a, b in edges if a != b], columns=["a", "b"], dtype="int64"
    )
    wh.con.register("edge_frame", frame)
    wh.execute_script("CREATE OR REPLACE TEMP TABLE id_edges_t AS SELECT a, b FROM edge_frame")
    wh.con.unregister("edge_frame")
    stats = connected_components(wh, "_t")
    labels = dict(wh.query("SELECT node, parent FROM id_cc_map_t"))
    nodes = {n for e in edges for n in e if e[0] != e[1]}
    return {n: labels.get(n, n) for n in nodes}, stats


def partition(labels: dict[int, int]) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for node, label in labels.items():
        groups.setdefault(label, set()).add(node)
    return {frozenset(g) for g in groups.values()}


node_ids = st.integers(min_value=-(2**62), max_value=2**62)
graphs = st.lists(node_ids, min_size=2, max_size=40, unique=True).flatmap(
    lambda nodes: st.lists(st.tuples(st.sampled_from(nodes), st.sampled_from(nodes)), max_size=60)
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edges=graphs)
def test_sql_components_equal_union_find(wh, edges):
    labels, _ = sql_components(wh, edges)
    expected = union_find([e for e in edges if e[0] != e[1]])
    assert partition(labels) == partition(expected)
    for node, label in labels.items():
        assert label == expected[node]  # the label is the component's smallest id


# Identity graphs: sessions link only to values (emails, external_ids), values to each other too.
session_graphs = st.tuples(
    st.lists(node_ids, min_size=1, max_size=25, unique=True),
    st.lists(node_ids, min_size=1, max_size=25, unique=True),
).flatmap(
    lambda ids: st.tuples(
        st.just(sorted(set(ids[0]) - set(ids[1]))),
        st.just(ids[1]),
        st.lists(st.tuples(st.sampled_from(ids[0]), st.sampled_from(ids[1])), max_size=50),
        st.lists(st.tuples(st.sampled_from(ids[1]), st.sampled_from(ids[1])), max_size=15),
    )
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(graph=session_graphs)
def test_the_star_round_gives_union_find_components(wh, graph):
    sessions, values, session_links, value_links = graph
    session_set = set(sessions)
    rows = [(min(s, v), max(s, v), s) for s, v in session_links if s in session_set]
    rows += [(min(a, b), max(a, b), None) for a, b in value_links if a != b]
    frame = pd.DataFrame(rows, columns=["a", "b", "session_node"], dtype="Int64")
    wh.con.register("edge_frame", frame)
    wh.execute_script(
        "CREATE OR REPLACE TEMP TABLE id_edges_t AS "
        "SELECT DISTINCT CAST(a AS BIGINT) AS a, CAST(b AS BIGINT) AS b, "
        "CAST(session_node AS BIGINT) AS session_node FROM edge_frame"
    )
    wh.con.unregister("edge_frame")
    connected_components(wh, "_t", stars=True)
    labels = dict(wh.query("SELECT node, parent FROM id_cc_map_t"))
    expected = union_find([(a, b) for a, b, _ in rows])
    assert partition({n: labels.get(n, n) for n in expected}) == partition(expected)
    linked_sessions = {s for _, _, s in rows if s is not None}
    assert linked_sessions <= set(labels)  # labels.sql finds the linked sessions in the map
    for node, label in labels.items():
        members = [n for n in expected if expected[n] == expected[node]]
        assert label == min(n for n in members if n not in session_set)


def shuffled_path(n: int, seed: int) -> list[tuple[int, int]]:
    ids = list(range(n))
    random.Random(seed).shuffle(ids)
    return list(zip(ids, ids[1:], strict=False))


@pytest.mark.parametrize("n", [2**k for k in (4, 6, 8, 10, 12)])
@pytest.mark.parametrize("order", ["ascending", "shuffled"])
def test_work_grows_with_log_of_the_diameter(wh, n, order):
    edges = list(zip(range(n - 1), range(1, n), strict=True))
    if order == "shuffled":
        edges = shuffled_path(n, seed=n)
    labels, stats = sql_components(wh, edges)
    assert set(labels.values()) == {0}
    log_n = math.log2(n)
    # Ascending ids: one hook makes a chain of depth n-1, flattened by log2(n) jumps (+1 that
    # finds it flat). Shuffled: every round contracts the path by a factor > 2, and its trees
    # are shallow. Jumps count every jump query, the one per round that finds the forest flat too.
    assert stats.rounds <= log_n
    assert stats.jumps <= 3 * log_n


def test_work_does_not_grow_with_the_number_of_components(wh):
    # 200 paths of 64 nodes: 12,800 nodes, diameter 63. The bounds of one such path hold.
    many_edges = [
        (a + 1000 * copy, b + 1000 * copy)
        for copy in range(200)
        for a, b in shuffled_path(64, seed=copy)
    ]
    labels, stats = sql_components(wh, many_edges)
    assert len(set(labels.values())) == 200
    assert stats.rounds <= math.log2(64)
    assert stats.jumps <= 3 * math.log2(64)


def test_a_star_of_ten_thousand_leaves_is_one_round(wh):
    labels, stats = sql_components(wh, [(0, leaf) for leaf in range(1, 10_001)])
    assert set(labels.values()) == {0}
    assert (stats.rounds, stats.jumps) == (1, 1)
