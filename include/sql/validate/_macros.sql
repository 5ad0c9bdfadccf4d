{#- Shared validation expressions. Each returns a reason naming the field and the rule it broke, or
    NULL when valid; never the value, as reasons reach quarantine drops and logs.

    The checks and conversions take values already trimmed: a validation selects from
    trimmed_rows(), which trims every column once. (Trimming inside every check cost about 1.4 s
    of 4.8 s per day at 10M interactions: bench/README.md.) -#}
{% import "privacy/_macros.sql" as p %}
{#- Surrounding white space is what Python's str.strip() removes (privacy's set: tabs, line
    breaks, no-break and other Unicode spaces), not spaces only as trim() would: a tab-only name
    would count as a value, and a no-break space pasted after an email would keep it from
    matching. -#}
{% macro trimmed(col) -%}
{{ p.trimmed_if_padded(col) }}
{%- endmacro %}
{#- The staged rows with every one of ``columns`` trimmed (same names), the landing metadata
    (_file, _line, _error, _raw) and each of ``as_entered`` untrimmed as <column>_as_entered. -#}
{% macro trimmed_rows(staged, columns, as_entered=[]) -%}
(SELECT _file, _line, _error, _raw,
        {% for c in as_entered %}{{ c }} AS {{ c }}_as_entered, {% endfor %}
        {% for c in columns %}{{ trimmed(c) }} AS {{ c }}{{ ", " if not loop.last }}{% endfor %}
 FROM {{ staged }})
{%- endmacro %}
{#- The partition's rows this validation replaces: all of them, except those of files a stream
    batch merged after the extract listed the partition (``streamed``: pipeline._streamed_files
    keeps them as the stream left them, so a file landed or replaced meanwhile is not lost).
    ``file_column``: quarantine names it ``file``. -#}
{% macro replaced(ds, file_column="_file") -%}
dt = DATE '{{ ds }}'{% if streamed | default(false) %} AND {{ file_column }} NOT IN (SELECT file FROM validate_streamed){% endif %}
{%- endmacro %}
{#- The staged rows this validation reads: without those of files kept as the stream merged them. -#}
{% macro staged_rows(staged) -%}
{% if streamed | default(false) %}(SELECT * FROM {{ staged }} WHERE _file NOT IN (SELECT file FROM validate_streamed)){% else %}{{ staged }}{% endif %}
{%- endmacro %}
{% macro required(col) -%}
CASE WHEN {{ col }} IS NULL OR {{ col }} = '' THEN '{{ col }}: missing' END
{%- endmacro %}
{% macro integer(col, required=true) -%}
CASE WHEN {{ col }} IS NULL OR {{ col }} = '' THEN {{ "'" ~ col ~ ": missing'" if required else "NULL" }}
     WHEN NOT regexp_like({{ col }}, '[0-9]{1,9}') THEN '{{ col }}: not a non-negative integer' END
{%- endmacro %}
{#- landed: the partition date; an event dated after it would enter that day's snapshot early. -#}
{% macro date(col, landed=none) -%}
CASE WHEN {{ col }} IS NULL OR {{ col }} = '' THEN '{{ col }}: missing'
     WHEN NOT regexp_like({{ col }}, '[0-9]{4}-[0-9]{2}-[0-9]{2}') OR try_to_date({{ col }}) IS NULL
     THEN '{{ col }}: not a YYYY-MM-DD date'
     WHEN {{ col }} < '{{ earliest }}' THEN '{{ col }}: before {{ earliest }}'
     WHEN {{ col }} = '{{ epoch }}' THEN '{{ col }}: the Unix epoch ({{ epoch }}), a clock not set'
{%- if landed %}
     WHEN try_to_date({{ col }}) > DATE '{{ landed }}' THEN '{{ col }}: later than its landing date'
{%- endif %} END
{%- endmacro %}
{#- ISO 8601 only (date, optional time, optional Z or +-HH:MM, +-HHMM or +-HH offset), so both
    engines accept the same values: their casts also take other forms (epoch numbers, zone names). -#}
{#- An offset is at most 14 hours (the world's widest) with minutes under 60: an engine applies any
    two digits it is given (+99:99 moved a time by four days). -#}
{#- Hours 00-23, minutes and seconds 00-59: DuckDB reads 24:00 as the next midnight, where
    Snowflake's times end at 23:59:59.999999999. -#}
{% set iso_timestamp = "[0-9]{4}-[0-9]{2}-[0-9]{2}([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.][0-9]{1,9})?)?(Z|[+-]((0[0-9]|1[0-3])(:?[0-5][0-9])?|14(:?00)?))?)?" %}
{#- Nothing of this platform happened before 1900; year 0 is 1 BC to the engines, and its text
    ('0001-01-01 (BC)') would reach the drops. A timestamp is compared as stored, in UTC:
    1900-01-01T00:30+01:00 is 1899. -#}
{% set earliest = "1900-01-01" %}
{#- The Unix epoch itself (1970-01-01 00:00:00 UTC, or that day as a date) is a clock never set or a
    zero a client sent for no value, not a moment: kept, it made first_seen 1970, and a consent
    statement stamped with it lost to every real one (an opt-out gone without a word). -#}
{% set epoch = "1970-01-01" %}
{#- The value as a naive UTC timestamp: an offset is applied; none means UTC already (both
    sessions run in UTC). An hour-only offset (+05, as PostgreSQL writes) is cast as +05:00:
    DuckDB reads both, Snowflake's documented AUTO formats give offsets with minutes. In a value
    the pattern accepts, a sign after the T (or space) with two digits at the end is such an
    offset. -#}
{% macro utc_timestamp(col) -%}
CAST(convert_timezone('UTC', try_cast(CASE WHEN regexp_like({{ col }}, '.*[T ].*[+-][0-9]{2}') THEN {{ col }} || ':00' ELSE {{ col }} END AS TIMESTAMPTZ)) AS TIMESTAMP)
{%- endmacro %}
{#- landed: the partition date. An observation may fall on the day after it (a UTC time late in
    the partition's local day), never later: identity orders identifiers by landing day first
    (identity/_macros.sql row_seen_key) and would let it re-key a profile it joins. -#}
{% macro timestamp(col, landed=none, refuse_epoch=true) -%}
CASE WHEN {{ col }} IS NULL OR {{ col }} = '' THEN '{{ col }}: missing'
     WHEN NOT regexp_like({{ col }}, '{{ iso_timestamp }}') OR {{ utc_timestamp(col) }} IS NULL
     THEN '{{ col }}: not an ISO timestamp'
     WHEN {{ utc_timestamp(col) }} < TIMESTAMP '{{ earliest }} 00:00:00'
     THEN '{{ col }}: before {{ earliest }}'
{%- if refuse_epoch %}
     WHEN {{ utc_timestamp(col) }} = TIMESTAMP '{{ epoch }} 00:00:00'
     THEN '{{ col }}: the Unix epoch ({{ epoch }} 00:00:00 UTC), a clock not set'
{%- endif %}
{%- if landed %}
     WHEN {{ utc_timestamp(col) }} >= TIMESTAMP '{{ landed | days_after(2) }} 00:00:00'
     THEN '{{ col }}: later than the day after its landing date'
{%- endif %} END
{%- endmacro %}
{% macro email(col) -%}
CASE WHEN {{ col }} IS NULL OR {{ col }} = '' THEN '{{ col }}: missing'
     WHEN NOT regexp_like(lower({{ col }}), {{ email_pattern | literal }}) THEN '{{ col }}: malformed email' END
{%- endmacro %}
{% macro yes_no(col) -%}
CASE WHEN {{ col }} IS NOT NULL AND {{ col }} <> ''
      AND lower({{ col }}) NOT IN ('yes', 'no', 'y', 'n', 'true', 'false', '1', '0')
     THEN '{{ col }}: expected Yes or No' END
{%- endmacro %}
{% macro to_bool(col) -%}
CASE WHEN lower({{ col }}) IN ('yes', 'y', 'true', '1') THEN TRUE
     WHEN lower({{ col }}) IN ('no', 'n', 'false', '0') THEN FALSE END
{%- endmacro %}
{#- PostgreSQL cannot store a NUL character in text: a `kind: sql` delivery of a row holding one
    failed on every retry, naming no row or field, and other readers of the exports stop at it.
    contains(): DuckDB's LIKE and strpos do not find a NUL. -#}
{% macro nul_free(col) -%}
CASE WHEN contains({{ col }}, chr(0)) THEN '{{ col }}: contains a NUL character' END
{%- endmacro %}
{#- A quarantined row's raw text, its NUL characters as U+FFFD: the row is kept for what it was,
    but a NUL in it failed a `kind: sql` delivery of the quarantine table on every retry. -#}
{% macro raw_text(col) -%}
replace({{ col }}, chr(0), chr(65533))
{%- endmacro %}
{#- All reasons of a row, '; '-separated; NULL when the row is valid. Portable: no concat_ws
    (Snowflake's returns NULL when any argument is NULL), and each reason is prefixed with the
    separator and the first one cut off with substr, rather than rtrim(.., '; '), which would also
    eat a reason's own trailing ';' or ' ' (and which fakesnow does not emulate).
    "_error" among the checks (the landing's flag for a row it could not read: a malformed CSV
    row, a line that is not a JSON object, a nested JSON value) is the whole reason when set: the
    fields of a row that could not be split are not missing, and it names its own fields.
    ``columns``: the row's text columns (those trimmed_rows read), each also checked by nul_free. -#}
{% macro reasons(checks, columns=[]) -%}
{%- set fields = checks | reject("equalto", "_error") | list -%}
{%- for c in columns %}{% set _ = fields.append(nul_free(c)) %}{% endfor -%}
{%- if "_error" in checks %}CASE WHEN _error IS NOT NULL THEN _error ELSE {% endif -%}
NULLIF(substr({% for c in fields %}coalesce('; ' || ({{ c }}), ''){{ " || " if not loop.last }}{% endfor %}, 3), '')
{%- if "_error" in checks %} END{% endif %}
{%- endmacro %}
