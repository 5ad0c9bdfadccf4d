-- New requests for a session or SSO id that no profile holds as written but some profile holds
-- in another case (ids are compared case and all: SSO-1 and sso-1 are two accounts). Counts
-- only, for a warning: someone may have typed the id in the wrong case, and the request then
-- erases nobody's rows but the identifier's own. Run after requests.sql, in its session.
{% import "privacy/_macros.sql" as p %}
CREATE OR REPLACE TEMP TABLE case_misses AS
SELECT n.request_id, count(DISTINCT hit.profile_id) AS profiles
FROM new_requests n
JOIN request_graph hit
  ON hit.identifier_type = n.identifier_type AND {{ p.hashed("hit.identifier_value") }} = n.identifier_hash
WHERE n.identifier_type <> 'email'
  AND NOT EXISTS (
      SELECT 1 FROM erasure_subjects s WHERE s.request_id = n.request_id AND s.profile_id IS NOT NULL
  )
GROUP BY n.request_id;
