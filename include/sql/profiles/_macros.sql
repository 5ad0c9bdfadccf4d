{#- The order of a profile's answers, as text (the answers column on Snowflake, the answer
    segment on both engines; DuckDB's answers column packs the same order into an integer):
    interaction date, landing date, file, line. The fields are joined by chr(1), below any
    character of a file name, so that "a.json" sorts before "a.jsonl" as it does field by field.
    Rows of another loader have no file: '' puts them before the partition's files; with no line
    either, their option orders them, so no row order or engine decides. -#}
{% macro answer_order_key(t) -%}
CAST({{ t }}.date AS VARCHAR) || chr(1) || CAST({{ t }}.dt AS VARCHAR) || chr(1) || coalesce({{ t }}._file, '') || chr(1) || lpad(CAST(coalesce({{ t }}._line, {{ t }}.option) AS VARCHAR), 12, '0')
{%- endmacro %}
