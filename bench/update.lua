-- wrk script: POST /api/update, a distinct job on every request, one client per job and
-- totalClients=2, so every update creates a job and none ever reaches AGGREGATING.
--   wrk -t1 -c64 -d10s --latency -s bench/update.lua http://127.0.0.1:PORT -- TAG
-- TAG (default "u") goes into every jobId ("b-TAG-<n>") so runs never reuse a job.
-- Meant for -t1: the counter is per wrk thread (with more threads, give each a distinct TAG).

local tag = "u"
local n = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  if args[1] then tag = args[1] end
end

function request()
  n = n + 1
  local body = '{"jobId":"b-' .. tag .. '-' .. n .. '","clientId":"c1","totalClients":2}'
  return wrk.format("POST", "/api/update", headers, body)
end

-- A machine-readable summary, after wrk's own report (latencies in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
