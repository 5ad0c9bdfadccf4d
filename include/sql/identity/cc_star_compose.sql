-- After the star round and the value rounds: every session takes the final label of the value it
-- hooked to, so the map holds every session (labels.sql counts on it) and labels are the
-- smallest email or external_id node id of each component.
CREATE OR REPLACE TEMP TABLE id_cc_map{{ suffix }}_all AS
SELECT s.node, coalesce(m.parent, s.parent) AS parent
FROM id_cc_star{{ suffix }} s
LEFT JOIN id_cc_map{{ suffix }} m ON m.node = s.parent
UNION ALL
SELECT node, parent FROM id_cc_map{{ suffix }};
DROP TABLE id_cc_star{{ suffix }};
DROP TABLE id_cc_map{{ suffix }};
ALTER TABLE id_cc_map{{ suffix }}_all RENAME TO id_cc_map{{ suffix }};
