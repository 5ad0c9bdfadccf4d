-- Erasure requests: type-check what was read, record new ones (the identifier only as its hash),
-- then resolve each new valid request through the identity graph (profile_identifiers, the
-- current state) to its profiles and all their identifiers, and put every one of them on the
-- suppression list. A request id already recorded is never acted on twice; one recorded as
-- invalid is checked again (its file may have been fixed).
{% import "validate/_macros.sql" as v with context %}
{% import "privacy/_macros.sql" as p %}
CREATE OR REPLACE TEMP TABLE staged_requests AS
SELECT *, row_number() OVER (PARTITION BY request_id ORDER BY _file, _line) AS copy_no
FROM (
    SELECT NULLIF(request_id, '') AS request_id, lower(identifier_type) AS identifier_type,
           identifier_value, {{ p.hashed("identifier_value") }} AS identifier_hash,
           {{ v.utc_timestamp("requested_at") }} AS requested_at, lower(type) AS type, _file, _line,
           reason
    FROM (
        -- checked on the text, in a query of its own: in the list above, requested_at & co.
        -- name both a staged column and an alias, which engines resolve differently
        SELECT *, {{ v.reasons(["_error", v.required("request_id"), v.required("identifier_value"),
                                v.timestamp("requested_at"),
                                "CASE WHEN lower(identifier_type) NOT IN ('email', 'session_id', 'external_id') THEN 'identifier_type: not email, session_id or external_id' END",
                                "CASE WHEN lower(type) NOT IN ('delete', 'suppress') THEN 'type: not delete or suppress' END"]) }} AS reason
        -- identifier_value trimmed of ASCII whitespace here and of all whitespace by p.hashed:
        -- the same as p.hashed alone
        FROM {{ v.trimmed_rows(staged, ["request_id", "identifier_type", "identifier_value", "requested_at", "type"]) }}
    ) checked
) s;

DELETE FROM erasure_requests
WHERE status = 'invalid' AND request_id IN (SELECT request_id FROM staged_requests WHERE copy_no = 1);
INSERT INTO erasure_requests
SELECT request_id, identifier_type, identifier_hash, requested_at, type,
       CASE WHEN reason IS NULL THEN 'pending' ELSE 'invalid' END, reason,
       CAST(current_timestamp AS TIMESTAMP), NULL, NULL, _file, _line
FROM staged_requests s
WHERE request_id IS NOT NULL AND copy_no = 1
  AND NOT EXISTS (SELECT 1 FROM erasure_requests r WHERE r.request_id = s.request_id);

CREATE OR REPLACE TEMP TABLE new_requests AS
SELECT r.request_id, r.identifier_type, r.identifier_hash, r.type, s.identifier_value AS given_value
FROM erasure_requests r
JOIN staged_requests s ON s.request_id = r.request_id AND s.copy_no = 1
WHERE r.status = 'pending' AND r.resolved_at IS NULL;

-- The request's own identifier (normalised, and as given for case-sensitive ids), then every
-- identifier of every profile the graph says it belongs to.
INSERT INTO erasure_subjects
SELECT DISTINCT request_id, identifier_type, identifier_value, profile_id FROM (
    SELECT request_id, identifier_type, {{ p.normalised("given_value") }} AS identifier_value,
           NULL AS profile_id
    FROM new_requests
    UNION ALL
    SELECT request_id, identifier_type, {{ p.trimmed("given_value") }}, NULL FROM new_requests
{% if has_profiles %}
    UNION ALL
    SELECT n.request_id, pi.identifier_type, pi.identifier_value, pi.profile_id
    FROM new_requests n
    JOIN profile_identifiers hit
      ON hit.identifier_type = n.identifier_type AND {{ p.hashed("hit.identifier_value") }} = n.identifier_hash
    JOIN profile_identifiers pi ON pi.profile_id = hit.profile_id
{% endif %}
) x
WHERE identifier_value IS NOT NULL AND identifier_value <> '';

INSERT INTO suppression_list
SELECT DISTINCT s.identifier_type, {{ p.hashed("s.identifier_value") }}, n.type, s.request_id,
       CAST(current_timestamp AS TIMESTAMP)
FROM erasure_subjects s JOIN new_requests n USING (request_id)
WHERE NOT EXISTS (
    SELECT 1 FROM suppression_list l
    WHERE l.identifier_type = s.identifier_type AND l.kind = n.type
      AND l.identifier_hash = {{ p.hashed("s.identifier_value") }}
);

DELETE FROM erasure_log
WHERE destination = 'suppression_list' AND request_id IN (SELECT request_id FROM new_requests);
INSERT INTO erasure_log (request_id, destination, status, detail, attempts, first_at, updated_at)
SELECT n.request_id, 'suppression_list', 'done',
       count(DISTINCT s.identifier_type || ':' || s.identifier_value) || ' identifier(s), '
           || count(DISTINCT s.profile_id) || ' profile(s)',
       1, CAST(current_timestamp AS TIMESTAMP), CAST(current_timestamp AS TIMESTAMP)
FROM new_requests n LEFT JOIN erasure_subjects s USING (request_id)
GROUP BY n.request_id;
UPDATE erasure_requests SET resolved_at = CAST(current_timestamp AS TIMESTAMP)
WHERE request_id IN (SELECT request_id FROM new_requests);
