-- Dynamic IP allowlists: devices check in with their own token and their address is allowed
-- until their last check-in plus the list's TTL; fixed entries stay until they expire.
CREATE TABLE allowlists (
    name TEXT PRIMARY KEY,
    ttl_seconds BIGINT NOT NULL,
    -- Where it is mirrored at Cloudflare: "", "rules", "gateway" or "both".
    cloudflare TEXT NOT NULL,
    -- gatehouse's name of the Cloudflare account ("" without Cloudflare).
    account TEXT NOT NULL,
    -- 1: loopback, private, CGNAT and link-local sources are accepted (tests, LAN-only lists).
    allow_private BIGINT NOT NULL,
    -- The prefix an IPv6 check-in is kept as (64 for Cloudflare lists).
    ipv6_prefix BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE allowlist_devices (
    id TEXT PRIMARY KEY,
    list TEXT NOT NULL,
    name TEXT NOT NULL,
    -- SHA-256 of the check-in token's secret.
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- 0 while the device may check in.
    revoked_at BIGINT NOT NULL,
    UNIQUE (list, name)
);

-- Each address a device checked in from: the entry lives until last_at + the list's TTL.
CREATE TABLE allowlist_sightings (
    device_id TEXT NOT NULL,
    cidr TEXT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, cidr)
);

-- Entries an operator added (an office); expires_at 0: until removed.
CREATE TABLE allowlist_entries (
    list TEXT NOT NULL,
    cidr TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (list, cidr)
);
