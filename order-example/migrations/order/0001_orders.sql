CREATE TABLE IF NOT EXISTS orders (
    order_id      TEXT   NOT NULL PRIMARY KEY,
    user_id       BIGINT NOT NULL,
    product_id    BIGINT NOT NULL,
    product_count BIGINT NOT NULL,
    amount_cents  BIGINT NOT NULL,
    coupon_id     BIGINT,
    status        TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
