{% import "identity/_macros.sql" as m with context %}
-- Every link the rules reject as of the cutoff, one row per landing row behind it (the rules
-- decide per pair of identifiers; the rows are found again by their ids), with the rule, the
-- detail and the values.
CREATE OR REPLACE TEMP TABLE id_rejected{{ suffix }} AS
WITH rejected AS (
    SELECT kind, left_id, right_id, rule, detail
    FROM id_checked{{ suffix }}
    WHERE rule IS NOT NULL
{% if cuts %}
    UNION ALL
    SELECT p.kind, p.left_id, p.right_id, 'profile_limit', c.detail
    FROM id_checked{{ suffix }} p
    JOIN id_cuts{{ suffix }} c ON c.a = least(p.left_id, p.right_id) AND c.b = greatest(p.left_id, p.right_id)
    WHERE p.rule IS NULL
{% endif %}
)
{% for k in m.kinds %}
SELECT dt, r.rule, r.detail, '{{ k.left_type }}' AS left_type, {{ k.left }} AS left_value,
       '{{ k.right_type }}' AS right_type, {{ k.right }} AS right_value,
       {{ k.observed_at }} AS observed_at, '{{ k.source }}' AS source, _file AS file, _line AS line
FROM (
    SELECT *, {{ m.node_id(k.left_type, k.left) }} AS row_left_id,
           {{ m.node_id(k.right_type, k.right) }} AS row_right_id
    {{ m.rows(k) }}
) src
JOIN rejected r ON r.kind = {{ k.kind }} AND r.left_id = src.row_left_id AND r.right_id = src.row_right_id
{{ "UNION ALL" if not loop.last }}
{% endfor %};
{% if new_since %}

-- The accepted links this run added (see first_new_at in links.sql), for profile_merges.
CREATE OR REPLACE TEMP TABLE id_new_links{{ suffix }} AS
SELECT p.left_type, lv.node_value AS left_value, p.right_type, rv.node_value AS right_value,
       p.first_new_at AS observed_at, {{ m.of_kind("source", "p.kind") }} AS source
FROM id_checked{{ suffix }} p
JOIN id_labels{{ suffix }} lv ON lv.node_id = p.left_id
JOIN id_labels{{ suffix }} rv ON rv.node_id = p.right_id
LEFT JOIN id_cuts{{ suffix }} c ON c.a = least(p.left_id, p.right_id) AND c.b = greatest(p.left_id, p.right_id)
WHERE p.rule IS NULL AND c.a IS NULL AND p.first_new_at IS NOT NULL;
{% endif %}
