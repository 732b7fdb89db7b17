-- The review queue, the outcomes and the decisions index (see engine/store/base.py).
-- Times are epoch seconds (DOUBLE PRECISION) on both backends; texts are UTF-8.
-- depends:

CREATE TABLE review_cases (
    order_id TEXT PRIMARY KEY,
    log_seq BIGINT NOT NULL,
    customer_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    opened_at DOUBLE PRECISION NOT NULL,
    amount DOUBLE PRECISION NOT NULL,
    currency TEXT NOT NULL,
    channel TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    path TEXT NOT NULL,
    model_version TEXT NOT NULL,
    triggers TEXT NOT NULL,
    reasons TEXT NOT NULL,
    facts TEXT NOT NULL,
    replay TEXT NOT NULL,
    status TEXT NOT NULL,
    verdict TEXT,
    reviewer TEXT,
    note TEXT,
    resolved_at DOUBLE PRECISION
);
CREATE INDEX review_cases_queue ON review_cases (status, opened_at, order_id);

CREATE TABLE outcomes (
    order_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    is_fraud BOOLEAN NOT NULL,
    known_at DOUBLE PRECISION NOT NULL,
    reviewer TEXT,
    note TEXT,
    reported_at DOUBLE PRECISION NOT NULL,
    matched BOOLEAN NOT NULL,
    PRIMARY KEY (order_id, kind)
);
CREATE INDEX outcomes_known ON outcomes (known_at);

CREATE TABLE decisions (
    order_id TEXT PRIMARY KEY,
    log_seq BIGINT NOT NULL,
    customer_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    amount DOUBLE PRECISION NOT NULL,
    currency TEXT NOT NULL,
    channel TEXT NOT NULL,
    action TEXT NOT NULL,
    path TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    model_version TEXT NOT NULL,
    arm TEXT NOT NULL,
    indexed_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX decisions_indexed ON decisions (indexed_at);

CREATE TABLE store_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
