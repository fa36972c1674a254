-- Leave room on each page so that transitions, which change no indexed column of a running
-- saga, are heap-only updates (no new index entries, pages pruned in place).
ALTER TABLE saga_instance SET (fillfactor = 70);
ALTER TABLE saga_step SET (fillfactor = 70);
