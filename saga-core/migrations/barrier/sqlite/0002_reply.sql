-- The reply of an action (docs/semantics.md, "The sub-transaction barrier"): the business
-- code's output as JSON text, stored on the `action` row in the same local transaction, so that
-- a repeated action answers with the first call's reply.
-- NULL reads as JSON `null`: rows written before this column existed, replies that encode as
-- `null` (the write is skipped), and the `action` rows of null compensations.
-- Adding a nullable column without a default does not rewrite the table: a running system
-- upgrades in place, and code that names its columns keeps working.
ALTER TABLE saga_barrier ADD COLUMN reply TEXT;
