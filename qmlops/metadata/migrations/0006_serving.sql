-- Serving: routing tables per model name, rollouts (a persistent state machine), their events, post-deploy
-- health checks and performance tests, and alert events (monitoring adds rules and channels on top).
CREATE TABLE IF NOT EXISTS routing_tables (
    model           VARCHAR PRIMARY KEY,
    revision        INTEGER NOT NULL,
    salt            VARCHAR NOT NULL,
    sticky_field    VARCHAR NOT NULL,
    entries         JSON NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS rollouts (
    id              VARCHAR PRIMARY KEY,      -- 'ro-' + 12 hex
    model           VARCHAR NOT NULL,
    strategy        VARCHAR NOT NULL,         -- immediate | blue_green | canary | rolling
    from_version    VARCHAR,                  -- model version id serving before (NULL for a first deploy)
    to_version      VARCHAR NOT NULL,
    state           VARCHAR NOT NULL,         -- pending | running | paused | succeeded | rolled_back | failed
    step            INTEGER NOT NULL,
    options         JSON NOT NULL,
    gates           JSON,                     -- last analysis
    reason          VARCHAR,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL,
    step_started_at TIMESTAMP,
    ended_at        TIMESTAMP
);

CREATE TABLE IF NOT EXISTS rollout_events (
    rollout_id      VARCHAR NOT NULL,
    seq             INTEGER NOT NULL,
    ts              TIMESTAMP NOT NULL,
    kind            VARCHAR NOT NULL,
    detail          JSON,
    PRIMARY KEY (rollout_id, seq)
);

CREATE TABLE IF NOT EXISTS deployment_checks (
    id              VARCHAR PRIMARY KEY,
    rollout_id      VARCHAR,
    model_version   VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,         -- health | performance
    ok              BOOLEAN NOT NULL,
    result          JSON NOT NULL,
    ts              TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS alerts (
    id              VARCHAR PRIMARY KEY,
    ts              TIMESTAMP NOT NULL,
    severity        VARCHAR NOT NULL,         -- info | warning | critical
    source          VARCHAR NOT NULL,         -- rollout | drift | latency | ...
    subject         VARCHAR,                  -- model name, rollout id, ...
    message         VARCHAR NOT NULL,
    details         JSON,
    acknowledged_at TIMESTAMP,
    acknowledged_by VARCHAR
);

-- Realised outcomes posted to /v1/feedback, joined to predictions by request_id (online accuracy).
CREATE TABLE IF NOT EXISTS feedback (
    request_id      VARCHAR NOT NULL,
    ts              TIMESTAMP NOT NULL,
    value           DOUBLE NOT NULL
);
