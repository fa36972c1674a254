-- The payment that paid the order, recorded by orderMarkPaid from the pay saga's capture.
ALTER TABLE orders ADD COLUMN payment_id TEXT;
