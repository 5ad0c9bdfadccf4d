-- Star round, before the general rounds (cc_hook.sql) when the edges say which end is a session
-- (session_node). Sessions link only to emails and external_ids, never to each other, so every
-- session hooked to its smallest neighbour makes stars of depth one: no pointer jumping, and the
-- general rounds run on the values alone, a graph a third the size (at 5M links: 1.6M value
-- edges of 4.7M; the components took 2.0-2.2 s with the star round, 3.5-4.1 s without).
CREATE OR REPLACE TEMP TABLE id_cc_star{{ suffix }} AS
SELECT session_node AS node, min(CASE WHEN a = session_node THEN b ELSE a END) AS parent,
       count(*) AS links
FROM id_edges{{ suffix }}
WHERE session_node IS NOT NULL
GROUP BY session_node;
-- The values' graph: the links between values (external_id--email) and, for every session with
-- several values, its other values joined to its smallest.
CREATE OR REPLACE TEMP TABLE id_cc_edges{{ suffix }}_0 AS
SELECT a, b FROM id_edges{{ suffix }} WHERE session_node IS NULL
UNION ALL
SELECT least(s.parent, e.other) AS a, greatest(s.parent, e.other) AS b
FROM (
    SELECT session_node, CASE WHEN a = session_node THEN b ELSE a END AS other
    FROM id_edges{{ suffix }}
    WHERE session_node IS NOT NULL
) e
JOIN (SELECT node, parent FROM id_cc_star{{ suffix }} WHERE links > 1) s ON s.node = e.session_node
WHERE e.other <> s.parent;
