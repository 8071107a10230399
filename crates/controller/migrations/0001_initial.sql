-- The first schema. Portable between SQLite and PostgreSQL: TEXT and BIGINT only, times are
-- Unix seconds (audit: milliseconds), flags are nullable timestamps.

CREATE TABLE kv (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    labels TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    used_by TEXT,
    revoked_at BIGINT
);

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    labels TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    revoked_at BIGINT,
    cert_serial TEXT NOT NULL,
    cert_not_after BIGINT NOT NULL,
    last_seen_at BIGINT,
    applied_generation BIGINT NOT NULL DEFAULT 0,
    version TEXT NOT NULL DEFAULT '',
    facts TEXT NOT NULL DEFAULT ''
);

CREATE TABLE desired_states (
    agent_id TEXT NOT NULL REFERENCES agents (id),
    generation BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, generation)
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    last_used_at BIGINT
);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
);

CREATE INDEX audit_log_at ON audit_log (at_ms);
