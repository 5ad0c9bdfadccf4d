-- Erasure requests: type-check what was read, record new ones (the identifier only as its hash),
-- then resolve each new valid request through the identity graph (the daily build's current
-- profile_identifiers, and stream_identifiers: what the stream attached since) to its profiles
-- and all their identifiers, and put every one of them on the suppression list. A `delete` for
-- someone already on the list (an earlier `suppress` took their profile out of the graph) takes
-- over that person's entries as `delete`. A request id already recorded is never acted on twice;
-- one recorded as invalid is checked again (its file may have been fixed).
-- graph_tables: which of profile_identifiers and stream_identifiers exist.
{% import "validate/_macros.sql" as v with context %}
{% import "privacy/_macros.sql" as p %}
{% import "identity/_macros.sql" as idm with context %}
{#- A value identity.yml blocks (test@test.com, null) is no one's: listed, it would erase and
    suppress every stranger whose rows carry it. (A malformed email is someone's: their
    quarantined form entry holds it.) -#}
{% set placeholder -%}
CASE lower(identifier_type)
{%- for type in ("email", "session_id", "external_id") %}
     WHEN '{{ type }}' THEN CASE WHEN {{ p.normalised("identifier_value") }} IS NULL THEN NULL
                            {{ idm.listed(type, "identifier_value") }} END
{%- endfor %}
END
{%- endset %}
CREATE OR REPLACE TEMP TABLE staged_requests AS
SELECT *, row_number() OVER (PARTITION BY request_id ORDER BY _file, _line) AS copy_no
FROM (
    SELECT NULLIF(request_id, '') AS request_id, lower(identifier_type) AS identifier_type,
           identifier_value, {{ p.hashed("identifier_value") }} AS identifier_hash,
           {{ p.exact_hashed("lower(identifier_type)", "identifier_value") }} AS exact_hash,
           {{ v.utc_timestamp("requested_at") }} AS requested_at, lower(type) AS type, _file, _line,
           reason
    FROM (
        -- checked on the text, in a query of its own: in the list above, requested_at & co.
        -- name both a staged column and an alias, which engines resolve differently. A request
        -- stamped with the epoch is still acted on: its stamp orders nothing, and an erasure
        -- refused for a sender's unset clock would leave the person in every destination.
        SELECT *, {{ v.reasons(["_error", v.required("request_id"), v.required("identifier_value"),
                                v.timestamp("requested_at", refuse_epoch=false),
                                "CASE WHEN lower(identifier_type) NOT IN ('email', 'session_id', 'external_id') THEN 'identifier_type: not email, session_id or external_id' END",
                                "CASE WHEN lower(type) NOT IN ('delete', 'suppress') THEN 'type: not delete or suppress' END",
                                "CASE WHEN (" ~ placeholder ~ ") IS NOT NULL THEN " ~ (p.names_no_one | literal) ~ " END"]) }} AS reason
        -- identifier_value trimmed here as p.hashed trims it: the same as p.hashed alone
        FROM {{ v.trimmed_rows(staged, ["request_id", "identifier_type", "identifier_value", "requested_at", "type"]) }}
    ) checked
) s;

DELETE FROM erasure_requests
WHERE status = 'invalid' AND request_id IN (SELECT request_id FROM staged_requests WHERE copy_no = 1);
INSERT INTO erasure_requests
SELECT request_id, identifier_type, identifier_hash, requested_at, type,
       CASE WHEN reason IS NULL THEN 'pending' ELSE 'invalid' END, reason,
       CAST(current_timestamp AS TIMESTAMP), NULL, NULL, _file, _line, exact_hash
FROM staged_requests s
WHERE request_id IS NOT NULL AND copy_no = 1
  AND NOT EXISTS (SELECT 1 FROM erasure_requests r WHERE r.request_id = s.request_id);

CREATE OR REPLACE TEMP TABLE new_requests AS
SELECT r.request_id, r.identifier_type, r.identifier_hash, r.exact_hash, r.type,
       s.identifier_value AS given_value
FROM erasure_requests r
JOIN staged_requests s ON s.request_id = r.request_id AND s.copy_no = 1
WHERE r.status = 'pending' AND r.resolved_at IS NULL;

-- The identity graph: the daily build's profile_identifiers and what the stream attached since
-- (stream_identifiers: a person the stream has seen but no daily build has yet, or identifiers a
-- stream merge moved). Both, not the stream's override of one by the other: a profile either
-- names is the person's, so both get erased.
CREATE OR REPLACE TEMP TABLE request_graph AS
{% for table in graph_tables %}
SELECT identifier_type, identifier_value, profile_id FROM {{ table }}
UNION
{% endfor %}
SELECT CAST(NULL AS VARCHAR) AS identifier_type, CAST(NULL AS VARCHAR) AS identifier_value,
       CAST(NULL AS VARCHAR) AS profile_id
FROM erasure_requests WHERE 1 = 0;

-- The request's own identifier (as identity compares it: an email lower-cased, an SSO id or
-- session exactly as given, trimmed), then every identifier of every profile the graph says it
-- belongs to. What an earlier attempt wrote is replaced: on Snowflake this DML commits apart from
-- the file's last group (DDL in between), so a retry after that group failed found the request
-- new again and listed its subjects twice.
DELETE FROM erasure_subjects WHERE request_id IN (SELECT request_id FROM new_requests);
INSERT INTO erasure_subjects
SELECT DISTINCT request_id, identifier_type, identifier_value, profile_id FROM (
    SELECT request_id, identifier_type, {{ p.as_identifier("identifier_type", "given_value") }} AS identifier_value,
           NULL AS profile_id
    FROM new_requests
    UNION ALL  -- an email also as given, for a destination holding it so
    SELECT request_id, identifier_type, {{ p.trimmed("given_value") }}, NULL FROM new_requests
    UNION ALL
    SELECT n.request_id, g.identifier_type, g.identifier_value, g.profile_id
    FROM new_requests n
    JOIN request_graph hit
      ON hit.identifier_type = n.identifier_type AND {{ p.hashed("hit.identifier_value") }} = n.identifier_hash
     AND {{ p.exactly("n", "hit.identifier_type", "hit.identifier_value") }}
    JOIN request_graph g ON g.profile_id = hit.profile_id
) x
WHERE identifier_value IS NOT NULL AND identifier_value <> '';

{% if has_merges %}
-- The ids of profiles merged into theirs (profile_merges), as profile ids alone: rows keyed by a
-- profile id only (an earlier date's segment memberships in a run export or a drop) still name
-- them. One merged into one of their profiles, or anchored on one of their emails or SSO ids (a
-- chain of merges: each id in it was anchored on an identifier the survivor now holds). Never
-- an id that is live now: the person's own are listed already, anyone else's is not theirs.
INSERT INTO erasure_subjects
SELECT DISTINCT s.request_id, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), m.merged_profile_id
FROM (
    SELECT request_id, profile_id AS merged_into, CAST(NULL AS VARCHAR) AS anchored
    FROM erasure_subjects WHERE profile_id IS NOT NULL
    UNION
    SELECT request_id, NULL, {{ idm.anchored_id("identifier_type", "identifier_value") }}
    FROM erasure_subjects
    WHERE profile_id IS NOT NULL AND identifier_type IN ('email', 'external_id')
) s
JOIN profile_merges m
  ON m.surviving_profile_id = s.merged_into OR m.merged_profile_id = s.anchored
WHERE s.request_id IN (SELECT request_id FROM new_requests)
  AND NOT EXISTS (SELECT 1 FROM request_graph g WHERE g.profile_id = m.merged_profile_id);
{% endif %}

-- A delete request for someone earlier requests already listed: every entry of those requests is
-- the same person's (an earlier `suppress` deleted their profile from the graph, so the graph alone
-- finds no more than the identifier asked about). Matched on an email or SSO id the request
-- resolved, never on a session, even one it names: a session is a device (a kiosk listed under
-- an earlier request was used by its person, not only by them), and matching on it would hand
-- one person's erasure another person's identifiers. A named session's own rows still go. Nor
-- the entries of a request now invalid: one for a placeholder (unlist_placeholders.sql) listed
-- strangers through their logins, every one a different person.
CREATE OR REPLACE TEMP TABLE listed_person AS
SELECT DISTINCT n.request_id, l.identifier_type, l.identifier_hash, l.exact_hash,
       l.request_id AS earlier_request_id
FROM new_requests n
JOIN erasure_subjects s ON s.request_id = n.request_id
JOIN suppression_list hit
  ON hit.identifier_type = s.identifier_type AND hit.identifier_hash = {{ p.hashed("s.identifier_value") }}
 AND {{ p.exactly("hit", "s.identifier_type", "s.identifier_value") }}
JOIN suppression_list l ON l.request_id = hit.request_id
WHERE n.type = 'delete' AND hit.identifier_type <> 'session_id'
  AND hit.request_id NOT IN (
      SELECT request_id FROM erasure_requests WHERE status = 'invalid' AND request_id IS NOT NULL);
-- Their plain values, where rows kept for the earlier request still hold them (restricted_*):
-- destinations need them to find what was delivered before.
INSERT INTO erasure_subjects
SELECT DISTINCT p.request_id, k.identifier_type, k.value, NULL
FROM listed_person p
JOIN (
    SELECT 'email' AS identifier_type, email AS value FROM restricted_form_entries
    UNION SELECT 'session_id', session_id FROM restricted_form_entries
    UNION SELECT 'email', email FROM restricted_identities
    UNION SELECT 'external_id', external_id FROM restricted_identities
    UNION SELECT 'session_id', session_id FROM restricted_identities
    UNION SELECT 'session_id', session_id FROM restricted_interactions
) k ON k.identifier_type = p.identifier_type AND {{ p.hashed("k.value") }} = p.identifier_hash
     AND {{ p.exactly("p", "k.identifier_type", "k.value") }}
WHERE k.value IS NOT NULL AND k.value <> ''
  AND NOT EXISTS (
      SELECT 1 FROM erasure_subjects s
      WHERE s.request_id = p.request_id AND s.identifier_type = k.identifier_type
        AND s.identifier_value = k.value
  );

-- Their profile ids, kept by a finished suppress (suppressed_profiles): destinations erase those
-- profiles (a stream's profile_erased) though the graph no longer has them. Rows without an
-- identifier: the profile id alone.
INSERT INTO erasure_subjects
SELECT DISTINCT p.request_id, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), k.profile_id
FROM (SELECT DISTINCT request_id, earlier_request_id FROM listed_person) p
JOIN (
    SELECT request_id, profile_id FROM suppressed_profiles
    UNION  -- an earlier request not finished yet still has its own
    SELECT request_id, profile_id FROM erasure_subjects WHERE profile_id IS NOT NULL
) k ON k.request_id = p.earlier_request_id;
DELETE FROM suppressed_profiles
WHERE request_id IN (SELECT earlier_request_id FROM listed_person);

-- Beside an entry from before exact_hash too (suppress.sql takes that one as covering the value):
-- the request's own exact entries let that entry be deleted (docs/privacy.md, "Identifiers and
-- their case").
INSERT INTO suppression_list
SELECT DISTINCT s.identifier_type, {{ p.hashed("s.identifier_value") }}, n.type, s.request_id,
       CAST(current_timestamp AS TIMESTAMP), {{ p.exact_hashed("s.identifier_type", "s.identifier_value") }}
FROM erasure_subjects s JOIN new_requests n USING (request_id)
WHERE s.identifier_value IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM suppression_list l
    WHERE l.identifier_type = s.identifier_type AND l.kind = n.type
      AND l.identifier_hash = {{ p.hashed("s.identifier_value") }}
      AND l.exact_hash = {{ p.exact_hashed("s.identifier_type", "s.identifier_value") }}
);
-- The person's entries without a plain value left (no row kept) become the delete request's too.
INSERT INTO suppression_list
SELECT DISTINCT p.identifier_type, p.identifier_hash, 'delete', p.request_id,
       CAST(current_timestamp AS TIMESTAMP), p.exact_hash
FROM listed_person p
WHERE NOT EXISTS (
    SELECT 1 FROM suppression_list l
    WHERE l.identifier_type = p.identifier_type AND l.kind = 'delete'
      AND l.identifier_hash = p.identifier_hash
      AND coalesce(l.exact_hash, '') = coalesce(p.exact_hash, '')
);
-- Delete wins: an identifier listed for deletion is no longer listed as only suppressed.
DELETE FROM suppression_list
WHERE kind = 'suppress'
  AND EXISTS (
      SELECT 1 FROM suppression_list d
      WHERE d.kind = 'delete' AND d.identifier_type = suppression_list.identifier_type
        AND d.identifier_hash = suppression_list.identifier_hash
        AND {{ p.exact_match("d", "suppression_list.exact_hash") }}
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
