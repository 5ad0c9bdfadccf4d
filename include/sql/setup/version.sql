-- The warehouse's schema version: the newest version of its lasting tables set up on it. A release
-- older than that refuses the warehouse (Warehouse.setup) instead of failing on a table with a
-- column it does not know (an INSERT of one value too few, after minutes of retries).
CREATE TABLE IF NOT EXISTS warehouse_schema (version INTEGER, set_up_at TIMESTAMP);
INSERT INTO warehouse_schema
SELECT {{ version }}, CAST(current_timestamp AS TIMESTAMP) FROM (SELECT 1 AS one) AS once
WHERE NOT EXISTS (SELECT 1 FROM warehouse_schema WHERE version >= {{ version }});
