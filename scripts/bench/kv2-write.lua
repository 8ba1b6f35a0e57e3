-- wrk script for scripts/bench-kv: KV v2 durable writes, one new key per
-- request so writes do not all contend on one row.
--   wrk ... -H "X-Vault-Token: T" -s scripts/bench/kv2-write.lua URL -- <mount> <prefix>
-- POSTs {"data":{"password":"<32 chars>","user":"app"}} to
-- /v1/<mount>/data/bench/<prefix>-<thread>-<counter>. Counts response
-- statuses per thread; done() prints them to stderr, with the first body
-- of a non-2xx response, as lines starting with "kv2-write:".

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end

local mount, prefix, counter
-- Globals, so that done() can read them with thread:get().
statuses, first_error = {}, ""
local body = '{"data":{"password":"0123456789abcdefghijklmnopqrstuv","user":"app"}}'

function init(args)
  mount = args[1] or "secret"
  prefix = args[2] or "run"
  counter = 0
  statuses = {}
  first_error = ""
  -- wrk.headers holds the -H headers (the token); wrk.format(nil headers) uses it.
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local path = string.format("/v1/%s/data/bench/%s-%d-%d", mount, prefix, tid, counter)
  return wrk.format("POST", path, nil, body)
end

function response(status, headers, resp_body)
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
  if (status < 200 or status > 299) and first_error == "" then
    first_error = k .. " " .. tostring(resp_body)
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses") or {}
    for k, v in pairs(s) do total[k] = (total[k] or 0) + v end
    local e = t:get("first_error")
    if e and e ~= "" then
      io.stderr:write("kv2-write: first error (thread " .. t:get("tid") .. "): " .. e:sub(1, 300) .. "\n")
    end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, k .. "=" .. v) end
  table.sort(parts)
  io.stderr:write("kv2-write: statuses " .. table.concat(parts, " ") .. "\n")
end
