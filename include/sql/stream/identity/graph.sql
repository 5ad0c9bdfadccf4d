-- Typed identifier nodes get dense integer ids (ordered by type:value, so labels are
-- deterministic); every node starts as its own label.
CREATE OR REPLACE TABLE {{ rs }}.id_nodes{{ suffix }} AS
SELECT row_number() OVER (ORDER BY node) AS node_id, node, node_type, node_value, first_dt, first_observed_at
FROM (
    SELECT node_type || ':' || node_value AS node, node_type, node_value,
           min(dt) AS first_dt, min(observed_at) AS first_observed_at
    FROM (
        SELECT left_type AS node_type, left_value AS node_value, dt, observed_at FROM {{ rs }}.identity_links{{ suffix }}
        UNION ALL
        SELECT right_type, right_value, dt, observed_at FROM {{ rs }}.identity_links{{ suffix }}
        UNION ALL
        -- An email whose link a limit rejected (a kiosk entry) is still a person: a profile of
        -- its own, without the shared session.
        SELECT right_type, right_value, dt, observed_at FROM {{ rs }}.link_pass1{{ suffix }}
        WHERE right_type = 'email'
    ) n
    GROUP BY node_type, node_value
) x;

-- Both directions of every link, so hooking sees every neighbour.
CREATE OR REPLACE TABLE {{ rs }}.id_edges{{ suffix }} AS
WITH one_way AS (
    SELECT DISTINCT a.node_id AS a, b.node_id AS b
    FROM {{ rs }}.identity_links{{ suffix }} l
    JOIN {{ rs }}.id_nodes{{ suffix }} a ON a.node = l.left_type || ':' || l.left_value
    JOIN {{ rs }}.id_nodes{{ suffix }} b ON b.node = l.right_type || ':' || l.right_value
    WHERE a.node_id <> b.node_id
)
SELECT a, b FROM one_way
UNION
SELECT b, a FROM one_way;

CREATE OR REPLACE TABLE {{ rs }}.id_labels{{ suffix }} AS
SELECT node_id, node_id AS label FROM {{ rs }}.id_nodes{{ suffix }};
