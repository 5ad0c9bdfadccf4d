-- The rejections this run decided: links rejected as of this run's cutoff that were not rejected
-- (by the same rule) as of the previous one. A link landed today appears once, on today's run;
-- an older link that a new conflict cuts appears on the run that cut it. dt is the run's date
-- (the file names the partition the link landed in).
CREATE OR REPLACE TABLE {{ rs }}.identity_link_audit AS
SELECT DATE '{{ ds }}' AS dt, c.rule, c.detail, c.left_type, c.left_value, c.right_type,
       c.right_value, c.observed_at, c.source, c.file, c.line
FROM id_rejected c
WHERE NOT EXISTS (
    SELECT 1 FROM id_rejected_prev p
    WHERE p.rule = c.rule AND coalesce(p.file, '') = coalesce(c.file, '')
      AND coalesce(p.line, -1) = coalesce(c.line, -1)
      AND p.left_type = c.left_type AND p.right_type = c.right_type
      AND coalesce(p.left_value, '') = coalesce(c.left_value, '')
      AND coalesce(p.right_value, '') = coalesce(c.right_value, '')
);
