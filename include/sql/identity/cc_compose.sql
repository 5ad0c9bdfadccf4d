-- Labels, from the last round back to the first: a node hooked in this round takes the final
-- label of its root (the root was a node of the later rounds), or the root itself.
{% if last %}
ALTER TABLE id_cc_parent{{ suffix }}_{{ round }} RENAME TO id_cc_map{{ suffix }}_{{ round }};
{% else %}
CREATE OR REPLACE TEMP TABLE id_cc_map{{ suffix }}_{{ round }} AS
SELECT p.node, coalesce(m.parent, p.parent) AS parent
FROM id_cc_parent{{ suffix }}_{{ round }} p
LEFT JOIN id_cc_map{{ suffix }}_{{ round + 1 }} m ON m.node = p.parent
UNION ALL
SELECT node, parent FROM id_cc_map{{ suffix }}_{{ round + 1 }};
DROP TABLE id_cc_parent{{ suffix }}_{{ round }};
DROP TABLE id_cc_map{{ suffix }}_{{ round + 1 }};
{% endif %}
{% if round == 0 %}
DROP TABLE IF EXISTS id_cc_map{{ suffix }};
ALTER TABLE id_cc_map{{ suffix }}_0 RENAME TO id_cc_map{{ suffix }};
{% endif %}
