-- wrk script for GET /memes (used by benchmarks/http_bench.py).
--
--   wrk -t2 -c32 -d30s -s benchmarks/memes.lua http://127.0.0.1:8000 -- keys.txt
--
-- keys.txt holds one API key per line; requests rotate over them (Authorization:
-- Bearer <key>), with random lat/lon and a query from a small list. Without a keys
-- file no Authorization header is sent (the bare baseline does not check it).
-- done() prints p50/p90/p95/p99, the count per HTTP status, socket errors, and one
-- machine-readable line starting with WRK_JSON.

local threads = {}

local queries = {
  "food", "cats", "dogs", "monday", "coffee", "kafka", "rain", "pizza",
  "deadline", "weekend", "exactly once", "tokens",
}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  keys = {}
  if args[1] then
    for line in io.lines(args[1]) do
      if #line > 0 then
        keys[#keys + 1] = line
      end
    end
  end
  statuses = {}
  counter = thread_no * 7919 -- threads start at different keys
  math.randomseed(thread_no)
end

function request()
  counter = counter + 1
  local lat = math.random() * 180 - 90
  local lon = math.random() * 360 - 180
  local query = queries[math.random(#queries)]:gsub(" ", "%%20")
  local path = string.format("/memes?lat=%.6f&lon=%.6f&query=%s", lat, lon, query)
  local headers = {}
  if #keys > 0 then
    headers["Authorization"] = "Bearer " .. keys[(counter % #keys) + 1]
  end
  return wrk.format("GET", path, headers)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local by_status = {}
  local non_2xx = 0
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for status, n in pairs(counts) do
      by_status[status] = (by_status[status] or 0) + n
      if status < 200 or status > 299 then
        non_2xx = non_2xx + n
      end
    end
  end
  local seconds = summary.duration / 1e6
  local e = summary.errors
  local p = {}
  for _, q in ipairs({ 50, 90, 95, 99 }) do
    p[q] = latency:percentile(q) / 1000
  end
  io.write(string.format("requests %d in %.1f s: %.1f requests/s\n",
    summary.requests, seconds, summary.requests / seconds))
  io.write(string.format("latency ms: p50 %.2f  p90 %.2f  p95 %.2f  p99 %.2f  max %.2f\n",
    p[50], p[90], p[95], p[99], latency.max / 1000))
  local parts = {}
  for status, n in pairs(by_status) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  io.write(string.format("non-2xx responses: %d; by status: {%s}\n", non_2xx,
    table.concat(parts, ", ")))
  io.write(string.format("socket errors: connect %d, read %d, write %d, timeout %d\n",
    e.connect, e.read, e.write, e.timeout))
  io.write(string.format(
    'WRK_JSON {"requests": %d, "seconds": %.3f, "rps": %.2f, "p50_ms": %.3f, ' ..
    '"p90_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "mean_ms": %.3f, ' ..
    '"non_2xx": %d, "status": {%s}, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d}}\n',
    summary.requests, seconds, summary.requests / seconds, p[50], p[90], p[95], p[99],
    latency.max / 1000, latency.mean / 1000, non_2xx, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout))
end
