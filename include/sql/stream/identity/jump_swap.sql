DROP TABLE {{ rs }}.id_parent{{ suffix }};
ALTER TABLE {{ rs }}.id_parent_next{{ suffix }} RENAME TO id_parent{{ suffix }};
