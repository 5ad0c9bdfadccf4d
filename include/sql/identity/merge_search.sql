{% import "identity/_macros.sql" as m with context %}
-- The search behind profile_merges.sql (whose header says what the rows mean). Only the current
-- profiles that took a merge are searched. Their graph: one node per previous profile, one per
-- new identifier; a new session (never linked to another session) is replaced by direct edges
-- between its neighbours, a new identifier with a single neighbour is dropped (it lies on no
-- path between two profiles; a new survivor's anchor is kept). Links are ranked in the reporting
-- order and an edge carries its link's rank, so "first connected" is a bottleneck (minimax)
-- path. It is found by relaxation rounds in plain SQL (merge_relax.sql), looped from Python
-- (identity.record_merges) until a round improves nothing: one round per edge of the longest
-- best path, however long the chain of profiles joined in one day.
--
-- This file builds the search graph (id_merge_* scratch tables) and its state at round 0.
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
    -- M's anchor, the identifier its id derives from (profile_identifiers.sql); failing that
    -- (ids made another way), its earliest email or external_id, a session last: a session can
    -- be seen long before it joins anyone, and go to another person when the profile splits
    QUALIFY row_number() OVER (
                PARTITION BY p.profile_id
                ORDER BY CASE WHEN {{ m.anchored_id("p.identifier_type", "p.identifier_value") }}
                                   = p.profile_id THEN 0
                              WHEN p.identifier_type = 'session_id' THEN 2 ELSE 1 END,
                         p.first_seen, p.identifier_type, p.identifier_value) = 1
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
                    = {{ m.anchored_id("c.identifier_type", "c.identifier_value") }},
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

-- The merged profiles' nodes where the search starts, in searches larger than one edge (with two
-- nodes the edge is the path: profile_merges.sql reads it directly).
CREATE OR REPLACE TEMP TABLE id_merge_seeds AS
WITH sizes AS (
    SELECT cur_id, count(*) AS nodes FROM id_merge_edges WHERE stay GROUP BY cur_id
)
SELECT DISTINCT n.cur_id, n.node, z.nodes
FROM id_merge_pairs m
JOIN id_merge_nodes n ON n.prev_id = m.merged_profile_id AND n.cur_id = m.surviving_profile_id
JOIN sizes z ON z.cur_id = n.cur_id;

-- The search state: the best path's rank from each seed to every node it reaches so far (0: the
-- seed itself); "moved" marks ranks the last round improved, whose edges the next round relaxes.
CREATE OR REPLACE TEMP TABLE id_merge_reach AS
SELECT cur_id, node AS seed, node, 0 AS rk, TRUE AS moved FROM id_merge_seeds WHERE nodes > 2;
