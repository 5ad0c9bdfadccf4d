-- Profile limit for {{ type }}: components holding more than one {{ type }} are split. Every
-- {{ type }} seeds its own part; the parts then grow one link at a time (limit_grow).
CREATE OR REPLACE TEMP TABLE id_lim_nodes{{ suffix }} AS
SELECT node_id, label, node_type, node_type || ':' || node_value AS node
FROM id_labels{{ suffix }}
WHERE label IN (
    SELECT label FROM id_labels{{ suffix }}
    WHERE node_type = '{{ type }}'
    GROUP BY label
    HAVING count(*) > 1
);

-- The accepted links inside those components, once per pair and from each end.
CREATE OR REPLACE TEMP TABLE id_lim_edges{{ suffix }} AS
WITH pairs AS (
    SELECT e.a, e.b, min(e.link_rank) AS link_rank, max(e.last_at) AS last_at
    FROM id_edges{{ suffix }} e
    JOIN id_lim_nodes{{ suffix }} n ON n.node_id = e.a
    GROUP BY e.a, e.b
)
SELECT a AS node_id, b AS other_id, link_rank, last_at FROM pairs
UNION ALL
SELECT b, a, link_rank, last_at FROM pairs;

CREATE OR REPLACE TEMP TABLE id_lim_part{{ suffix }} AS
SELECT node_id, node_id AS seed, node AS seed_node, 0 AS distance
FROM id_lim_nodes{{ suffix }}
WHERE node_type = '{{ type }}';
