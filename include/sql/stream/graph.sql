-- The batch's identity graph ({{ rs }}.id_nodes / id_edges, from identity/graph.sql) joined to
-- what is already known. Known state: identifiers the stream attached since the last daily
-- publish, then the daily build's current profile_identifiers. Every known profile that holds one
-- of the batch's identifiers becomes a node of its own, linked to those identifiers, so each
-- connected component (suffix _s) holds the known profiles it joins.
CREATE OR REPLACE VIEW {{ rs }}.state AS
SELECT identifier_type, identifier_value, profile_id FROM {{ home }}.stream_identifiers
UNION ALL
SELECT p.identifier_type, p.identifier_value, p.profile_id FROM {{ home }}.profile_identifiers p
WHERE NOT EXISTS (
    SELECT 1 FROM {{ home }}.stream_identifiers s
    WHERE s.identifier_type = p.identifier_type AND s.identifier_value = p.identifier_value
);

CREATE OR REPLACE TABLE {{ rs }}.node_profile AS
SELECT n.node_id, s.profile_id
FROM {{ rs }}.id_nodes n
JOIN {{ rs }}.state s ON s.identifier_type = n.node_type AND s.identifier_value = n.node_value;

CREATE OR REPLACE TABLE {{ rs }}.known_profiles AS
SELECT profile_id,
       (SELECT coalesce(max(node_id), 0) FROM {{ rs }}.id_nodes)
         + row_number() OVER (ORDER BY profile_id) AS node_id
FROM (SELECT DISTINCT profile_id FROM {{ rs }}.node_profile) k;

CREATE OR REPLACE TABLE {{ rs }}.id_nodes_s AS
SELECT node_id FROM {{ rs }}.id_nodes
UNION ALL
SELECT node_id FROM {{ rs }}.known_profiles;

CREATE OR REPLACE TABLE {{ rs }}.id_edges_s AS
SELECT a, b FROM {{ rs }}.id_edges
UNION
SELECT np.node_id, kp.node_id
FROM {{ rs }}.node_profile np JOIN {{ rs }}.known_profiles kp USING (profile_id)
UNION
SELECT kp.node_id, np.node_id
FROM {{ rs }}.node_profile np JOIN {{ rs }}.known_profiles kp USING (profile_id);

CREATE OR REPLACE TABLE {{ rs }}.id_labels_s AS
SELECT node_id, node_id AS label FROM {{ rs }}.id_nodes_s;
