-- Routing: agents, their performance per case category, and routed cases
-- (engine/routing/router.py scores; engine/serving/routing.py serves; engine/store/routing.py stores).
-- Times are epoch seconds; durations are seconds.
-- depends: 0001.initial

CREATE TABLE routing_agents (
    agent_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    team TEXT NOT NULL,
    skills TEXT NOT NULL,          -- JSON object: skill -> level 1..5
    languages TEXT NOT NULL,       -- space-separated ISO 639-1 codes ('' = any)
    capacity INTEGER NOT NULL,     -- cases worked at once
    shift_start INTEGER NOT NULL,  -- minute of the UTC day the shift starts, 0..1439
    shift_end INTEGER NOT NULL,    -- minute it ends, 1..1440 (below start: over midnight)
    shift_days TEXT NOT NULL,      -- 7 characters, Monday first, '1' = works that day
    state TEXT NOT NULL,           -- available | away | offline
    load INTEGER NOT NULL,         -- cases assigned and not completed
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE routing_perf (
    agent_id TEXT NOT NULL,
    category TEXT NOT NULL,
    cases INTEGER NOT NULL,
    sum_log_handle DOUBLE PRECISION NOT NULL,    -- sum of ln(handle seconds / difficulty)
    sumsq_log_handle DOUBLE PRECISION NOT NULL,
    sum_quality DOUBLE PRECISION NOT NULL,       -- quality in [0, 1] per case
    PRIMARY KEY (agent_id, category)
);

CREATE TABLE routing_cases (
    case_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    customer_tier TEXT NOT NULL,      -- new | standard | key ('' unknown)
    customer_orders INTEGER NOT NULL, -- the customer's earlier orders (-1 unknown)
    language TEXT NOT NULL,
    amount DOUBLE PRECISION NOT NULL,
    currency TEXT NOT NULL,
    category TEXT NOT NULL,           -- the skill the case needs (predicted or given)
    confidence DOUBLE PRECISION NOT NULL,
    priority TEXT NOT NULL,           -- low | normal | high | urgent
    source TEXT NOT NULL,             -- order | review (a risk-engine REVIEW case)
    features TEXT NOT NULL,           -- JSON: the order features the handle time was scaled by
    status TEXT NOT NULL,             -- queued | assigned | completed
    agent_id TEXT,                    -- NULL while queued
    queue TEXT NOT NULL,              -- the queue it waits in when no agent was chosen
    agent_experience INTEGER NOT NULL,-- the agent's completed cases in category when assigned
    agent_level INTEGER NOT NULL,     -- the agent's level in category when assigned (0 none)
    predicted_handle_s DOUBLE PRECISION NOT NULL,
    predicted_resolution_s DOUBLE PRECISION NOT NULL,
    sla_s DOUBLE PRECISION NOT NULL,
    reasons TEXT NOT NULL,            -- JSON list of strings
    routes INTEGER NOT NULL,          -- times assigned (above 1: rework or re-routing)
    created_at DOUBLE PRECISION NOT NULL,
    routed_at DOUBLE PRECISION,
    completed_at DOUBLE PRECISION,
    handle_s DOUBLE PRECISION,
    quality DOUBLE PRECISION
);
CREATE INDEX routing_cases_status ON routing_cases (status, created_at, case_id);
CREATE INDEX routing_cases_agent ON routing_cases (agent_id, status);
