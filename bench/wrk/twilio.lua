-- wrk script for the webhook ingest benchmark (scripts/bench-inbox.sh, docs/benchmarks.md):
-- posts signed Twilio webhooks, each request a different message.
--
--   wrk -t2 -c64 -d20s --latency -s bench/wrk/twilio.lua http://127.0.0.1:8080 -- \
--       /tmp/bodies /webhooks/twilio/1
--
-- wrk's LuaJIT has no HMAC, so the requests are signed beforehand
-- (crates/runtime/examples/inbox_bench.rs `sign`): thread N reads its own file, BODIES.N, one
-- request a line, "<X-Twilio-Signature>\t<form body>", and never sends a line twice. A thread
-- that runs out of lines sends unsigned requests (refused with 403) and counts them as
-- `exhausted`: the run is then too long for the file and its figures are not to be used.
--
-- At the end it prints one line, "RESULT {json}": requests completed, seconds, requests per
-- second, latency percentiles in ms, wrk's socket errors, the responses by status and the
-- requests sent (sent - completed = still in flight when wrk stopped).

package.path = "bench/wrk/?.lua;" .. package.path
local result = require("result")

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local prefix, target = args[1], args[2]
  if not prefix or not target then
    error("usage: -- BODIES_PREFIX PATH")
  end
  file = assert(io.open(prefix .. "." .. id, "r"))
  path = target
  sent = 0
  exhausted = 0
  statuses = {}
end

function request()
  sent = sent + 1
  local line = file:read("*l")
  if not line then
    exhausted = exhausted + 1
    return wrk.format("POST", path, { ["Content-Type"] = "application/x-www-form-urlencoded" }, "")
  end
  local tab = line:find("\t", 1, true)
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Twilio-Signature"] = line:sub(1, tab - 1),
  }, line:sub(tab + 1))
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local sent_total, exhausted_total = 0, 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
    exhausted_total = exhausted_total + thread:get("exhausted")
  end
  result(threads, summary, latency,
    string.format('"sent":%d,"exhausted":%d', sent_total, exhausted_total))
end
