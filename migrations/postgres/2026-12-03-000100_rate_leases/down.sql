DROP TABLE rate_leases;
