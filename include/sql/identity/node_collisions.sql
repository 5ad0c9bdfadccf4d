-- Node ids shared by two different identifiers (a 64-bit hash collision: practically never).
SELECT count(*) FROM id_values{{ suffix }} WHERE collision
