{#- Identity links observed up to the cutoff, with the value and session rules of identity.yml.

    Point-in-time: a link counts only if it landed in a partition up to cutoff_dt AND was observed
    before cutoff_ts, so the snapshot as of a date never changes once that date is over.

    Identifiers get 64-bit ids from hash(type, value, salt): links then carry integers only, and
    the value rules run once per distinct identifier, not once per link. The caller checks for
    collisions and re-runs with another salt if one ever occurs. Scratch tables are TEMP: the
    identity run lives in one session and only its results persist.
-#}
{% macro node_id(type, value) -%}
hash('{{ type }}', {{ value }}, {{ salt }})
{%- endmacro %}
{#- Why a value cannot be an identifier, or NULL when it can. Values arrive trimmed by validation
    (the same trim()), so only case is folded here. -#}
{% macro blocked(type, value) -%}
CASE WHEN {{ value }} IS NULL THEN 'missing'
     WHEN length({{ value }}) > {{ max_value_length }} THEN 'longer than {{ max_value_length }} characters'
     WHEN lower({{ value }}) IN ({{ blocked_values[type] | map("literal") | join(", ") or "NULL" }}) THEN 'blocked value'
{% for pattern in blocked_patterns[type] %}
     WHEN regexp_like(lower({{ value }}), {{ pattern | literal }}) THEN 'matches blocked pattern ' || {{ pattern | literal }}
{% endfor %}
{% if type == "email" %}
     WHEN NOT regexp_like(lower({{ value }}), {{ email_pattern | literal }}) THEN 'not a valid email'
{% endif %}
END
{%- endmacro %}
{% set sources = [
  ("form_entries", "session_id", "session_id", "email", "email", "entry_datetime", "form_entries"),
  ("identities", "session_id", "session_id", "external_id", "external_id", "observed_at", "identities"),
  ("identities", "external_id", "external_id", "email", "email", "observed_at", "identities WHERE email IS NOT NULL"),
] %}
{% macro cutoff(observed_at) -%}
dt <= DATE '{{ cutoff_dt }}' AND {{ observed_at }} < TIMESTAMP '{{ cutoff_ts }}'
{%- endmacro %}
CREATE OR REPLACE TEMP TABLE id_rows{{ suffix }} AS
{% for source, left_type, left_col, right_type, right_col, observed_at, relation in sources %}
SELECT '{{ left_type }}' AS left_type, '{{ right_type }}' AS right_type,
       {{ node_id(left_type, left_col) }} AS left_id, {{ node_id(right_type, right_col) }} AS right_id,
       {{ [rank[left_type], rank[right_type]] | min }} AS link_rank,
       {{ observed_at }} AS observed_at, dt, '{{ source }}' AS source, _file, _line
FROM {{ relation }}
{{ "AND" if "WHERE" in relation else "WHERE" }} {{ cutoff(observed_at) }}
{{ "UNION ALL" if not loop.last }}
{% endfor %};

-- Every distinct identifier: its value, when it was first seen (first landing date, first
-- observation) and why the value rules reject it (NULL: it is usable).
CREATE OR REPLACE TEMP TABLE id_values{{ suffix }} AS
SELECT node_id, node_type, node_value, collision, first_dt, first_at,
       CASE node_type
{% for type in ["session_id", "email", "external_id"] %}
            WHEN '{{ type }}' THEN {{ blocked(type, "node_value") }}
{% endfor %}
       END AS blocked
FROM (
    SELECT node_id, min(node_type) AS node_type, min(node_value) AS node_value,
           -- two values behind one id (their second, independent hashes differ): the caller
           -- re-runs with another salt
           min(fingerprint) <> max(fingerprint) AS collision,
           min(dt) AS first_dt, min(observed_at) AS first_at
    FROM (
{% for source, left_type, left_col, right_type, right_col, observed_at, relation in sources %}
{% for type, col in [(left_type, left_col), (right_type, right_col)] %}
        SELECT {{ node_id(type, col) }} AS node_id, '{{ type }}' AS node_type, {{ col }} AS node_value,
               hash({{ col }}, '{{ type }}') AS fingerprint, dt, {{ observed_at }} AS observed_at
        FROM {{ relation }}
        {{ "AND" if "WHERE" in relation else "WHERE" }} {{ cutoff(observed_at) }}
        {{ "UNION ALL" if not loop.last }}
{% endfor %}
        {{ "UNION ALL" if not loop.last }}
{% endfor %}
    ) ends
    GROUP BY node_id
) v;

CREATE OR REPLACE TEMP TABLE id_bad{{ suffix }} AS
SELECT node_id, blocked FROM id_values{{ suffix }} WHERE blocked IS NOT NULL;

-- Shared devices: a session carrying more distinct values of a type than its limit links to
-- nothing (strangers at a kiosk must never merge through it).
CREATE OR REPLACE TEMP TABLE id_shared{{ suffix }} AS
SELECT session_node, min(detail) AS detail
FROM (
{% for type, limit in shared_device.items() %}
    SELECT left_id AS session_node,
           'session carries ' || CAST(count(DISTINCT right_id) AS VARCHAR) || ' distinct {{ type }} values (limit {{ limit }})' AS detail
    FROM id_rows{{ suffix }}
    WHERE left_type = 'session_id' AND right_type = '{{ type }}'
      AND left_id NOT IN (SELECT node_id FROM id_bad{{ suffix }})
      AND right_id NOT IN (SELECT node_id FROM id_bad{{ suffix }})
    GROUP BY left_id
    HAVING count(DISTINCT right_id) > {{ limit }}
    UNION ALL
{% endfor %}
    SELECT left_id AS session_node, CAST(NULL AS VARCHAR) AS detail FROM id_rows{{ suffix }} WHERE 1 = 0
) s
GROUP BY session_node;

-- Per-session limits: a session keeps its most recent values of a type; older links are rejected
-- (ties by value, so the outcome never depends on row order).
CREATE OR REPLACE TEMP TABLE id_session_over{{ suffix }} AS
{% for type, limit in per_session.items() %}
SELECT left_id, right_id, 'session keeps its {{ limit }} most recent {{ type }} value(s)' AS detail
FROM (
    SELECT p.left_id, p.right_id,
           row_number() OVER (PARTITION BY p.left_id ORDER BY p.last_at DESC, v.node_value) AS recency
    FROM (
        SELECT left_id, right_id, max(observed_at) AS last_at
        FROM id_rows{{ suffix }}
        WHERE left_type = 'session_id' AND right_type = '{{ type }}'
          AND left_id NOT IN (SELECT node_id FROM id_bad{{ suffix }})
          AND right_id NOT IN (SELECT node_id FROM id_bad{{ suffix }})
        GROUP BY left_id, right_id
    ) p
    JOIN id_values{{ suffix }} v ON v.node_id = p.right_id
) ranked
WHERE recency > {{ limit }}
UNION ALL
{% endfor %}
SELECT left_id, right_id, CAST(NULL AS VARCHAR) AS detail FROM id_rows{{ suffix }} WHERE 1 = 0;

-- Every link with the first rule that rejects it (NULL: accepted), in rule order.
CREATE OR REPLACE TEMP VIEW id_checked{{ suffix }} AS
SELECT r.*,
       CASE WHEN bl.node_id IS NOT NULL OR br.node_id IS NOT NULL THEN 'blocked_value'
            WHEN s.session_node IS NOT NULL THEN 'shared_device'
            WHEN o.left_id IS NOT NULL THEN 'session_limit' END AS rule,
       CASE WHEN bl.node_id IS NOT NULL THEN r.left_type || ' ' || bl.blocked
            WHEN br.node_id IS NOT NULL THEN r.right_type || ' ' || br.blocked
            WHEN s.session_node IS NOT NULL THEN s.detail
            ELSE o.detail END AS detail,
       bl.node_id IS NULL AS left_usable, br.node_id IS NULL AS right_usable
FROM id_rows{{ suffix }} r
LEFT JOIN id_bad{{ suffix }} bl ON bl.node_id = r.left_id
LEFT JOIN id_bad{{ suffix }} br ON br.node_id = r.right_id
LEFT JOIN id_shared{{ suffix }} s ON s.session_node = r.left_id
LEFT JOIN id_session_over{{ suffix }} o ON o.left_id = r.left_id AND o.right_id = r.right_id;
