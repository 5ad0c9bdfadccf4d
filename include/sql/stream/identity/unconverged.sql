-- Edges whose ends still carry different labels: zero means every component is one label.
SELECT count(*) FROM {{ rs }}.id_edges{{ suffix }} e
JOIN {{ rs }}.id_labels{{ suffix }} la ON la.node_id = e.a
JOIN {{ rs }}.id_labels{{ suffix }} lb ON lb.node_id = e.b
WHERE la.label <> lb.label
