-- GET with "Authorization: Bearer $BENCH_TOKEN".
local token = os.getenv("BENCH_TOKEN")
if token == nil or token == "" then
  error("bearer.lua needs BENCH_TOKEN")
end
wrk.headers["Authorization"] = "Bearer " .. token
