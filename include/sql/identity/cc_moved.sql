-- Nodes the last jump moved: zero means the forest was already flat (every tree depth one).
SELECT count_if(moved) FROM id_cc_parent{{ suffix }}_{{ round }}
