-- Take placeholders off the suppression list: a value identity.yml blocks (null, test@test.com)
-- names no one, so an entry for it erases and suppresses every stranger whose rows carry it, and
-- through their SSO logins lists their other identifiers too. requests.sql refuses such a request;
-- this undoes one accepted before it did (or before identity.yml blocked the value): the request
-- becomes invalid with the same reason, what it still owed destinations is dropped, and the
-- entries for blocked values leave the list.
--
-- The other entries such a request made through strangers' logins stay: the list keeps one
-- request per entry (the first to list it), so they cannot be told from a real person's that a
-- later request asked for too, and unlisting a real person would bring them back
-- (docs/privacy.md says how to review them). unlisted_left counts them. A later delete does not
-- take them over as one person's (requests.sql, listed_person).
--
-- placeholders: "<identifier_type>:<hash>" of every blocked value; hashes: the hashes alone (a
-- plain IN on the column, which engines push down). privacy.suppression computes them with
-- hash_identifier; a blocked pattern has no finite list of hashes.
{% import "privacy/_macros.sql" as p %}
{% set blocked = "identifier_hash IN (" ~ (hashes | map("literal") | join(", ")) ~ ") AND identifier_type || ':' || identifier_hash IN (" ~ (placeholders | map("literal") | join(", ")) ~ ")" %}
CREATE OR REPLACE TEMP TABLE unlisted_requests AS
SELECT request_id FROM erasure_requests WHERE status <> 'invalid' AND {{ blocked }};
UPDATE erasure_requests SET status = 'invalid', reason = {{ p.names_no_one | literal }}
WHERE request_id IN (SELECT request_id FROM unlisted_requests);
DELETE FROM erasure_subjects WHERE request_id IN (SELECT request_id FROM unlisted_requests);
CREATE OR REPLACE TEMP TABLE unlisted_entries AS
SELECT count(*) AS entries FROM suppression_list WHERE {{ blocked }};
DELETE FROM suppression_list WHERE {{ blocked }};
CREATE OR REPLACE TEMP TABLE unlisted_left AS
SELECT count(*) AS entries FROM suppression_list
WHERE request_id IN (SELECT request_id FROM unlisted_requests);
