-- Free the snapshot's scratch tables (TEMP tables would otherwise live until the session ends).
DROP VIEW IF EXISTS id_checked{{ suffix }};
{% for table in ["id_pairs", "id_values", "id_bad", "id_shared", "id_session_over", "id_edges", "id_cuts", "id_cc_map", "id_labels"] + extra %}
DROP TABLE IF EXISTS {{ table }}{{ suffix }};
{% endfor %}
