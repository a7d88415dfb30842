-- Fixed numbers of the lifecycle service (API.md §6), shared by its parts (lua/sandbox/service.lua).
return {
    PROVISION_WAIT = 120, -- seconds an operation waits for provisioning (§6.2)
    SWEEP_INTERVAL = 30, -- seconds between sweeps (§6.3)
    MAX_TIMER = 86400, -- a timer further out is re-checked after a day
    STORE_RETRY = 5, -- seconds between retries of facts the store refused (sandbox/state.lua)
    -- the server proxy's per-sandbox capability header (§7.3), handed out in endpoint replies
    PROXY_TOKEN_HEADER = "X-OpenSandbox-Proxy-Token",
    -- the egress API (upstream's sidecar port and header; sandbox/egress.lua): the endpoint of this port of a
    -- sandbox with a network policy is served by the server itself
    EGRESS_PORT = 18080,
    EGRESS_AUTH_HEADER = "OPENSANDBOX-EGRESS-AUTH",
    AGENT_PORT = 44772, -- the agent's port, as clients name it in endpoints (§7.1)
    UNAVAILABLE_RETRY = 2, -- seconds between looks at an unreachable runtime while a provisioning waits for it
    LEAD_INTERVAL = 5, -- seconds between leadership checks, with a runtime that elects one (rt:lead)
}
