-- No edges at all: every node is its own component.
CREATE OR REPLACE TEMP TABLE id_cc_map{{ suffix }} AS
SELECT a AS node, b AS parent FROM id_edges{{ suffix }} WHERE 1 = 0;
