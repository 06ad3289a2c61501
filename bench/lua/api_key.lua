-- GET with "X-API-Key: $BENCH_API_KEY".
local key = os.getenv("BENCH_API_KEY")
if key == nil or key == "" then
  error("api_key.lua needs BENCH_API_KEY")
end
wrk.headers["X-API-Key"] = key
