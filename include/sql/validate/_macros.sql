{#- Shared validation expressions. Each returns a reason naming the field and the rule it broke, or
    NULL when valid; never the value, as reasons reach quarantine drops and logs. -#}
{% macro required(col) -%}
CASE WHEN {{ col }} IS NULL OR trim({{ col }}) = '' THEN '{{ col }}: missing' END
{%- endmacro %}
{% macro integer(col, required=true) -%}
CASE WHEN {{ col }} IS NULL OR trim({{ col }}) = '' THEN {{ "'" ~ col ~ ": missing'" if required else "NULL" }}
     WHEN NOT regexp_like(trim({{ col }}), '[0-9]{1,9}') THEN '{{ col }}: not a non-negative integer' END
{%- endmacro %}
{% macro date(col) -%}
CASE WHEN {{ col }} IS NULL OR trim({{ col }}) = '' THEN '{{ col }}: missing'
     WHEN NOT regexp_like(trim({{ col }}), '[0-9]{4}-[0-9]{2}-[0-9]{2}') OR try_to_date(trim({{ col }})) IS NULL
     THEN '{{ col }}: not a YYYY-MM-DD date' END
{%- endmacro %}
{% macro timestamp(col) -%}
CASE WHEN {{ col }} IS NULL OR trim({{ col }}) = '' THEN '{{ col }}: missing'
     WHEN try_cast(trim({{ col }}) AS TIMESTAMP) IS NULL THEN '{{ col }}: not an ISO timestamp' END
{%- endmacro %}
{% macro email(col, required=true) -%}
CASE WHEN {{ col }} IS NULL OR trim({{ col }}) = '' THEN {{ "'" ~ col ~ ": missing'" if required else "NULL" }}
     WHEN NOT regexp_like(lower(trim({{ col }})), {{ email_pattern | literal }}) THEN '{{ col }}: malformed email' END
{%- endmacro %}
{% macro yes_no(col) -%}
CASE WHEN {{ col }} IS NOT NULL AND trim({{ col }}) <> ''
      AND lower(trim({{ col }})) NOT IN ('yes', 'no', 'y', 'n', 'true', 'false', '1', '0')
     THEN '{{ col }}: expected Yes or No' END
{%- endmacro %}
{% macro to_bool(col) -%}
CASE WHEN lower(trim({{ col }})) IN ('yes', 'y', 'true', '1') THEN TRUE
     WHEN lower(trim({{ col }})) IN ('no', 'n', 'false', '0') THEN FALSE END
{%- endmacro %}
{#- All reasons of a row, '; '-separated; NULL when the row is valid. Portable: no concat_ws
    (Snowflake's returns NULL when any argument is NULL), and each reason is prefixed with the
    separator and the first one cut off with substr, rather than rtrim(.., '; '), which would also
    eat a reason's own trailing ';' or ' ' (and which fakesnow does not emulate). -#}
{% macro reasons(checks) -%}
NULLIF(substr({% for c in checks %}coalesce('; ' || ({{ c }}), ''){{ " || " if not loop.last }}{% endfor %}, 3), '')
{%- endmacro %}
