-- Pointer jumping: every label skips to its grandparent; a chain of depth d is flat after
-- log2(d) jumps.
CREATE OR REPLACE TABLE {{ rs }}.id_parent_next{{ suffix }} AS
SELECT p.label, g.parent
FROM {{ rs }}.id_parent{{ suffix }} p
JOIN {{ rs }}.id_parent{{ suffix }} g ON g.label = p.parent;
