-- Runs (training now; tuning trials later) and their per-step metrics, written while the run is going.
CREATE TABLE IF NOT EXISTS runs (
    id              VARCHAR PRIMARY KEY,      -- 'run-' + 16 hex
    kind            VARCHAR NOT NULL,         -- train | tune | trial
    name            VARCHAR,
    model_type      VARCHAR,
    status          VARCHAR NOT NULL,         -- running | finished | failed
    params          JSON,
    config          JSON,                     -- dataset, feature set, segments, early stopping, device, ...
    parent_id       VARCHAR,                  -- a tuning run for its trials
    started_at      TIMESTAMP NOT NULL,
    heartbeat_at    TIMESTAMP,
    ended_at        TIMESTAMP,
    total_steps     INTEGER,                  -- the step budget when known (epochs, boosting rounds)
    best_step       INTEGER,
    stop_reason     VARCHAR,
    stopped_by      VARCHAR,
    metrics         JSON,                     -- final evaluation
    model_version   VARCHAR,
    report_uri      VARCHAR,
    error           VARCHAR,
    host            VARCHAR
);

CREATE TABLE IF NOT EXISTS run_metrics (
    run_id          VARCHAR NOT NULL,
    step            INTEGER NOT NULL,
    ts              TIMESTAMP NOT NULL,
    train_loss      DOUBLE,
    valid_loss      DOUBLE,
    valid_ic        DOUBLE,
    best_step       INTEGER,
    early_stop      JSON,                     -- the early stopper's state after this step
    extra           JSON,
    PRIMARY KEY (run_id, step)
);
