-- The per-agent window of DESIGN.md's first sketch: never read or written;
-- replicas share their counts through rate_leases instead.
DROP TABLE rate_windows;
