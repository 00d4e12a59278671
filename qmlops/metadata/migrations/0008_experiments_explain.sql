-- Experiments (A/B tests over served model versions) with exposures and business events, and stored global
-- explanations of model versions.
CREATE TABLE IF NOT EXISTS experiments (
    id              VARCHAR PRIMARY KEY,      -- 'ex-' + 12 hex
    name            VARCHAR NOT NULL UNIQUE,
    model           VARCHAR NOT NULL,         -- the served model name whose traffic is split
    layer           VARCHAR NOT NULL,         -- experiments in one layer are mutually exclusive per user
    salt            VARCHAR NOT NULL,
    variants        JSON NOT NULL,            -- [{name, model_version, weight}], the first is the control
    targeting       JSON,                     -- {field: [allowed values]} on request attributes
    metrics         JSON NOT NULL,            -- [{name, kind: proportion|mean|ratio, event, denominator?}]
    traffic         DOUBLE NOT NULL,          -- share of the layer's buckets (0..1]
    state           VARCHAR NOT NULL,         -- draft | running | stopped
    start_at        TIMESTAMP,
    stop_at         TIMESTAMP,
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS exposures (
    experiment_id   VARCHAR NOT NULL,
    unit_id         VARCHAR NOT NULL,
    variant         VARCHAR NOT NULL,
    request_id      VARCHAR,
    ts              TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS experiment_events (
    experiment_id   VARCHAR NOT NULL,
    unit_id         VARCHAR NOT NULL,
    name            VARCHAR NOT NULL,
    value           DOUBLE NOT NULL,
    ts              TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS model_explanations (
    model_version   VARCHAR PRIMARY KEY,
    method          VARCHAR NOT NULL,         -- tree | linear | permutation
    base_value      DOUBLE NOT NULL,
    importance      JSON NOT NULL,            -- {feature: mean |SHAP|}, largest first
    families        JSON,                     -- [{family, shap_share, permutation, ...}]
    rows            INTEGER NOT NULL,
    report_uri      VARCHAR,
    created_at      TIMESTAMP NOT NULL
);
