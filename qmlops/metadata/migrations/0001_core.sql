-- Data versions and the lineage graph.
CREATE TABLE IF NOT EXISTS datasets (
    id              VARCHAR PRIMARY KEY,      -- 'ds-' + first 16 hex of content_hash
    name            VARCHAR NOT NULL,
    source          VARCHAR NOT NULL,         -- sp500 | bokeh5 | csv:<path> | parquet:<path> | synthetic
    content_hash    VARCHAR NOT NULL,
    uri             VARCHAR NOT NULL,         -- Parquet of the canonical long table
    n_rows          BIGINT NOT NULL,
    n_instruments   INTEGER NOT NULL,
    start_date      DATE,
    end_date        DATE,
    columns         JSON NOT NULL,
    n_quarantined   BIGINT NOT NULL DEFAULT 0,
    quarantine_uri  VARCHAR,
    parent_id       VARCHAR,                  -- previous version of the same name, if any
    diff            JSON,                     -- summary against parent_id
    config          JSON,                     -- how it was ingested (source options, column mapping)
    created_at      TIMESTAMP NOT NULL,
    created_by      VARCHAR
);
CREATE UNIQUE INDEX IF NOT EXISTS datasets_content_hash ON datasets(content_hash);

CREATE TABLE IF NOT EXISTS lineage_nodes (
    id          VARCHAR PRIMARY KEY,          -- the id of the thing itself (dataset version id, ...)
    kind        VARCHAR NOT NULL,             -- dataset | feature_set | model_version | tuning_run | deployment
    label       VARCHAR,
    created_at  TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS lineage_edges (
    src         VARCHAR NOT NULL,
    dst         VARCHAR NOT NULL,
    relation    VARCHAR NOT NULL,             -- e.g. derived_from, materialized_from, trained_on
    config      JSON,                         -- the producing configuration
    created_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (src, dst, relation)
);
