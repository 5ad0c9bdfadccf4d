-- Accepted links as edges between node ids (a < b). link_rank and last_at feed the profile
-- limits; session_node says which end is a session (sessions are nodes only through an
-- accepted link).
CREATE OR REPLACE TEMP TABLE id_edges{{ suffix }} AS
SELECT least(left_id, right_id) AS a, greatest(left_id, right_id) AS b, link_rank, last_at,
       CASE WHEN left_type = 'session_id' THEN left_id END AS session_node
FROM id_checked{{ suffix }}
WHERE rule IS NULL AND left_id <> right_id;

-- Links the profile limits cut (filled by limit_apply).
CREATE OR REPLACE TEMP TABLE id_cuts{{ suffix }} AS
SELECT a, b, CAST(NULL AS VARCHAR) AS detail FROM id_edges{{ suffix }} WHERE 1 = 0;
