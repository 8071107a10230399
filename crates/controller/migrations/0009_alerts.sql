-- Alerts the controller's rules raise: one row per rule and label set while it is pending or
-- firing, kept for a while after it resolved.
CREATE TABLE alerts (
    -- SHA-256 (hex) of the rule name and the labels.
    fingerprint TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    -- JSON objects of strings.
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    severity TEXT NOT NULL,
    -- "pending", "firing" or "resolved".
    state TEXT NOT NULL,
    -- When the condition began to hold.
    active_since BIGINT NOT NULL,
    -- 0 while pending.
    fired_at BIGINT NOT NULL,
    -- 0 while the condition holds.
    resolved_at BIGINT NOT NULL,
    -- What the receivers were last told: "", "firing" or "resolved".
    notified TEXT NOT NULL
);

-- Silences: alerts whose labels include every matcher are not sent while one holds.
CREATE TABLE alert_silences (
    id TEXT PRIMARY KEY,
    -- JSON object: label name -> value.
    matchers TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    comment TEXT NOT NULL,
    created_by TEXT NOT NULL
);

-- Notifications not yet delivered, one per receiver and alert (the newest state wins); a row
-- goes once the receiver took it, so nothing is lost across a restart.
CREATE TABLE alert_outbox (
    receiver TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    -- Random, new on each change: a delivery removes only the version it sent.
    version TEXT NOT NULL,
    -- JSON: the alert as it was when queued.
    body TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    queued_at BIGINT NOT NULL,
    PRIMARY KEY (receiver, fingerprint)
);

-- Each host's metrics as reported, sampled, for the status page's charts and the disk-fill
-- prediction; pruned past the configured retention.
CREATE TABLE host_samples (
    agent_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    -- CPU in hundredths of a percent.
    cpu BIGINT NOT NULL,
    memory_used BIGINT NOT NULL,
    memory_total BIGINT NOT NULL,
    -- The fullest filesystem's mount point, free and total bytes.
    disk_mount TEXT NOT NULL,
    disk_free BIGINT NOT NULL,
    disk_total BIGINT NOT NULL,
    PRIMARY KEY (agent_id, at)
);

-- Status page sign-ins: one-time links and the sessions they became (hashes of the secrets).
CREATE TABLE ui_sessions (
    secret_hash TEXT PRIMARY KEY,
    -- "link" (unused one-time link) or "session".
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Each generation's latest result on its host (the host's history on the status page).
CREATE TABLE apply_history (
    agent_id TEXT NOT NULL,
    generation BIGINT NOT NULL,
    at BIGINT NOT NULL,
    -- JSON, as agents.last_apply.
    record TEXT NOT NULL,
    PRIMARY KEY (agent_id, generation)
);
