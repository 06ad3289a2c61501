-- POST the OAuth password grant; $BENCH_BODY is the form body, already URL-encoded
-- (grant_type=password&username=...&password=...).
local body = os.getenv("BENCH_BODY")
if body == nil or body == "" then
  error("password_grant.lua needs BENCH_BODY")
end
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
