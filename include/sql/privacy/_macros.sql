{#- The SQL twin of audience_profiles.privacy: normalise and hash identifiers exactly as Python does
    (trim the characters str.isspace() accepts, lower-case with Unicode's simple case mapping,
    SHA-256 hex; blank is NULL). tests/privacy/test_hashing.py holds both sides to the same hashes. -#}
{#- Why a request for a value identity.yml blocks is invalid (requests.sql, unlist_placeholders.sql). -#}
{%- set names_no_one = "identifier_value: names no one (identity.yml blocks it)" -%}
{%- set whitespace = [9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 133, 160, 5760, 8192, 8193, 8194, 8195,
                      8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288] -%}
{% macro trimmed(expr) -%}
trim({{ expr }}, {% for c in whitespace %}chr({{ c }}){{ " || " if not loop.last }}{% endfor %})
{%- endmacro %}
{#- trimmed, skipped for a value that neither starts nor ends with white space: nearly every value,
    and DuckDB's trim with a character set is 3x slower than plain trim. unicode(), not ascii():
    Snowflake documents a code point for a non-ASCII first character only for unicode(). -#}
{% macro trimmed_if_padded(expr) -%}
CASE WHEN unicode({{ expr }}) IN ({{ whitespace | join(", ") }}) OR unicode(right({{ expr }}, 1)) IN ({{ whitespace | join(", ") }})
     THEN {{ trimmed(expr) }} ELSE {{ expr }} END
{%- endmacro %}
{% macro normalised(expr) -%}
NULLIF(lower({{ trimmed(expr) }}), '')
{%- endmacro %}
{% macro hashed(expr) -%}
sha2({{ normalised(expr) }}, 256)
{%- endmacro %}
{#- An identifier as identity compares it (docs/identity.md, "The graph"): an email normalised
    (trimmed, lower-cased), a session or SSO id only trimmed, case and all. `type` is SQL: a
    column, or a quoted type. Its hash is a list entry's exact_hash; `hashed` (every type
    lower-cased) stays the join key, so entries listed before exact_hash (NULL) still match. -#}
{% macro as_identifier(type, expr) -%}
CASE WHEN {{ type }} = 'email' THEN {{ normalised(expr) }} ELSE NULLIF({{ trimmed(expr) }}, '') END
{%- endmacro %}
{% macro exact_hashed(type, expr) -%}
sha2({{ as_identifier(type, expr) }}, 256)
{%- endmacro %}
{#- Whether the suppression_list or erasure_requests row `entry`, already joined on `hashed`, is
    for `value` (of `type`) as identity compares it: `SSO-1` and `sso-1` are two SSO accounts, and
    erasing one must not take the other. An entry from before exact_hash matches either. -#}
{% macro exactly(entry, type, value) -%}
{{ exact_match(entry, exact_hashed(type, value)) }}
{%- endmacro %}
{#- The same, given the value's exact hash (a column computed once). -#}
{% macro exact_match(entry, exact_hash) -%}
({{ entry }}.exact_hash IS NULL OR {{ entry }}.exact_hash = {{ exact_hash }})
{%- endmacro %}
{#- Whether `value` (of `type`, SQL) is on the suppression list, narrowed by `where` (" AND kind
    = 'delete'"): a plain IN on each hash, which engines run as a semi-join. -#}
{% macro on_list(type, value, where="") -%}
({{ type }} || ':' || {{ hashed(value) }} IN (SELECT identifier_type || ':' || identifier_hash FROM suppression_list WHERE exact_hash IS NULL{{ where }})
 OR {{ type }} || ':' || {{ exact_hashed(type, value) }} IN (SELECT identifier_type || ':' || exact_hash FROM suppression_list WHERE exact_hash IS NOT NULL{{ where }}))
{%- endmacro %}
{#- The same for a word of a quarantined line, of no known type: an email whatever its case, a
    session or SSO id exactly. -#}
{% macro token_on_list(token, where="") -%}
({{ hashed(token) }} IN (SELECT identifier_hash FROM suppression_list WHERE (exact_hash IS NULL OR identifier_type = 'email'){{ where }})
 OR {{ exact_hashed("''", token) }} IN (SELECT exact_hash FROM suppression_list WHERE identifier_type <> 'email' AND exact_hash IS NOT NULL{{ where }}))
{%- endmacro %}
{#- Word-like tokens of a raw text line (CSV fields, JSON strings), for finding identifiers in
    quarantine rows; yields (key columns..., token). `source` is a table, or a table and its WHERE
    clause; `engine` is the warehouse engine, duckdb or snowflake (an imported macro does not
    see the template's context). Every white space character separates words, so a value padded
    with a no-break space in a quarantined line is still found. Each word holding a backslash is
    also read as a JSON string's content and cut again: a JSON writer escapes an identifier's
    non-ASCII characters (`"jos\u00e9@x.io"`) and its white space padding (`"a@b.io\u00a0"`),
    and a word with the escapes in it names nobody; a word that does not decode is only itself.
    No backslashes: Snowflake string literals treat them as escapes. The Python twin is
    destinations/drop_erasure.raw_words. -#}
{% macro tokens(columns, source, engine) -%}
{%- set word -%}'[^' || {% for c in whitespace %}chr({{ c }}) || {% endfor %}',;"{}]+'{%- endset -%}
{%- if engine == "snowflake" -%}
SELECT {{ columns }}, CAST(f.value AS VARCHAR) AS token
FROM (SELECT * FROM {{ source }}) tokenised,
     LATERAL FLATTEN(input => REGEXP_SUBSTR_ALL(tokenised.raw, {{ word }})) f
UNION ALL
{#- `:w` reads the JSON string's value: fakesnow casts a whole string variant with its quotes #}
SELECT {{ columns }}, CAST(d.value AS VARCHAR) AS token
FROM (SELECT * FROM {{ source }}) tokenised,
     LATERAL FLATTEN(input => REGEXP_SUBSTR_ALL(tokenised.raw, {{ word }})) f,
     LATERAL FLATTEN(input => REGEXP_SUBSTR_ALL(CAST(
         TRY_PARSE_JSON('{"w": "' || CAST(f.value AS VARCHAR) || '"}'):w AS VARCHAR), {{ word }})) d
WHERE CONTAINS(CAST(f.value AS VARCHAR), chr(92))
{%- else -%}
SELECT {{ columns }}, token FROM (
    SELECT {{ columns }}, unnest(list_concat(words, flatten(list_transform(
        list_filter(words, lambda w: contains(w, chr(92))),
        lambda w: coalesce(regexp_extract_all(
            json_extract_string(TRY_CAST('"' || w || '"' AS JSON), '$'), {{ word }}), []))))) AS token
    FROM (SELECT *, regexp_extract_all(raw, {{ word }}) AS words FROM {{ source }}) cut
) tokenised
{%- endif -%}
{%- endmacro %}
{#- Count the rows `where` selects into temp table `report`, keep a copy of them in
    restricted_<table> unless a match asks for deletion (`erase_where`), then take them out of
    <table>. EXCEPT keeps a re-run from restricting the same row twice. -#}
{% macro restrict_or_delete(table, where, erase_where, report) -%}
INSERT INTO {{ report }} SELECT '{{ table }}', count(*) FROM {{ table }} WHERE {{ where }};
INSERT INTO restricted_{{ table }}
SELECT * FROM {{ table }} WHERE ({{ where }}) AND NOT coalesce(({{ erase_where }}), false)
EXCEPT
SELECT * FROM restricted_{{ table }};
DELETE FROM {{ table }} WHERE {{ where }};
{%- endmacro %}
{#- The same for a derived table (rebuilt from its source, so nothing is kept). -#}
{% macro delete_counted(table, where, report) -%}
INSERT INTO {{ report }} SELECT '{{ table }}', count(*) FROM {{ table }} WHERE {{ where }};
DELETE FROM {{ table }} WHERE {{ where }};
{%- endmacro %}
{#- `column` holds a value of `identifier_type` listed in `values` (identifier_type, value, erase);
    with erase_only, a value some request asks to delete. -#}
{% macro listed(column, identifier_type, values, erase_only=false) -%}
{{ column }} IN (SELECT value FROM {{ values }} WHERE identifier_type = '{{ identifier_type }}'{{ " AND erase" if erase_only }})
{%- endmacro %}
