-- Run only after every stream destination took the batch, in one transaction: what the batch
-- attached, which file versions it emitted, and the watermarks. A crash before this re-runs the
-- whole batch (same records, same record_ids); nothing here can skip one. Without a batch (a
-- listing that found nothing new) only the watermarks are written.
-- stream_batches: the as_of each delivered batch went out with (stream._batch_as_of reads the
-- highest: as_of never goes down, whatever landing dates a later batch brings).
CREATE TABLE IF NOT EXISTS stream_batches (run_id VARCHAR, as_of DATE, recorded_at TIMESTAMP);
{% if batch %}
INSERT INTO stream_batches
VALUES ({{ run_id | literal }}, DATE '{{ ds }}', CAST(current_timestamp AS TIMESTAMP));
DELETE FROM stream_identifiers s
WHERE EXISTS (
    SELECT 1 FROM {{ rs }}.changed c
    WHERE c.identifier_type = s.identifier_type AND c.identifier_value = s.identifier_value
);
INSERT INTO stream_identifiers
SELECT identifier_type, identifier_value, profile_id, DATE '{{ ds }}', CAST(current_timestamp AS TIMESTAMP)
FROM {{ rs }}.changed;

INSERT INTO stream_shared_sessions
SELECT session_id, DATE '{{ ds }}', CAST(current_timestamp AS TIMESTAMP) FROM {{ rs }}.shared_sessions
WHERE session_id NOT IN (SELECT session_id FROM stream_shared_sessions);

-- The batch's dated files are now held in the warehouse at these versions (setup/tables.sql).
DELETE FROM landed_files l
WHERE EXISTS (SELECT 1 FROM {{ bs }}.batch_files b WHERE b.file = l.file AND b.ds = l.dt);
INSERT INTO landed_files (
    source, dt, file, version, recorded_at, rows_read, rows_valid, rows_quarantined, rows_aged_out
)
SELECT source, ds, file, version, CAST(current_timestamp AS TIMESTAMP),
       rows_read, rows_valid, rows_quarantined, rows_aged_out
FROM {{ bs }}.batch_files WHERE ds IS NOT NULL;

DELETE FROM stream_files f WHERE f.file IN (SELECT file FROM {{ bs }}.batch_files);
INSERT INTO stream_files
SELECT source, file, version, modified, ds, {{ run_id | literal }}, CAST(current_timestamp AS TIMESTAMP)
FROM {{ bs }}.batch_files;
{% endif %}
{% for source, mark in watermarks.items() %}
DELETE FROM stream_watermarks WHERE source = {{ source | literal }};
INSERT INTO stream_watermarks
VALUES ({{ source | literal }}, TIMESTAMP '{{ mark }}', {{ run_id | literal }}, CAST(current_timestamp AS TIMESTAMP));
-- Files this far below the watermark are never listed as candidates again. Kept a day: a daily
-- validate keeps a file's rows when the stream took it after the extract listed (pipeline.validate).
DELETE FROM stream_files
WHERE source = {{ source | literal }} AND modified < TIMESTAMP '{{ floors[source] }}'
  AND processed_at < CAST(current_timestamp AS TIMESTAMP) - INTERVAL '1 day';
{% endfor %}
