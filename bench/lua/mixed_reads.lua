-- GET as many users, round-robin: every request carries the next user's bearer token.
-- $BENCH_USERS_FILE has one user a line, "<path> <access token>" (run.py writes it), so
-- each server is read at its own path (/t/<slug>/users/me, /users/me). At the end it
-- prints how many requests went out over how many users, which the runner parses: a
-- run that did not rotate shows it.
local file = os.getenv("BENCH_USERS_FILE")
if file == nil or file == "" then
  error("mixed_reads.lua needs BENCH_USERS_FILE")
end

requests = {}
loaded = 0 -- globals, so that done() can read them from the thread
sent = 0

-- In init, not at load: wrk.format takes the Host header from wrk.headers, which wrk
-- fills in just before init runs.
function init(args)
  for line in io.lines(file) do
    local path, token = line:match("^(%S+)%s+(%S+)$")
    if path ~= nil then
      -- A fresh table per request: wrk.format adds Host and Content-Length to it.
      requests[#requests + 1] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
    end
  end
  loaded = #requests
  if loaded == 0 then
    error("mixed_reads.lua: no users in " .. file)
  end
end

function request()
  sent = sent + 1
  return requests[(sent - 1) % #requests + 1]
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, reqs)
  local total, users = 0, 0
  for _, thread in ipairs(threads) do
    local n = thread:get("sent")
    total = total + n
    users = math.max(users, math.min(n, thread:get("loaded")))
  end
  io.write(string.format("round-robin: %d requests over %d users\n", total, users))
end
