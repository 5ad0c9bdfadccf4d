-- Pointer jumping: every node skips to its grandparent, so a chain of depth d is flat after
-- ceil(log2(d)) jumps. "moved" marks nodes that did skip: none means the forest was flat.
CREATE OR REPLACE TEMP TABLE id_cc_jump{{ suffix }} AS
SELECT p.node, coalesce(g.parent, p.parent) AS parent, g.parent IS NOT NULL AS moved
FROM id_cc_parent{{ suffix }}_{{ round }} p
LEFT JOIN id_cc_parent{{ suffix }}_{{ round }} g ON g.node = p.parent;
DROP TABLE id_cc_parent{{ suffix }}_{{ round }};
ALTER TABLE id_cc_jump{{ suffix }} RENAME TO id_cc_parent{{ suffix }}_{{ round }};
