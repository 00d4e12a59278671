-- Monitoring: the prediction log learns which registry version and gateway replica answered; drift reports;
-- alert rules, channels and deduplication; resource samples per node; the job admission queue; training-data
-- reference statistics stored with each model version; prediction-log loss after a replica was killed.
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS model_id VARCHAR;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS replica VARCHAR;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS seq BIGINT;

CREATE TABLE IF NOT EXISTS prediction_log_loss (
    replica         VARCHAR PRIMARY KEY,      -- the gateway replica whose buffer was lost
    answered        BIGINT NOT NULL,          -- predictions it answered in its lifetime
    flushed         BIGINT NOT NULL,          -- of which reached the log
    lost            BIGINT NOT NULL,
    detected_at     TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS model_references (
    model_version   VARCHAR PRIMARY KEY,      -- registry version id
    source          VARCHAR NOT NULL,         -- 'train_segment' or 'materialization'
    stats           JSON NOT NULL,            -- [{feature, position, mean, std, bin_edges, bin_counts, ...}]
    prediction      JSON,                     -- the same statistics of the model's training-segment predictions
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS drift_reports (
    id              VARCHAR PRIMARY KEY,
    ts              TIMESTAMP NOT NULL,
    model_name      VARCHAR NOT NULL,
    model_version   VARCHAR NOT NULL,
    n_rows          BIGINT NOT NULL,
    drift_share     DOUBLE NOT NULL,
    drifted         JSON NOT NULL,            -- names of features drifted after correction
    prediction      JSON,                     -- the prediction's own verdict
    report          JSON NOT NULL             -- the full DriftReport
);

CREATE TABLE IF NOT EXISTS alert_rules (
    name            VARCHAR PRIMARY KEY,
    metric          VARCHAR NOT NULL,
    comparator      VARCHAR NOT NULL,         -- > >= < <= == !=
    threshold       DOUBLE NOT NULL,
    window_s        DOUBLE NOT NULL,
    severity        VARCHAR NOT NULL,
    cooldown_s      DOUBLE NOT NULL,
    subject         VARCHAR,                  -- only this subject (model name, node id), or every subject
    enabled         BOOLEAN NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS alert_channels (
    name            VARCHAR PRIMARY KEY,
    kind            VARCHAR NOT NULL,         -- webhook | email | websocket | log
    config          JSON NOT NULL,
    min_severity    VARCHAR NOT NULL,
    enabled         BOOLEAN NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);

ALTER TABLE alerts ADD COLUMN IF NOT EXISTS rule VARCHAR;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS dedup_key VARCHAR;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS repeats INTEGER DEFAULT 0;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS last_seen TIMESTAMP;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS deliveries JSON;

CREATE TABLE IF NOT EXISTS resource_samples (
    ts              TIMESTAMP NOT NULL,
    node_id         VARCHAR NOT NULL,
    hostname        VARCHAR,
    cpu_percent     DOUBLE,
    memory_percent  DOUBLE,
    memory_used     BIGINT,
    disk_percent    DOUBLE,
    net_sent        BIGINT,
    net_recv        BIGINT,
    gpus            JSON                      -- [] without a GPU, else per GPU utilisation, memory, temperature
);

CREATE TABLE IF NOT EXISTS job_queue (
    id              VARCHAR PRIMARY KEY,      -- also the Ray Jobs submission id once admitted
    name            VARCHAR NOT NULL,
    entrypoint      VARCHAR NOT NULL,
    num_cpus        DOUBLE NOT NULL,
    num_gpus        DOUBLE NOT NULL,
    memory          BIGINT NOT NULL,
    priority        INTEGER NOT NULL,
    state           VARCHAR NOT NULL,         -- queued | admitted | running | succeeded | failed | stopped | cancelled
    runtime_env     JSON,
    submitted_at    TIMESTAMP NOT NULL,
    admitted_at     TIMESTAMP,
    ended_at        TIMESTAMP,
    message         VARCHAR
);
