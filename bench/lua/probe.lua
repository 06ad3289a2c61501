-- A light latency probe: each connection waits $BENCH_PROBE_DELAY_MS (default 20)
-- between requests, so the probe itself barely loads the server.
local delay_ms = tonumber(os.getenv("BENCH_PROBE_DELAY_MS") or "20")

function delay()
  return delay_ms
end
