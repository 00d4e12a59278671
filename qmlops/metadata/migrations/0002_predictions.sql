-- The prediction log: the high-volume table, written only through batch appends.
CREATE TABLE IF NOT EXISTS predictions (
    request_id      VARCHAR NOT NULL,
    ts              TIMESTAMP NOT NULL,
    model_name      VARCHAR NOT NULL,
    model_version   INTEGER,
    variant         VARCHAR,
    inputs          JSON,
    input_hash      VARCHAR,
    output          DOUBLE,
    latency_ms      DOUBLE,
    status          VARCHAR NOT NULL
);
