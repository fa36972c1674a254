-- The id of a payment document (`pay-` and 16 hex digits), made by payCreate and returned as the
-- step's output, so that payCreateRevert can cancel a payment by its id. Documents made before
-- this column get one when they are next created again or captured.
ALTER TABLE payments ADD COLUMN payment_id TEXT;
