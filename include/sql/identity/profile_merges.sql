-- Merges this run made: a profile of the previous snapshot (as of the interval start) whose id is
-- no longer live while its identifiers are. One row per merged-away id M, naming
-- - the survivor S: the live profile now holding M's earliest-seen identifier;
-- - when (merged_at): the earliest time t at which M's and S's previous identifiers are
--   connected through the previous snapshot's profiles (one previous profile's identifiers count
--   as connected) plus this interval's new links observed at or before t: the bottleneck of the
--   best path from M to S. Growth of either profile elsewhere does not count;
-- - how: the link that completes that connection. The new links are put in one order
--   (observed_at, then left type/value, right type/value, source) and the reported link is the
--   one at which M and S first connect in that order (so ties never depend on row order);
--   reason is its source ('form_entries:session_id-email', ...) and identifier_type/value its
--   end on the survivor's side (for a direct link from M to S: S's identifier; for M -- x -- S:
--   x if the link into M came last, S's end of x -- S otherwise).
--   With no such link the profiles were regrouped by a rule (a session found to be a shared
--   device, say): reason 'regrouped', merged_at the interval start, M's earliest identifier.
-- - If S did not exist in the previous snapshot (a new id: its anchor changed), S's side is the
--   anchor, the identifier S's id derives from (or that identifier's previous profile): the row
--   tells when and through which link M reached the identifier that now names it. Should no
--   identifier match the id (profile_identifiers.sql changed how ids are made), S's side is
--   every other previous profile now in S. M's own identifier as the anchor gives 'regrouped'.
--
-- Only the current profiles that took a merge are searched. Their graph: one node per previous
-- profile, one per new identifier; a new session (never linked to another session) is replaced
-- by direct edges between its neighbours, a new identifier with a single neighbour is dropped
-- (it lies on no path between two profiles; a new survivor's anchor is kept). Links are ranked
-- in the order above and an edge carries its link's rank, so "first connected" is a bottleneck
-- (minimax) path. Plain SQL, no recursion: a fixed number of relaxation rounds (merge_rounds)
-- finds every best path of up to that many edges in this graph (a chain of that many profiles
-- and bridging identifiers joined in one day); a longer one would be missed.
{% set merge_rounds = 32 %}
CREATE OR REPLACE TEMP TABLE id_merge_pairs AS
WITH gone AS (
    SELECT profile_id FROM profile_identifiers_prev
    EXCEPT
    SELECT profile_id FROM {{ rs }}.profile_identifiers
),
pairs AS (
    SELECT p.profile_id AS merged_profile_id, c.profile_id AS surviving_profile_id,
           p.identifier_type, p.identifier_value
    FROM profile_identifiers_prev p
    JOIN gone g ON g.profile_id = p.profile_id
    JOIN {{ rs }}.profile_identifiers c
      ON c.identifier_type = p.identifier_type AND c.identifier_value = p.identifier_value
    QUALIFY row_number() OVER (PARTITION BY p.profile_id
                               ORDER BY p.first_seen, p.identifier_type, p.identifier_value) = 1
),
existed AS (
    SELECT DISTINCT p.profile_id
    FROM profile_identifiers_prev p
    JOIN (SELECT DISTINCT surviving_profile_id FROM pairs) s
      ON s.surviving_profile_id = p.profile_id
)
SELECT pairs.*, e.profile_id IS NOT NULL AS survivor_existed
FROM pairs
LEFT JOIN existed e ON e.profile_id = pairs.surviving_profile_id;

-- The identifiers of the profiles that took a merge, each with its node: its previous profile,
-- or itself when it is new. A new survivor's anchor is the identifier its id derives from
-- (profile_identifiers.sql); a terminal node (an old profile, a new survivor's anchor) is never
-- dropped or replaced in the search graph.
CREATE OR REPLACE TEMP TABLE id_merge_nodes AS
WITH nodes AS (
    SELECT c.profile_id AS cur_id, c.identifier_type, c.identifier_value, p.profile_id AS prev_id,
           dense_rank() OVER (
               ORDER BY CASE WHEN p.profile_id IS NULL THEN 1 ELSE 0 END,
                        coalesce(p.profile_id, c.identifier_type),
                        CASE WHEN p.profile_id IS NULL THEN c.identifier_value END) AS node,
           coalesce(n.surviving_profile_id
                    = 'ap_' || substr(md5(c.identifier_type || ':' || c.identifier_value), 1, 20),
                    FALSE) AS anchor
    FROM {{ rs }}.profile_identifiers c
    LEFT JOIN profile_identifiers_prev p
      ON p.identifier_type = c.identifier_type AND p.identifier_value = c.identifier_value
    LEFT JOIN (SELECT DISTINCT surviving_profile_id FROM id_merge_pairs
               WHERE NOT survivor_existed) n
      ON n.surviving_profile_id = c.profile_id
    WHERE c.profile_id IN (SELECT surviving_profile_id FROM id_merge_pairs)
)
SELECT *, prev_id IS NOT NULL OR anchor AS terminal,
       max(CASE WHEN anchor THEN 1 ELSE 0 END) OVER (PARTITION BY cur_id) = 1 AS has_anchor
FROM nodes;

-- This interval's links between two nodes of one such profile, ranked in the reporting order.
-- The right end is never a session (links are session--email, session--external_id and
-- external_id--email), so only a left end can be a new session.
CREATE OR REPLACE TEMP TABLE id_merge_links AS
SELECT row_number() OVER (ORDER BY l.observed_at, l.left_type, l.left_value, l.right_type,
                                   l.right_value, l.source) AS rk,
       l.left_type, l.left_value, l.right_type, l.right_value, l.observed_at,
       l.source || ':' || l.left_type || '-' || l.right_type AS reason,
       a.cur_id, a.node AS left_node, b.node AS right_node,
       NOT a.terminal AS left_new, NOT b.terminal AS right_new,
       NOT a.terminal AND l.left_type = 'session_id' AS new_session
FROM id_new_links l
JOIN id_merge_nodes a ON a.identifier_type = l.left_type AND a.identifier_value = l.left_value
JOIN id_merge_nodes b ON b.identifier_type = l.right_type AND b.identifier_value = l.right_value
WHERE a.node <> b.node AND a.cur_id = b.cur_id;

-- The search graph's edges, both ways, each with the rank of its link (a new session's edge:
-- the later of its two links; several links between two nodes: the first), and a self-loop
-- ("stay", rank 0) on every node.
CREATE OR REPLACE TEMP TABLE id_merge_edges AS
WITH via AS (
    SELECT cur_id, left_node AS session_node, right_node AS node, right_new AS new_node,
           min(rk) AS rk
    FROM id_merge_links
    WHERE new_session
    GROUP BY cur_id, left_node, right_node, right_new
),
linked AS (
    SELECT a.cur_id, a.node AS a, a.new_node AS a_new, b.node AS b, b.new_node AS b_new,
           CASE WHEN a.rk > b.rk THEN a.rk ELSE b.rk END AS rk
    FROM via a
    JOIN via b ON b.session_node = a.session_node AND b.node > a.node
    UNION ALL
    SELECT cur_id, left_node, left_new, right_node, right_new, rk
    FROM id_merge_links
    WHERE NOT new_session
),
directed AS (
    SELECT cur_id, a AS src, a_new AS src_new, b AS dst, b_new AS dst_new, min(rk) AS rk
    FROM linked GROUP BY cur_id, a, a_new, b, b_new
    UNION ALL
    SELECT cur_id, b, b_new, a, a_new, min(rk) FROM linked GROUP BY cur_id, a, a_new, b, b_new
),
leaves AS (
    SELECT src AS node FROM directed WHERE src_new GROUP BY src HAVING count(DISTINCT dst) = 1
),
kept AS (
    SELECT cur_id, src, dst, min(rk) AS rk
    FROM directed
    WHERE src NOT IN (SELECT node FROM leaves) AND dst NOT IN (SELECT node FROM leaves)
    GROUP BY cur_id, src, dst
)
SELECT cur_id, src, dst, rk, FALSE AS stay FROM kept
UNION ALL
SELECT DISTINCT cur_id, src, src, 0, TRUE FROM kept;

-- The best path's rank from each merged profile to every node it reaches (0: itself). Most
-- searches have two nodes: the edge is the path. Larger ones take merge_rounds rounds of
-- relaxation (Bellman-Ford on the bottleneck: round k knows every best path of up to k edges),
-- each round reading the one before once (a chain of plain CTEs): a node keeps its rank through
-- its self-loop, and only nodes whose rank improved in the last round relax their edges.
CREATE OR REPLACE TEMP TABLE id_merge_reach AS
WITH sizes AS (
    SELECT cur_id, count(*) AS nodes FROM id_merge_edges WHERE stay GROUP BY cur_id
),
seeds AS (
    SELECT DISTINCT n.cur_id, n.node, z.nodes
    FROM id_merge_pairs m
    JOIN id_merge_nodes n ON n.prev_id = m.merged_profile_id AND n.cur_id = m.surviving_profile_id
    JOIN sizes z ON z.cur_id = n.cur_id
),
reach0 AS (
    SELECT cur_id, node AS seed, node, 0 AS rk, TRUE AS moved FROM seeds WHERE nodes > 2
),
{% for round in range(1, merge_rounds + 1) %}
reach{{ round }} AS (
    SELECT cur_id, seed, node,
           CASE WHEN new_rk < old_rk OR old_rk IS NULL THEN new_rk ELSE old_rk END AS rk,
           coalesce(new_rk < old_rk OR old_rk IS NULL, FALSE) AS moved
    FROM (
        SELECT r.cur_id, r.seed, e.dst AS node,
               min(CASE WHEN e.stay THEN r.rk END) AS old_rk,
               min(CASE WHEN e.stay THEN NULL WHEN e.rk > r.rk THEN e.rk ELSE r.rk END) AS new_rk
        FROM reach{{ round - 1 }} r
        JOIN id_merge_edges e ON e.cur_id = r.cur_id AND e.src = r.node AND (e.stay OR r.moved)
        GROUP BY r.cur_id, r.seed, e.dst
    ) relaxed
){{ "," if not loop.last }}
{% endfor %}
SELECT seed, node, rk FROM reach{{ merge_rounds }}
UNION ALL
SELECT s.node, e.dst, e.rk
FROM seeds s
JOIN id_merge_edges e ON e.cur_id = s.cur_id AND e.src = s.node
WHERE s.nodes = 2;

CREATE OR REPLACE TABLE {{ rs }}.profile_merges AS
WITH nodes AS (
    SELECT DISTINCT cur_id, prev_id, node, anchor, has_anchor FROM id_merge_nodes
),
sides AS (
    -- the merged profile's node and the survivor's: its old profile; for a new survivor, its
    -- anchor's node (failing that, every other old profile now in it)
    SELECT m.merged_profile_id, mn.node AS m_node, sn.node AS s_node
    FROM id_merge_pairs m
    JOIN nodes mn ON mn.cur_id = m.surviving_profile_id AND mn.prev_id = m.merged_profile_id
    JOIN nodes sn ON sn.cur_id = m.surviving_profile_id
                 AND CASE WHEN m.survivor_existed THEN sn.prev_id = m.surviving_profile_id
                          WHEN sn.has_anchor THEN sn.anchor
                          ELSE sn.prev_id <> m.merged_profile_id END
),
best AS (
    SELECT s.merged_profile_id, s.m_node, min(r.rk) AS rk
    FROM sides s
    JOIN id_merge_reach r ON r.seed = s.m_node AND r.node = s.s_node AND r.rk > 0
    GROUP BY s.merged_profile_id, s.m_node
),
joined AS (
    -- the completing link; its end on the survivor's side is the one the merged profile had not
    -- reached before it (the right end is a node of the search graph: never a new session)
    SELECT b.merged_profile_id, l.observed_at, l.reason,
           CASE WHEN l.right_node = b.m_node OR r.rk < b.rk THEN l.left_type
                ELSE l.right_type END AS identifier_type,
           CASE WHEN l.right_node = b.m_node OR r.rk < b.rk THEN l.left_value
                ELSE l.right_value END AS identifier_value
    FROM best b
    JOIN id_merge_links l ON l.rk = b.rk
    LEFT JOIN id_merge_reach r ON r.seed = b.m_node AND r.node = l.right_node
)
SELECT m.merged_profile_id, m.surviving_profile_id,
       coalesce(j.observed_at, TIMESTAMP '{{ interval_start }}') AS merged_at,
       coalesce(j.reason, 'regrouped') AS reason,
       coalesce(j.identifier_type, m.identifier_type) AS identifier_type,
       coalesce(j.identifier_value, m.identifier_value) AS identifier_value
FROM id_merge_pairs m
LEFT JOIN joined j ON j.merged_profile_id = m.merged_profile_id;

DROP TABLE id_merge_reach;
DROP TABLE id_merge_edges;
DROP TABLE id_merge_links;
DROP TABLE id_merge_nodes;
DROP TABLE id_merge_pairs;
