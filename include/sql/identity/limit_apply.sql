-- Cut every link between two parts; each part becomes a component of its own, labelled by its
-- seed (a node of that component, so labels stay unique).
CREATE OR REPLACE TEMP TABLE id_lim_cut{{ suffix }} AS
SELECT e.node_id AS a, e.other_id AS b, pa.seed_node AS a_seed, pb.seed_node AS b_seed
FROM id_lim_edges{{ suffix }} e
JOIN id_lim_part{{ suffix }} pa ON pa.node_id = e.node_id
JOIN id_lim_part{{ suffix }} pb ON pb.node_id = e.other_id
WHERE pa.seed <> pb.seed AND e.node_id < e.other_id;

DELETE FROM id_edges{{ suffix }} USING id_lim_cut{{ suffix }} c
WHERE id_edges{{ suffix }}.a = c.a AND id_edges{{ suffix }}.b = c.b;

UPDATE id_labels{{ suffix }} SET label = p.seed
FROM id_lim_part{{ suffix }} p
WHERE id_labels{{ suffix }}.node_id = p.node_id;

INSERT INTO id_cuts{{ suffix }}
-- the two values in order, not in node-id (hash) order, so the text does not depend on the salt
SELECT a, b, 'profile holds at most one {{ type }}: would join ' || least(a_seed, b_seed)
             || ' and ' || greatest(a_seed, b_seed)
FROM id_lim_cut{{ suffix }};

DROP TABLE id_lim_nodes{{ suffix }};
DROP TABLE id_lim_edges{{ suffix }};
DROP TABLE id_lim_part{{ suffix }};
DROP TABLE id_lim_cut{{ suffix }};
