-- Record each destination's answer per request (one erasure_log row per request and destination,
-- replaced on every attempt), mark suppress requests skipped everywhere, then finish the requests
-- every enabled destination has answered finally: done, with their plain identifiers purged.
CREATE OR REPLACE TEMP TABLE erasure_results (
    request_id VARCHAR, destination VARCHAR, status VARCHAR, detail VARCHAR
);
{% for request_id, destination, status, detail in rows %}
INSERT INTO erasure_results VALUES ({{ request_id | literal }}, {{ destination | literal }}, {{ status | literal }}, {{ detail | literal }});
{% endfor %}
CREATE OR REPLACE TEMP TABLE erasure_destinations (destination VARCHAR);
{% for destination in destinations %}
INSERT INTO erasure_destinations VALUES ({{ destination | literal }});
{% endfor %}
INSERT INTO erasure_results
SELECT r.request_id, d.destination, '{{ skipped }}',
       'suppress request: nothing deleted here; later deliveries leave the person out'
FROM erasure_requests r CROSS JOIN erasure_destinations d
WHERE r.status = 'pending' AND r.type = 'suppress'
  AND NOT EXISTS (
      SELECT 1 FROM erasure_log l WHERE l.request_id = r.request_id AND l.destination = d.destination
  );

CREATE OR REPLACE TEMP TABLE erasure_log_update AS
SELECT e.request_id, e.destination, e.status, e.detail,
       -- A retried task records the same run's answers again: count each run once.
       coalesce(l.attempts, 0) + CASE WHEN l.run_id IS DISTINCT FROM {{ run_id | literal }} THEN 1 ELSE 0 END AS attempts,
       coalesce(l.first_at, CAST(current_timestamp AS TIMESTAMP)) AS first_at,
       CAST(current_timestamp AS TIMESTAMP) AS updated_at, {{ run_id | literal }} AS run_id
FROM erasure_results e
LEFT JOIN erasure_log l ON l.request_id = e.request_id AND l.destination = e.destination;
DELETE FROM erasure_log
WHERE EXISTS (
    SELECT 1 FROM erasure_results e
    WHERE e.request_id = erasure_log.request_id AND e.destination = erasure_log.destination
);
INSERT INTO erasure_log (request_id, destination, status, detail, attempts, first_at, updated_at, run_id)
SELECT * FROM erasure_log_update;

CREATE OR REPLACE TEMP TABLE completed_requests AS
SELECT r.request_id FROM erasure_requests r
WHERE r.status = 'pending'
  AND EXISTS (
      SELECT 1 FROM erasure_log l
      WHERE l.request_id = r.request_id AND l.destination = 'warehouse' AND l.status = 'done'
  )
  AND NOT EXISTS (
      SELECT 1 FROM erasure_destinations d
      WHERE NOT EXISTS (
          SELECT 1 FROM erasure_log l
          WHERE l.request_id = r.request_id AND l.destination = d.destination
            AND l.status IN ({{ final | map("literal") | join(", ") }})
      )
  );
UPDATE erasure_requests SET status = 'done', completed_at = CAST(current_timestamp AS TIMESTAMP)
WHERE request_id IN (SELECT request_id FROM completed_requests);
INSERT INTO suppressed_profiles
SELECT DISTINCT s.request_id, s.profile_id
FROM erasure_subjects s JOIN erasure_requests r ON r.request_id = s.request_id
WHERE r.type = 'suppress' AND s.profile_id IS NOT NULL
  AND s.request_id IN (SELECT request_id FROM completed_requests)
  -- a delete took the person over (its entries are the delete's): nothing left to keep them for
  AND EXISTS (SELECT 1 FROM suppression_list l WHERE l.request_id = s.request_id)
  AND NOT EXISTS (
      SELECT 1 FROM suppressed_profiles k
      WHERE k.request_id = s.request_id AND k.profile_id = s.profile_id
  );
DELETE FROM erasure_subjects WHERE request_id IN (SELECT request_id FROM completed_requests);
