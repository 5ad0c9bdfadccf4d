-- The stream's identity step: the batch's links under the identity rules (see _stream_rules in
-- stream.py), kept beside the daily build's include/sql/identity, which it predates.
-- Identity links observed up to the cutoff (point-in-time: landed in a partition up to cutoff_dt
-- and observed before cutoff_ts), with the rules of identity.yml applied. Accepted links go to
-- identity_links{{ suffix }}, rejected ones to identity_link_audit{{ suffix }}.
CREATE OR REPLACE TABLE {{ rs }}.link_candidates{{ suffix }} AS
SELECT 'session_id' AS left_type, session_id AS left_value, 'email' AS right_type, email AS right_value,
       entry_datetime AS observed_at, dt, 'form_entries' AS source, _file, _line
FROM form_entries
WHERE dt <= DATE '{{ cutoff_dt }}' AND entry_datetime < TIMESTAMP '{{ cutoff_ts }}'
UNION ALL
SELECT 'session_id', session_id, 'external_id', external_id, observed_at, dt, 'identities', _file, _line
FROM identities
WHERE dt <= DATE '{{ cutoff_dt }}' AND observed_at < TIMESTAMP '{{ cutoff_ts }}'
UNION ALL
SELECT 'external_id', external_id, 'email', email, observed_at, dt, 'identities', _file, _line
FROM identities
WHERE email IS NOT NULL AND dt <= DATE '{{ cutoff_dt }}' AND observed_at < TIMESTAMP '{{ cutoff_ts }}';

-- Rule 1: blocked values and over-long values, on either end of the link.
CREATE OR REPLACE TABLE {{ rs }}.link_blocked{{ suffix }} AS
SELECT c.*, 'blocked_value' AS rule,
       CASE WHEN length(left_value) > {{ max_value_length }} OR length(right_value) > {{ max_value_length }}
            THEN 'value longer than {{ max_value_length }} characters'
            ELSE 'blocked value' END AS detail
FROM {{ rs }}.link_candidates{{ suffix }} c
WHERE length(left_value) > {{ max_value_length }} OR length(right_value) > {{ max_value_length }}
{% for type, values in blocked.items() %}
   OR (left_type = '{{ type }}' AND lower(trim(left_value)) IN ({{ values | map("literal") | join(", ") or "NULL" }}))
   OR (right_type = '{{ type }}' AND lower(trim(right_value)) IN ({{ values | map("literal") | join(", ") or "NULL" }}))
{% endfor %}
{% for values in [blocked_any] %}
   OR lower(trim(left_value)) IN ({{ values | map("literal") | join(", ") or "NULL" }})
   OR lower(trim(right_value)) IN ({{ values | map("literal") | join(", ") or "NULL" }})
{% endfor %};

CREATE OR REPLACE TABLE {{ rs }}.link_pass1{{ suffix }} AS
SELECT c.* FROM {{ rs }}.link_candidates{{ suffix }} c
WHERE NOT EXISTS (
    SELECT 1 FROM {{ rs }}.link_blocked{{ suffix }} b
    WHERE b._file = c._file AND b._line = c._line AND b.right_type = c.right_type
);

-- Rule 2: a session with more than session_max_emails distinct emails is a shared device.
CREATE OR REPLACE TABLE {{ rs }}.link_shared_device{{ suffix }} AS
SELECT l.*, 'shared_device' AS rule,
       'session carries ' || s.n || ' distinct emails (limit {{ session_max_emails }})' AS detail
FROM {{ rs }}.link_pass1{{ suffix }} l
JOIN (
    SELECT left_value, count(DISTINCT right_value) AS n
    FROM {{ rs }}.link_pass1{{ suffix }}
    WHERE left_type = 'session_id' AND right_type = 'email'
    GROUP BY left_value
    HAVING count(DISTINCT right_value) > {{ session_max_emails }}
) s ON s.left_value = l.left_value
WHERE l.left_type = 'session_id' AND l.right_type = 'email';

-- Rule 3: a session keeps at most session_max_external_ids SSO accounts, the most recent first.
CREATE OR REPLACE TABLE {{ rs }}.link_extra_external{{ suffix }} AS
SELECT l.*, 'session_external_id_limit' AS rule,
       'session already linked to a more recent external_id' AS detail
FROM {{ rs }}.link_pass1{{ suffix }} l
JOIN (
    SELECT left_value, right_value,
           dense_rank() OVER (PARTITION BY left_value ORDER BY max(observed_at) DESC, right_value) AS rnk
    FROM {{ rs }}.link_pass1{{ suffix }}
    WHERE left_type = 'session_id' AND right_type = 'external_id'
    GROUP BY left_value, right_value
) r ON r.left_value = l.left_value AND r.right_value = l.right_value
WHERE l.left_type = 'session_id' AND l.right_type = 'external_id'
  AND r.rnk > {{ session_max_external_ids }};

CREATE OR REPLACE TABLE {{ rs }}.identity_link_audit{{ suffix }} AS
SELECT dt, rule, detail, left_type, left_value, right_type, right_value, observed_at, source, _file AS file, _line AS line
FROM {{ rs }}.link_blocked{{ suffix }}
UNION ALL
SELECT dt, rule, detail, left_type, left_value, right_type, right_value, observed_at, source, _file, _line
FROM {{ rs }}.link_shared_device{{ suffix }}
UNION ALL
SELECT dt, rule, detail, left_type, left_value, right_type, right_value, observed_at, source, _file, _line
FROM {{ rs }}.link_extra_external{{ suffix }};

CREATE OR REPLACE TABLE {{ rs }}.identity_links{{ suffix }} AS
SELECT l.* FROM {{ rs }}.link_pass1{{ suffix }} l
WHERE NOT EXISTS (
    SELECT 1 FROM {{ rs }}.identity_link_audit{{ suffix }} a
    WHERE a.file = l._file AND a.line = l._line AND a.right_type = l.right_type
      AND a.left_type = l.left_type
);
