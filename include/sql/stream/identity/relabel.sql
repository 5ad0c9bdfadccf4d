CREATE OR REPLACE TABLE {{ rs }}.id_labels_next{{ suffix }} AS
SELECT l.node_id, p.parent AS label
FROM {{ rs }}.id_labels{{ suffix }} l
JOIN {{ rs }}.id_parent{{ suffix }} p ON p.label = l.label;
DROP TABLE {{ rs }}.id_labels{{ suffix }};
ALTER TABLE {{ rs }}.id_labels_next{{ suffix }} RENAME TO id_labels{{ suffix }};
