-- Take placeholders off the suppression list: a value identity.yml blocks (null, test@test.com)
-- names no one, so an entry for it erases and suppresses every stranger whose rows carry it, and
-- through their SSO logins lists their other identifiers too. requests.sql refuses such a request;
-- this undoes one accepted before it did (or before identity.yml blocked the value): the request
-- becomes invalid with the same reason, and every entry it made, the strangers' included, leaves
-- the list, as does any other entry for a blocked value. What was erased stays erased.
--
-- placeholders: "<identifier_type>:<hash>" of every blocked value (privacy.suppression computes
-- them with hash_identifier; a blocked pattern has no finite list of hashes).
{% import "privacy/_macros.sql" as p %}
{% set blocked = "identifier_type || ':' || identifier_hash IN (" ~ (placeholders | map("literal") | join(", ")) ~ ")" %}
{% set refused = "request_id IN (SELECT request_id FROM erasure_requests WHERE status = 'invalid' AND reason = " ~ (p.names_no_one | literal) ~ ")" %}
CREATE OR REPLACE TEMP TABLE unlisted_requests AS
SELECT request_id FROM erasure_requests WHERE status <> 'invalid' AND {{ blocked }};
UPDATE erasure_requests SET status = 'invalid', reason = {{ p.names_no_one | literal }}
WHERE request_id IN (SELECT request_id FROM unlisted_requests);
-- (every refused request, not only these: one whose entries an interrupted run left behind)
DELETE FROM erasure_subjects WHERE {{ refused }};
CREATE OR REPLACE TEMP TABLE unlisted_entries AS
SELECT count(*) AS entries FROM suppression_list WHERE {{ refused }} OR {{ blocked }};
DELETE FROM suppression_list WHERE {{ refused }} OR {{ blocked }};
