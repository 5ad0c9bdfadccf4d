-- Connected components, one round on the round's edges (a < b, both ends of every pair once).
-- Hooking: every node points at its smallest neighbour when that is smaller than itself. Parents
-- are always smaller, so the pointers form a forest; its roots are the nodes with no smaller
-- neighbour. Every b of an edge gets a parent, so contraction can inner-join on it.
CREATE OR REPLACE TEMP TABLE id_cc_parent{{ suffix }}_{{ round }} AS
SELECT b AS node, min(a) AS parent
FROM {{ edges }}
GROUP BY b;
