-- The end-of-run line both wrk scripts print (bench/wrk/twilio.lua, bench/wrk/list.lua):
-- "RESULT {json}" with the requests completed, seconds, requests per second, latency percentiles
-- in ms, wrk's socket errors and the responses by status (each thread counts its own in a
-- global `statuses` table), then the fields `extra` gives (a JSON fragment, or nil).
return function(threads, summary, latency, extra)
  local by_status = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(by_status) do
    table.insert(parts, string.format('"%s":%d', status, n))
  end
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,' ..
    '"max_ms":%.3f,"mean_ms":%.3f,"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"non_2xx":%d,"statuses":{%s}%s}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000,
    e.connect, e.read, e.write, e.timeout, e.status, table.concat(parts, ","),
    extra and ("," .. extra) or ""))
end
