-- Hooking: every label points at the smallest label it touches through an edge (or itself).
-- Parents are always smaller, so the parent pointers form a forest, never a cycle.
CREATE OR REPLACE TABLE {{ rs }}.id_parent{{ suffix }} AS
SELECT l.label, least(l.label, coalesce(min(lb.label), l.label)) AS parent
FROM (SELECT DISTINCT label FROM {{ rs }}.id_labels{{ suffix }}) l
LEFT JOIN {{ rs }}.id_labels{{ suffix }} la ON la.label = l.label
LEFT JOIN {{ rs }}.id_edges{{ suffix }} e ON e.a = la.node_id
LEFT JOIN {{ rs }}.id_labels{{ suffix }} lb ON lb.node_id = e.b
GROUP BY l.label;
