-- wrk script: GET /api/job-status/{jobId} over jobs that exist: "s-1" .. "s-COUNT", round robin.
--   wrk -t1 -c64 -d10s --latency -s bench/status.lua http://127.0.0.1:PORT -- COUNT
-- The driver (bench/run.py) creates those jobs in Redis before running this.

local count = 1000
local n = 0

function init(args)
  if args[1] then count = tonumber(args[1]) end
end

function request()
  n = n + 1
  return wrk.format("GET", "/api/job-status/s-" .. ((n - 1) % count + 1))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
