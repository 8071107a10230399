-- Cloudflare accounts (tokens sealed with the master key) and what gatehouse created there
-- for each site, so nothing it made is ever left untracked.
CREATE TABLE cloudflare_accounts (
    name TEXT PRIMARY KEY,
    api_url TEXT NOT NULL,
    token_sealed TEXT NOT NULL,
    token_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE cloudflare_sites (
    agent_id TEXT NOT NULL,
    site TEXT NOT NULL,
    account TEXT NOT NULL,
    zone_id TEXT NOT NULL,
    zone TEXT NOT NULL,
    fqdn TEXT NOT NULL,
    proxied BIGINT NOT NULL,
    -- JSON list of DNS record ids created for the site.
    record_ids TEXT NOT NULL,
    -- JSON list of Origin CA certificate ids issued for the site.
    certificate_ids TEXT NOT NULL,
    -- What the last attempt did: "ready", or the step it stopped at and why.
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, site)
);

-- The name a host has in a Cloudflare zone, shown with the agent.
ALTER TABLE agents ADD COLUMN domain TEXT NOT NULL DEFAULT '';
