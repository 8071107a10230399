-- Cloudflare Tunnels that gatehouse runs on hosts, and what it made for each at Cloudflare:
-- recorded before each next step, so a failure midway is shown and finished by a retry, and a
-- delete removes exactly what was made (and nothing else).
CREATE TABLE tunnels (
    agent_id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- gatehouse's name of the Cloudflare account (its token), and Cloudflare's account id.
    account TEXT NOT NULL,
    cloudflare_account_id TEXT NOT NULL,
    -- Cloudflare's tunnel id; empty until the tunnel exists there.
    tunnel_id TEXT NOT NULL,
    -- The connector's token, sealed with the master key; empty until known.
    token_sealed TEXT NOT NULL,
    -- JSON list of routes: hostname, service and origin options, as asked.
    routes TEXT NOT NULL,
    -- JSON object: hostname -> {zone_id, record_id} of each CNAME gatehouse created.
    records TEXT NOT NULL,
    -- The version Cloudflare gave the last configuration PUT (0: none yet).
    config_version BIGINT NOT NULL,
    -- "ready", or the step the last attempt stopped at and why.
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, name)
);
