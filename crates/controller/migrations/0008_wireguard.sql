-- WireGuard networks and their peers. Only public keys are kept; a client's preshared key is
-- sealed. The unique keys are the address management: an address is never handed out twice,
-- whichever controller allocates it, and it is free again when its peer's row is deleted.
CREATE TABLE wg_networks (
    name TEXT PRIMARY KEY,
    interface TEXT NOT NULL,
    ipv4 TEXT NOT NULL,
    ipv6 TEXT NOT NULL,
    -- "hub" or "mesh".
    topology TEXT NOT NULL,
    port BIGINT NOT NULL,
    mtu BIGINT NOT NULL,
    -- Space-separated DNS servers for clients.
    dns TEXT NOT NULL,
    keepalive_seconds BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE wg_peers (
    network TEXT NOT NULL,
    -- A host's agent id or a client's name.
    name TEXT NOT NULL,
    -- "host" or "client".
    kind TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    -- "" until a host has reported the key it made.
    public_key TEXT NOT NULL,
    ipv4 TEXT NOT NULL,
    ipv6 TEXT NOT NULL,
    hub BIGINT NOT NULL,
    endpoint TEXT NOT NULL,
    -- A client's preshared key, sealed ("" without one).
    preshared_key TEXT NOT NULL,
    -- 0: no expiry.
    expires_at BIGINT NOT NULL,
    -- Raised to make a host make a new key.
    key_revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (network, name),
    UNIQUE (network, ipv4),
    UNIQUE (network, ipv6)
);

-- A client's key is looked up when another is added (no key twice in a network).
CREATE INDEX wg_peers_key ON wg_peers (network, public_key);
