-- One step of growth: every identifier not yet placed that is linked to one placed in the last
-- step joins a part. It joins the nearest {{ type }} (fewest links); among equally near ones,
-- the one its best link leads to: higher-priority link type first, then the most recent link,
-- then the {{ type }} value (so the result never depends on row order).
INSERT INTO id_lim_part{{ suffix }}
SELECT node_id, seed, seed_node, {{ distance }}
FROM (
    SELECT e.other_id AS node_id, p.seed, p.seed_node,
           row_number() OVER (PARTITION BY e.other_id
                              ORDER BY e.link_rank, e.last_at DESC, p.seed_node) AS choice
    FROM id_lim_edges{{ suffix }} e
    JOIN id_lim_part{{ suffix }} p ON p.node_id = e.node_id AND p.distance = {{ distance - 1 }}
    WHERE e.other_id NOT IN (SELECT node_id FROM id_lim_part{{ suffix }})
) candidates
WHERE choice = 1;
