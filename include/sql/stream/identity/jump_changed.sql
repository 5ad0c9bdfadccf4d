SELECT count(*) FROM {{ rs }}.id_parent_next{{ suffix }} n
JOIN {{ rs }}.id_parent{{ suffix }} p ON p.label = n.label
WHERE n.parent <> p.parent
