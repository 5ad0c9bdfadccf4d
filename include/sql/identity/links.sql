{#- Identity links as of the cutoff (see _macros.sql), with the value and session rules of
    identity.yml. Every rule decides on a pair of identifiers (their values, the session's other
    values, the pair's most recent observation), never on a single row, so links are kept once
    per pair; the rows behind a rejected pair are looked up again for the audit (rejected.sql).
    Scratch tables are TEMP: the identity run lives in one session and only its results persist.
-#}
{% import "identity/_macros.sql" as m with context %}
CREATE OR REPLACE TEMP TABLE id_pairs{{ suffix }} AS
SELECT kind, left_id, right_id, max(observed_at) AS last_at
{% if new_since %}
       -- the pair's first observation in this run (landed in its partition or observed in its
       -- interval): profile_merges says when and how profiles met
       , min(CASE WHEN dt = DATE '{{ new_since.ds }}' OR observed_at >= TIMESTAMP '{{ new_since.interval_start }}'
                  THEN observed_at END) AS first_new_at
{% endif %}
FROM (
{% for k in m.kinds %}
    SELECT {{ k.kind }} AS kind, {{ m.node_id(k.left_type, k.left) }} AS left_id,
           {{ m.node_id(k.right_type, k.right) }} AS right_id, {{ k.observed_at }} AS observed_at, dt
    {{ m.rows(k) }}
    {{ "UNION ALL" if not loop.last }}
{% endfor %}
) r
GROUP BY kind, left_id, right_id;

-- Every distinct identifier: its value, when it was first seen and why the value rules reject it
-- (NULL: it is usable). seen_key orders identifiers by their first row: landing day, then the
-- second that row was observed, as one number. Both from one row: the earliest landing day's
-- earliest observation. (Taken apart, an old observation landing late lent its time to an
-- identifier first landed earlier, which could then re-key a profile it had long been in.)
-- Grouped by the value, one type at a time, and hashed once per identifier: grouping by the node
-- id with the value as a min() payload took twice as long, and by (type, value) over all types
-- at once 0.3-0.7 s longer at 5M links (bench/README.md). Two values with one id are a collision
-- (node_collisions.sql).
CREATE OR REPLACE TEMP TABLE id_values{{ suffix }} AS
{% for type in ["session_id", "email", "external_id"] %}
SELECT {{ m.node_id(type, "node_value") }} AS node_id, '{{ type }}' AS node_type, node_value,
       seen_key, first_at, {{ m.blocked(type, "node_value") }} AS blocked
FROM (
    SELECT node_value, min(observed_at) AS first_at,
           min({{ m.row_seen_key("dt", "observed_at") }}) AS seen_key
    FROM (
{% set ns = namespace(first=true) %}
{% for k in m.kinds %}
{% for end_type, column in [(k.left_type, k.left), (k.right_type, k.right)] if end_type == type %}
{#- An end that a kind without a filter reads from the same rows adds nothing to min() (kind 3's
    external_id: kind 2 reads every SSO row's): skipped, 0.6M of 10M rows at 5M links. -#}
{% set end = namespace(covered=false) %}
{% for other in m.kinds if "where" in k and "where" not in other and other.relation == k.relation
                           and other.observed_at == k.observed_at and column in (other.left, other.right) %}
{% set end.covered = true %}
{% endfor %}
{% if not end.covered %}
        {{ "UNION ALL" if not ns.first }}
        SELECT {{ column }} AS node_value, dt, {{ k.observed_at }} AS observed_at
        {{ m.rows(k) }}
{% set ns.first = false %}
{% endif %}
{% endfor %}
{% endfor %}
{% if ns.first %}
        SELECT CAST(NULL AS VARCHAR) AS node_value, CAST(NULL AS DATE) AS dt,
               CAST(NULL AS TIMESTAMP) AS observed_at
        WHERE 1 = 0
{% endif %}
    ) ends
    GROUP BY node_value
) v
{{ "UNION ALL" if not loop.last else ";" }}
{% endfor %}

CREATE OR REPLACE TEMP TABLE id_bad{{ suffix }} AS
SELECT node_id, blocked FROM id_values{{ suffix }} WHERE blocked IS NOT NULL;

-- Shared devices: a session carrying more distinct values of a type than its limit links to
-- nothing (strangers at a kiosk must never merge through it).
CREATE OR REPLACE TEMP TABLE id_shared{{ suffix }} AS
SELECT session_node, min(detail) AS detail
FROM (
{% for type, limit in shared_device.items() %}
    SELECT left_id AS session_node,
           'session carries ' || CAST(count(*) AS VARCHAR) || ' distinct {{ type }} values (limit {{ limit }})' AS detail
    FROM id_pairs{{ suffix }}
    WHERE kind IN {{ m.session_kinds(type) }}
      AND left_id NOT IN (SELECT node_id FROM id_bad{{ suffix }})
      AND right_id NOT IN (SELECT node_id FROM id_bad{{ suffix }})
    GROUP BY left_id
    HAVING count(*) > {{ limit }}
    UNION ALL
{% endfor %}
    SELECT left_id AS session_node, CAST(NULL AS VARCHAR) AS detail FROM id_pairs{{ suffix }} WHERE 1 = 0
) s
GROUP BY session_node;

-- Per-session limits: a session keeps its most recent values of a type; older links are rejected
-- (ties by value, so the outcome never depends on row order). Only the sessions over the limit
-- (few) are ranked: ranking every session's links, each joined to its value for the tie-break,
-- took 0.5 s at 5M links, finding the few first 0.15 s.
CREATE OR REPLACE TEMP TABLE id_session_over{{ suffix }} AS
{% for type, limit in per_session.items() %}
SELECT left_id, right_id, 'session keeps its {{ limit }} most recent {{ type }} value(s)' AS detail
FROM (
    SELECT p.left_id, p.right_id,
           row_number() OVER (PARTITION BY p.left_id ORDER BY p.last_at DESC, v.node_value) AS recency
    FROM id_pairs{{ suffix }} p
    JOIN id_values{{ suffix }} v ON v.node_id = p.right_id
    WHERE p.kind IN {{ m.session_kinds(type) }}
      AND p.left_id IN (
          SELECT left_id FROM id_pairs{{ suffix }}
          WHERE kind IN {{ m.session_kinds(type) }}
            AND left_id NOT IN (SELECT node_id FROM id_bad{{ suffix }})
            AND right_id NOT IN (SELECT node_id FROM id_bad{{ suffix }})
          GROUP BY left_id
          HAVING count(*) > {{ limit }})
      AND p.left_id NOT IN (SELECT node_id FROM id_bad{{ suffix }})
      AND p.right_id NOT IN (SELECT node_id FROM id_bad{{ suffix }})
) ranked
WHERE recency > {{ limit }}
UNION ALL
{% endfor %}
SELECT left_id, right_id, CAST(NULL AS VARCHAR) AS detail FROM id_pairs{{ suffix }} WHERE 1 = 0;

-- Every link with the first rule that rejects it (NULL: accepted), in rule order, and the
-- priority rank of its best identifier type.
CREATE OR REPLACE TEMP VIEW id_checked{{ suffix }} AS
SELECT p.*,
       {{ m.of_kind("left_type", "p.kind") }} AS left_type,
       {{ m.of_kind("right_type", "p.kind") }} AS right_type,
       CASE p.kind{% for k in m.kinds %} WHEN {{ k.kind }} THEN {{ [rank[k.left_type], rank[k.right_type]] | min }}{% endfor %} END AS link_rank,
       CASE WHEN bl.node_id IS NOT NULL OR br.node_id IS NOT NULL THEN 'blocked_value'
            WHEN s.session_node IS NOT NULL THEN 'shared_device'
            WHEN o.left_id IS NOT NULL THEN 'session_limit' END AS rule,
       CASE WHEN bl.node_id IS NOT NULL THEN {{ m.of_kind("left_type", "p.kind") }} || ' ' || bl.blocked
            WHEN br.node_id IS NOT NULL THEN {{ m.of_kind("right_type", "p.kind") }} || ' ' || br.blocked
            WHEN s.session_node IS NOT NULL THEN s.detail
            ELSE o.detail END AS detail
FROM id_pairs{{ suffix }} p
LEFT JOIN id_bad{{ suffix }} bl ON bl.node_id = p.left_id
LEFT JOIN id_bad{{ suffix }} br ON br.node_id = p.right_id
LEFT JOIN id_shared{{ suffix }} s ON s.session_node = p.left_id
LEFT JOIN id_session_over{{ suffix }} o ON o.left_id = p.left_id AND o.right_id = p.right_id;
