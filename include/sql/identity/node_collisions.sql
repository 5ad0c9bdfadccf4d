-- Node ids shared by two different identifiers (a 64-bit hash collision: practically never).
SELECT count(*) - count(DISTINCT node_id) FROM id_values{{ suffix }}
