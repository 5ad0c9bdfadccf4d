-- What destinations still owe: every identifier and profile of each pending delete request whose
-- warehouse step is done (suppress requests leave destinations alone).
SELECT r.request_id, r.requested_at, s.identifier_type, s.identifier_value, s.profile_id
FROM erasure_requests r
JOIN erasure_subjects s ON s.request_id = r.request_id
WHERE r.status = 'pending' AND r.type = 'delete'
  AND EXISTS (
      SELECT 1 FROM erasure_log l
      WHERE l.request_id = r.request_id AND l.destination = 'warehouse' AND l.status = 'done'
  )
ORDER BY r.request_id, s.identifier_type, s.identifier_value
