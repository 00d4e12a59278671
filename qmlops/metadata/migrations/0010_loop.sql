-- The daily loop: its runs, every stage of every day (so a restarted loop resumes at the first unfinished
-- stage), the universe's predictions per model version and day, matured online metrics, and decisions.
CREATE TABLE IF NOT EXISTS loops (
    id              VARCHAR PRIMARY KEY,      -- the loop's name
    dataset         VARCHAR NOT NULL,         -- the loop's own dataset name (versions appended per day)
    source          VARCHAR,                  -- replay: the stored dataset version the days come from
    mode            VARCHAR NOT NULL,         -- replay | live
    policy          JSON NOT NULL,
    model           VARCHAR NOT NULL,         -- registry model name of its versions
    state           VARCHAR NOT NULL,         -- running | stopping | stopped | finished | failed
    production      VARCHAR,                  -- model version id in production
    last_day        DATE,                     -- the last day whose every stage is done
    error           VARCHAR,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS loop_steps (
    loop_id         VARCHAR NOT NULL,
    day             DATE NOT NULL,
    stage           VARCHAR NOT NULL,         -- ingest | features | score | mature | watch | retrain | verdict
    status          VARCHAR NOT NULL,         -- done
    details         JSON,
    seconds         DOUBLE,
    ts              TIMESTAMP NOT NULL,
    PRIMARY KEY (loop_id, day, stage)
);

CREATE TABLE IF NOT EXISTS loop_predictions (
    loop_id         VARCHAR NOT NULL,
    day             DATE NOT NULL,
    instrument      VARCHAR NOT NULL,
    model_version   VARCHAR NOT NULL,
    role            VARCHAR NOT NULL,         -- production | shadow
    score           DOUBLE,
    PRIMARY KEY (loop_id, day, instrument, model_version)
);

CREATE TABLE IF NOT EXISTS loop_metrics (
    loop_id         VARCHAR NOT NULL,
    day             DATE NOT NULL,            -- the prediction day whose label has matured
    model_version   VARCHAR NOT NULL,         -- a version id, or 'oracle' for the market's true signal
    role            VARCHAR NOT NULL,
    ic              DOUBLE,
    rank_ic         DOUBLE,
    long_short      DOUBLE,
    n               INTEGER NOT NULL,
    PRIMARY KEY (loop_id, day, model_version)
);

CREATE TABLE IF NOT EXISTS loop_decisions (
    id              VARCHAR PRIMARY KEY,
    loop_id         VARCHAR NOT NULL,
    day             DATE NOT NULL,
    kind            VARCHAR NOT NULL,         -- retrain | shadow | promote | archive | alert | drift
    model_version   VARCHAR,
    reason          VARCHAR NOT NULL,
    details         JSON,
    ts              TIMESTAMP NOT NULL
);
