-- Merges this run made: a profile of the previous snapshot (as of the interval start) whose id is
-- no longer live while its identifiers are. One row per merged-away id M, naming
-- - the survivor S: the live profile now holding M's anchor (the identifier M's id derived
--   from; merge_search.sql says what stands in should none match);
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
--   device, say): reason 'regrouped', merged_at the interval start, M's anchor.
-- - If S did not exist in the previous snapshot (a new id: its anchor changed), S's side is the
--   anchor, the identifier S's id derives from (or that identifier's previous profile): the row
--   tells when and through which link M reached the identifier that now names it. Should no
--   identifier match the id (profile_identifiers.sql changed how ids are made), S's side is
--   every other previous profile now in S. M's own identifier as the anchor gives 'regrouped'.
--
-- Written from the finished search (merge_search.sql, then merge_relax.sql's rounds).
CREATE OR REPLACE TABLE {{ rs }}.profile_merges AS
WITH reach AS (
    -- larger searches from the rounds; in one of two nodes the edge is the path
    SELECT seed, node, rk FROM id_merge_reach
    UNION ALL
    SELECT s.node, e.dst, e.rk
    FROM id_merge_seeds s
    JOIN id_merge_edges e ON e.cur_id = s.cur_id AND e.src = s.node
    WHERE s.nodes = 2
),
nodes AS (
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
    JOIN reach r ON r.seed = s.m_node AND r.node = s.s_node AND r.rk > 0
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
    LEFT JOIN reach r ON r.seed = b.m_node AND r.node = l.right_node
)
SELECT m.merged_profile_id, m.surviving_profile_id,
       coalesce(j.observed_at, TIMESTAMP '{{ interval_start }}') AS merged_at,
       coalesce(j.reason, 'regrouped') AS reason,
       coalesce(j.identifier_type, m.identifier_type) AS identifier_type,
       coalesce(j.identifier_value, m.identifier_value) AS identifier_value
FROM id_merge_pairs m
LEFT JOIN joined j ON j.merged_profile_id = m.merged_profile_id;

DROP TABLE id_merge_reach;
DROP TABLE id_merge_seeds;
DROP TABLE id_merge_edges;
DROP TABLE id_merge_links;
DROP TABLE id_merge_nodes;
DROP TABLE id_merge_pairs;
