-- wrk script for the inbox list benchmark (scripts/bench-inbox.sh, docs/benchmarks.md): the
-- request is wrk's own (the URL and the -H headers given on the command line); this only counts
-- the responses by status and prints one line at the end, "RESULT {json}" (bench/wrk/result.lua).

package.path = "bench/wrk/?.lua;" .. package.path
local result = require("result")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  result(threads, summary, latency, nil)
end
