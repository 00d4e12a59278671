-- Feature sets (named definitions, versioned by content hash) and their materialisations per dataset version.
CREATE TABLE IF NOT EXISTS feature_sets (
    id              VARCHAR PRIMARY KEY,      -- 'fs-' + first 16 hex of the definition's hash
    name            VARCHAR NOT NULL,
    definition      JSON NOT NULL,            -- kind, parameters, label, code version
    feature_names   JSON NOT NULL,
    label_names     JSON NOT NULL,
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS feature_materializations (
    id              VARCHAR PRIMARY KEY,      -- 'fm-' + hash of (dataset id, feature set id)
    dataset_id      VARCHAR NOT NULL,
    feature_set_id  VARCHAR NOT NULL,
    status          VARCHAR NOT NULL,         -- building | complete | failed
    engine          VARCHAR NOT NULL,
    uri             VARCHAR,
    n_rows          BIGINT,
    n_instruments   INTEGER,
    start_date      DATE,
    end_date        DATE,
    compute_seconds DOUBLE,
    computations    INTEGER NOT NULL DEFAULT 0,  -- how many times it was computed (a cache hit adds none)
    error           VARCHAR,
    created_at      TIMESTAMP NOT NULL,
    completed_at    TIMESTAMP,
    UNIQUE (dataset_id, feature_set_id)
);

-- Per-feature reference statistics of a materialisation: the drift reference monitoring compares against.
CREATE TABLE IF NOT EXISTS feature_stats (
    materialization_id VARCHAR NOT NULL,
    feature         VARCHAR NOT NULL,
    position        INTEGER NOT NULL,
    dtype           VARCHAR NOT NULL,
    null_ratio      DOUBLE NOT NULL,
    mean            DOUBLE,
    std             DOUBLE,
    bin_edges       JSON,                     -- quantile (decile) edges
    bin_counts      JSON,                     -- rows per bin
    PRIMARY KEY (materialization_id, feature)
);
