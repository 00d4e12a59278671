-- Model registry: versions, metrics, tags, lifecycle history, aliases with history.
CREATE TABLE IF NOT EXISTS model_versions (
    id              VARCHAR PRIMARY KEY,      -- 'mv-' + 16 hex
    name            VARCHAR NOT NULL,
    version         INTEGER NOT NULL,         -- 1, 2, ... per name
    model_type      VARCHAR NOT NULL,
    flavor          VARCHAR NOT NULL,         -- how the artifact is stored and loaded
    state           VARCHAR NOT NULL,
    params          JSON,
    signature       JSON NOT NULL,            -- inputs (names, dtypes, in order) and output
    environment     JSON,                     -- python and key package versions at training time
    code_version    VARCHAR,
    description     VARCHAR,
    artifact_sha256 VARCHAR NOT NULL,
    artifact_uri    VARCHAR NOT NULL,
    artifact_bytes  BIGINT NOT NULL,
    validation      JSON,                     -- last compatibility report
    created_at      TIMESTAMP NOT NULL,
    created_by      VARCHAR,
    UNIQUE (name, version)
);

CREATE TABLE IF NOT EXISTS model_metrics (
    model_id VARCHAR NOT NULL,
    key      VARCHAR NOT NULL,
    value    DOUBLE,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE IF NOT EXISTS model_tags (
    model_id VARCHAR NOT NULL,
    key      VARCHAR NOT NULL,
    value    VARCHAR NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE IF NOT EXISTS model_transitions (
    model_id   VARCHAR NOT NULL,
    name       VARCHAR NOT NULL,
    version    INTEGER NOT NULL,
    from_state VARCHAR,
    to_state   VARCHAR NOT NULL,
    changed_at TIMESTAMP NOT NULL,
    seq        BIGINT NOT NULL,             -- total order of transitions (timestamps can tie)
    actor      VARCHAR,
    reason     VARCHAR
);

CREATE TABLE IF NOT EXISTS model_aliases (
    name       VARCHAR NOT NULL,
    alias      VARCHAR NOT NULL,
    model_id   VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (name, alias)
);

CREATE TABLE IF NOT EXISTS model_alias_history (
    name     VARCHAR NOT NULL,
    alias    VARCHAR NOT NULL,
    model_id VARCHAR,                        -- NULL when the alias was removed
    action   VARCHAR NOT NULL,               -- set | moved | removed
    changed_at TIMESTAMP NOT NULL,
    seq      BIGINT NOT NULL,
    actor    VARCHAR
);
