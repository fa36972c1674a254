CREATE TABLE IF NOT EXISTS stock (
    product_id BIGINT NOT NULL PRIMARY KEY,
    stock      BIGINT NOT NULL CHECK (stock >= 0)
);
-- One row once the data set has been seeded, so that a restart never seeds again.
CREATE TABLE IF NOT EXISTS seed_marker (
    id BIGINT NOT NULL PRIMARY KEY
);
