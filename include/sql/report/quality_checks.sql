-- Every write-audit-publish check of a run with its failing row count, kept so the run report
-- (and anyone querying the warehouse) can say which check stopped a run. A check over no rows
-- may count NULL failures: stored as NULL, read as a pass like check_quality does.
{%- macro num(value) %}{{ 'NULL' if value is none else value }}{% endmacro %}
DELETE FROM quality_checks WHERE dt = DATE '{{ ds }}' AND run_id = {{ run_id | literal }};
{% if results %}
INSERT INTO quality_checks VALUES
{%- for name, failures in results %}
    (DATE '{{ ds }}', {{ run_id | literal }}, {{ name | literal }}, {{ num(failures) }}, CAST(current_timestamp AS TIMESTAMP)){{ "," if not loop.last else ";" }}
{%- endfor %}
{% endif %}
