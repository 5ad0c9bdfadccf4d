-- Every link the rules reject as of the cutoff, with the rule and the values.
CREATE OR REPLACE TEMP TABLE id_rejected{{ suffix }} AS
SELECT r.dt, r.rule, r.detail, r.left_type, lv.node_value AS left_value, r.right_type,
       rv.node_value AS right_value, r.observed_at, r.source, r._file AS file, r._line AS line
FROM (
    SELECT dt, rule, detail, left_type, left_id, right_type, right_id, observed_at, source, _file, _line
    FROM id_checked{{ suffix }}
    WHERE rule IS NOT NULL
{% if cuts %}
    UNION ALL
    SELECT r.dt, 'profile_limit', c.detail, r.left_type, r.left_id, r.right_type, r.right_id,
           r.observed_at, r.source, r._file, r._line
    FROM id_checked{{ suffix }} r
    JOIN id_cuts{{ suffix }} c ON c.a = least(r.left_id, r.right_id) AND c.b = greatest(r.left_id, r.right_id)
    WHERE r.rule IS NULL
{% endif %}
) r
JOIN id_values{{ suffix }} lv ON lv.node_id = r.left_id
JOIN id_values{{ suffix }} rv ON rv.node_id = r.right_id;
{% if new_since %}

-- The accepted links this run added (landed in its partition or observed in its interval):
-- what profile_merges looks at to say how profiles merged.
CREATE OR REPLACE TEMP TABLE id_new_links{{ suffix }} AS
SELECT r.left_type, lv.node_value AS left_value, r.right_type, rv.node_value AS right_value,
       r.observed_at, r.source, r.file, r.line
FROM (
    SELECT r.left_type, r.left_id, r.right_type, r.right_id, r.observed_at, r.source,
           r._file AS file, r._line AS line
    FROM id_checked{{ suffix }} r
    LEFT JOIN id_cuts{{ suffix }} c ON c.a = least(r.left_id, r.right_id) AND c.b = greatest(r.left_id, r.right_id)
    WHERE r.rule IS NULL AND c.a IS NULL
      AND (r.dt = DATE '{{ new_since.ds }}' OR r.observed_at >= TIMESTAMP '{{ new_since.interval_start }}')
) r
JOIN id_values{{ suffix }} lv ON lv.node_id = r.left_id
JOIN id_values{{ suffix }} rv ON rv.node_id = r.right_id;
{% endif %}
