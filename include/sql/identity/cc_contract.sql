-- Contraction: every tree becomes its root; edges inside a tree vanish, the others connect
-- roots. The next round runs on this smaller graph, and an empty one means done.
CREATE OR REPLACE TEMP TABLE id_cc_edges{{ suffix }}_{{ round + 1 }} AS
SELECT DISTINCT least(ra, rb) AS a, greatest(ra, rb) AS b
FROM (
    SELECT coalesce(pa.parent, e.a) AS ra, pb.parent AS rb
    FROM {{ edges }} e
    JOIN id_cc_parent{{ suffix }}_{{ round }} pb ON pb.node = e.b
    LEFT JOIN id_cc_parent{{ suffix }}_{{ round }} pa ON pa.node = e.a
) roots
WHERE ra <> rb;
{% if drop_edges %}
DROP TABLE {{ edges }};
{% endif %}
