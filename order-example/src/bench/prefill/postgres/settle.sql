-- After the prefill: the new rows' visibility settled and the planner's statistics taken, as
-- autovacuum leaves a table some time after a large insert.
VACUUM (ANALYZE) saga_instance, saga_step, saga_attempt;
