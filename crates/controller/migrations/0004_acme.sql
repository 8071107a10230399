-- ACME accounts (their keys and EAB secrets sealed with the master key), the orders made for
-- each host's certificate requests, and every DNS-01 TXT record presented, so cleanup survives
-- a crash.
CREATE TABLE acme_accounts (
    name TEXT PRIMARY KEY,
    directory_url TEXT NOT NULL,
    email TEXT NOT NULL,
    -- instant-acme's account credentials (JSON), sealed.
    credentials_sealed TEXT NOT NULL,
    -- The EAB key id, '' without EAB. The HMAC key itself is sealed in eab_hmac_sealed.
    eab_kid TEXT NOT NULL,
    eab_hmac_sealed TEXT NOT NULL,
    -- PEM roots trusted for this CA's API; '' means the system's roots.
    ca_roots TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE acme_orders (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    -- The certificate's name and revision in the host's desired state.
    certificate TEXT NOT NULL,
    revision BIGINT NOT NULL,
    account TEXT NOT NULL,
    -- JSON list of the names, from the controller's own spec.
    domains TEXT NOT NULL,
    -- The host's CSR (base64) and its SHA-256: the same CSR is one order.
    csr TEXT NOT NULL,
    csr_sha256 TEXT NOT NULL,
    -- pending, presenting, validating, finalizing, issued or failed.
    state TEXT NOT NULL,
    order_url TEXT NOT NULL,
    last_error TEXT NOT NULL,
    -- Failed attempts in a row, and when the next one may start.
    failures BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    chain_pem TEXT NOT NULL,
    serial TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    -- When an issued certificate is renewed (0: not decided yet), how that was decided
    -- ("ari" or "lifetime"), and when the CA's renewal information is asked again.
    renew_at BIGINT NOT NULL,
    renewal TEXT NOT NULL,
    recheck_at BIGINT NOT NULL,
    -- 1 once a renewal replaced it.
    superseded BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX acme_orders_by_certificate ON acme_orders (agent_id, certificate, revision);
CREATE INDEX acme_orders_by_state ON acme_orders (state, next_attempt_at);

CREATE TABLE acme_txt_records (
    order_id TEXT NOT NULL,
    cloudflare_account TEXT NOT NULL,
    zone_id TEXT NOT NULL,
    name TEXT NOT NULL,
    content TEXT NOT NULL,
    -- '' until Cloudflare answered: cleanup then finds it by name and content.
    record_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, name, content)
);
