{#- Shared pieces of the identity SQL.

    The three kinds of identity link and the rows they come from. A row counts as of the cutoff
    only if it landed in a partition up to cutoff_dt AND was observed before cutoff_ts
    (point-in-time: the snapshot as of a date never changes once that date is over).

    Identifiers get 64-bit ids from hash(type, value, salt): links carry integers only. The
    caller checks for collisions and re-runs with another salt if one ever occurs.
-#}
{% set kinds = [
  {"kind": 1, "source": "form_entries", "relation": "form_entries", "observed_at": "entry_datetime",
   "left_type": "session_id", "left": "session_id", "right_type": "email", "right": "email"},
  {"kind": 2, "source": "identities", "relation": "identities", "observed_at": "observed_at",
   "left_type": "session_id", "left": "session_id", "right_type": "external_id", "right": "external_id"},
  {"kind": 3, "source": "identities", "relation": "identities", "observed_at": "observed_at",
   "left_type": "external_id", "left": "external_id", "right_type": "email", "right": "email",
   "where": "email IS NOT NULL"},
] %}
{% macro node_id(type, value, literal=true) -%}
hash({{ "'" ~ type ~ "'" if literal else type }}, {{ value }}, {{ salt }})
{%- endmacro %}
{% macro rows(k) -%}
FROM {{ k.relation }}
WHERE dt <= DATE '{{ cutoff_dt }}' AND {{ k.observed_at }} < TIMESTAMP '{{ cutoff_ts }}'{% if "where" in k %} AND {{ k.where }}{% endif %}
{%- endmacro %}
{#- A property of a link's kind (left_type, right_type, source) as a SQL expression. -#}
{% macro of_kind(property, column="kind") -%}
CASE {{ column }}{% for k in kinds %} WHEN {{ k.kind }} THEN '{{ k[property] }}'{% endfor %} END
{%- endmacro %}
{#- The kinds linking a session to a value of this type, as a SQL list. -#}
{% macro session_kinds(type) -%}
({{ kinds | selectattr("left_type", "equalto", "session_id") | selectattr("right_type", "equalto", type) | map(attribute="kind") | join(", ") or "NULL" }})
{%- endmacro %}
{#- When a row was seen, as one number: its landing day, then its observation to the second.
    min() over an identifier's rows gives the earliest landing day's earliest observation. The
    seconds are held to 1970-2286 (0 .. 1e10 - 1): unclamped, an observation before about 1705 (a
    0001-01-01 placeholder, which validation accepts) borrowed days from its landing day and
    re-keyed profiles first seen days earlier. Earlier ones tie within their landing day. -#}
{% macro row_seen_key(dt, observed_at) -%}
datediff('day', DATE '1970-01-01', {{ dt }}) * 10000000000
+ least(greatest(datediff('second', TIMESTAMP '1970-01-01 00:00:00', {{ observed_at }}), 0), 9999999999)
{%- endmacro %}
{#- The id of the profile anchored on an identifier (profile_identifiers.sql): the one place
    that says how profile ids are made. -#}
{% macro anchored_id(type, value) -%}
'ap_' || substr(md5({{ type }} || ':' || {{ value }}), 1, 20)
{%- endmacro %}
{#- The anchor order (profile_identifiers.sql): first seen first, every email and external_id
    before any session (labels.sql says why). -#}
{% macro anchor_key(seen_key, node_type) -%}
{{ seen_key }} + CASE WHEN {{ node_type }} = 'session_id' THEN 100000000000000000 ELSE 0 END
{%- endmacro %}
{% import "privacy/_macros.sql" as p %}
{#- A value as the blocked lists see it: lower-case, without surrounding white space of any kind.
    Validation trims the same white space, but rows from another loader are not trimmed at all:
    "null" followed by a no-break space must still be the placeholder "null", or strangers merge
    through it. -#}
{% macro as_listed(value) -%}
lower({{ p.trimmed_if_padded(value) }})
{%- endmacro %}
{#- The WHEN clauses for a value identity.yml lists: blocked values and patterns (a placeholder
    that names no one; privacy/requests.sql refuses a request for one). -#}
{% macro listed(type, value) -%}
WHEN {{ as_listed(value) }} IN ({{ blocked_values[type] | map("literal") | join(", ") or "NULL" }}) THEN 'blocked value'
{% for pattern in blocked_patterns[type] %}
     WHEN regexp_like({{ as_listed(value) }}, {{ pattern | literal }}) THEN 'matches blocked pattern ' || {{ pattern | literal }}
{% endfor %}
{%- endmacro %}
{#- Why a value cannot be an identifier, or NULL when it can: the value rules of identity.yml
    (links.sql; privacy/suppress.sql asks the same of the values it meets). -#}
{% macro blocked(type, value) -%}
CASE WHEN {{ value }} IS NULL THEN 'missing'
     WHEN length({{ value }}) > {{ max_value_length }} THEN 'longer than {{ max_value_length }} characters'
     {{ listed(type, value) }}
{% if type == "email" %}
     {#- validation stores emails trimmed and lower-cased (the matching key); a row written by
         another loader that is not would be a second identifier for the same address -#}
     WHEN {{ value }} <> {{ as_listed(value) }} THEN 'not normalised (trim and lower-case)'
     WHEN NOT regexp_like({{ value }}, {{ email_pattern | literal }}) THEN 'not a valid email'
{% else %}
     {#- validation trims session ids and external_ids too (compared as they are, case and all);
         another loader's padded copy would be a second cookie or a second SSO account -#}
     WHEN {{ value }} <> {{ p.trimmed_if_padded(value) }} THEN 'not normalised (trim)'
{% endif %}
END
{%- endmacro %}
