-- Node ids shared by two different identifiers (a 64-bit hash collision: practically never).
-- id_values holds each identifier once, so a repeated node id is a collision. Found by sorting
-- (each id against the one before it): 0.40-0.46 s at 5.3M identifiers, where
-- count(*) - count(DISTINCT node_id) took 0.57-0.78 s.
SELECT count(*)
FROM (SELECT node_id, lag(node_id) OVER (ORDER BY node_id) AS previous FROM id_values{{ suffix }}) s
WHERE node_id = previous
