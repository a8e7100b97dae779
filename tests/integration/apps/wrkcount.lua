-- wrk script for the web keep-alive test: counts every response that is
-- not 2xx (wrk's own status count only covers >= 400), announces each
-- thread once it has had 100 responses (so all its connections were made
-- and accepted), and prints one summary line at the end (wrk prints it on
-- SIGINT too).
local threads = {}
local count = 0

function setup(thread)
  count = count + 1
  thread:set("id", count)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  responses = 0
  announced = false
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  if not announced and responses >= 100 then
    announced = true
    io.write(string.format("WRK THREAD READY %d\n", id))
    io.flush()
  end
end

function done(summary, latency, requests)
  local bad, seen = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
    seen = seen + t:get("responses")
  end
  io.write(string.format(
    "WRKRESULT requests=%d responses=%d non2xx=%d connect=%d read=%d write=%d status=%d timeout=%d bytes=%d\n",
    summary.requests, seen, bad, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout, summary.bytes))
  io.flush()
end
