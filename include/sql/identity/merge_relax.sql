-- One round of the merge search (merge_search.sql): Bellman-Ford on the bottleneck, so after
-- round k every best path of up to k edges is known. A node keeps its rank through its self-loop
-- ("stay"); only nodes whose rank improved in the last round relax their edges. identity.py
-- loops until a round improves nothing.
CREATE OR REPLACE TEMP TABLE id_merge_next AS
SELECT cur_id, seed, node,
       CASE WHEN new_rk < old_rk OR old_rk IS NULL THEN new_rk ELSE old_rk END AS rk,
       coalesce(new_rk < old_rk OR old_rk IS NULL, FALSE) AS moved
FROM (
    SELECT r.cur_id, r.seed, e.dst AS node,
           min(CASE WHEN e.stay THEN r.rk END) AS old_rk,
           min(CASE WHEN e.stay THEN NULL WHEN e.rk > r.rk THEN e.rk ELSE r.rk END) AS new_rk
    FROM id_merge_reach r
    JOIN id_merge_edges e ON e.cur_id = r.cur_id AND e.src = r.node AND (e.stay OR r.moved)
    GROUP BY r.cur_id, r.seed, e.dst
) relaxed;
DROP TABLE id_merge_reach;
ALTER TABLE id_merge_next RENAME TO id_merge_reach;
