CREATE TABLE IF NOT EXISTS coupons (
    coupon_id BIGINT NOT NULL PRIMARY KEY,
    user_id   BIGINT NOT NULL,
    used      BIGINT NOT NULL DEFAULT 0,
    order_id  TEXT
);
