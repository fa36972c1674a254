CREATE TABLE IF NOT EXISTS payments (
    order_id     TEXT   NOT NULL PRIMARY KEY,
    amount_cents BIGINT NOT NULL,
    status       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
