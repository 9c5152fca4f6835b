"""Lua scripts: each runs atomically on the server, so one execution's writes (document,
counters, sketches, job state, live event) happen together or not at all, in one round trip.

Every key a script touches is passed in KEYS. Values that are JSON documents are passed as
JSON text and never re-encoded by Lua's cjson (which cannot tell ``[]`` from ``{}``).
"""

# KEYS[1] job document, KEYS[2] the tenant's job sequence counter.
# ARGV[1] the new document (its created_at/seq are placeholders), ARGV[2] now (ms).
# Keeps created_at and seq of an existing job. Returns 'created' or 'updated'.
UPSERT_JOB = """
local function raw(path)
  local v = redis.call('JSON.GET', KEYS[1], path)
  return string.sub(v, 2, -2)
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local created, seq = raw('$.created_at'), raw('$.seq')
  redis.call('JSON.SET', KEYS[1], '$', ARGV[1])
  redis.call('JSON.MSET', KEYS[1], '$.created_at', created, KEYS[1], '$.seq', seq)
  return 'updated'
end
redis.call('JSON.SET', KEYS[1], '$', ARGV[1])
local seq = redis.call('INCR', KEYS[2])
redis.call('JSON.MSET', KEYS[1], '$.created_at', ARGV[2], KEYS[1], '$.seq', seq)
return 'created'
"""

# KEYS[1] execution document, KEYS[2] job document, KEYS[3] job state document,
# KEYS[4..33] series: for scope in (tenant, job), for metric in (runs, success, failure,
#   dur_sum, dur_n): raw, 1h, 1d;
# KEYS[34..37] sketches: tenant hourly, tenant daily, job hourly, job daily.
# ARGV[1] document JSON, ARGV[2] status, ARGV[3] '1' if terminal, ARGV[4] metric timestamp
# (minute, ms) or '' to count nothing, ARGV[5] success 0/1, ARGV[6] failure 0/1,
# ARGV[7] duration ms or '', ARGV[8] document expire-at ms (0 = never), ARGV[9] channel,
# ARGV[10] the event JSON up to its outcome value (the script appends the outcome),
# ARGV[11] raw retention ms, ARGV[12] the tenant's compaction retention ms, ARGV[13] hourly sketch
# expire-at ms (0 = skip), ARGV[14] daily sketch expire-at ms (0 = skip), ARGV[15] started_at,
# ARGV[16] finished_at or '', ARGV[17] exec id, ARGV[18] the time the run counts as a
# success or failure (finished, else started; ms), ARGV[19] the execution's member in the
# timeouts set, ARGV[20] the trigger id or ''. KEYS[38] the timeouts set.
# KEYS[39] the job's all-time totals (hash), ARGV[21] its duration bucket field or ''.
# KEYS[40] the job's executions by started_at, KEYS[41] the tenant's jobs with executions;
# ARGV[22] the execution's member there (enc(exec id)), ARGV[23] enc(job id), ARGV[24] the
# tenant's cap of executions per job (0 = none), ARGV[25] the tenant's execution key prefix
# (a member appended to it is the key of that execution's document).
# Returns 'created', 'updated' or 'duplicate'.
WRITE_EXECUTION = """
local outcome = 'created'
local prev = redis.call('JSON.GET', KEYS[1], '$.status')
if prev then
  if cjson.decode(prev)[1] ~= 'running' or ARGV[3] ~= '1' then return 'duplicate' end
  outcome = 'updated'
end
redis.call('JSON.SET', KEYS[1], '$', ARGV[1])
if ARGV[8] ~= '0' then redis.call('PEXPIREAT', KEYS[1], ARGV[8])
else redis.call('PERSIST', KEYS[1]) end

-- Past the cap, the job's oldest records go, a few a write (retention.TRIM_PER_WRITE), but
-- never the one written now (an old record arriving late stays until the next write or
-- sweep): a lowered cap converges through the sweep, not in one long script.
if redis.call('ZADD', KEYS[40], ARGV[15], ARGV[22]) == 1 then
  redis.call('SADD', KEYS[41], ARGV[23])
end
local cap = tonumber(ARGV[24])
if cap > 0 then
  local excess = math.min(redis.call('ZCARD', KEYS[40]) - cap, 3)
  if excess > 0 then
    for _, member in ipairs(redis.call('ZRANGE', KEYS[40], 0, excess - 1)) do
      if member ~= ARGV[22] then
        redis.call('ZREM', KEYS[40], member)
        redis.call('DEL', ARGV[25] .. member)  -- its search index entry goes with it
      end
    end
  end
end

-- A running execution of a job with a max runtime gets a deadline; a final status clears it.
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[38], ARGV[19])
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  local limit = cjson.decode(redis.call('JSON.GET', KEYS[2], '$.max_runtime_seconds'))[1]
  if limit ~= nil and limit ~= cjson.null then
    redis.call('ZADD', KEYS[38], tonumber(ARGV[15]) + limit * 1000, ARGV[19])
  end
end

if ARGV[3] == '1' and ARGV[4] ~= '' then
  local values = {1, tonumber(ARGV[5]), tonumber(ARGV[6]), 0, 0}
  if ARGV[7] ~= '' then values[4] = tonumber(ARGV[7]); values[5] = 1 end
  for scope = 0, 1 do
    -- A scope's 15 series are created together, here, so its first one stands for all.
    local first = 4 + scope * 15
    local create = redis.call('EXISTS', KEYS[first]) == 0
    for m = 1, 5 do
      local i = first + (m - 1) * 3
      if create then
        redis.call('TS.CREATE', KEYS[i], 'RETENTION', ARGV[11], 'DUPLICATE_POLICY', 'SUM')
        for j = 1, 2 do
          if redis.call('EXISTS', KEYS[i + j]) == 0 then
            redis.call('TS.CREATE', KEYS[i + j], 'RETENTION', ARGV[12],
                       'DUPLICATE_POLICY', 'SUM')
          end
        end
        redis.call('TS.CREATERULE', KEYS[i], KEYS[i + 1], 'AGGREGATION', 'sum', 3600000)
        redis.call('TS.CREATERULE', KEYS[i], KEYS[i + 2], 'AGGREGATION', 'sum', 86400000)
      end
      if values[m] ~= 0 then
        redis.call('TS.ADD', KEYS[i], ARGV[4], values[m], 'ON_DUPLICATE', 'SUM')
      end
    end
  end
  if ARGV[7] ~= '' then
    local expire = {ARGV[13], ARGV[14], ARGV[13], ARGV[14]}
    for s = 1, 4 do
      local k = KEYS[33 + s]
      if expire[s] ~= '0' then
        if redis.call('EXISTS', k) == 0 then
          redis.call('TDIGEST.CREATE', k, 'COMPRESSION', 200)
          redis.call('PEXPIREAT', k, expire[s])
        end
        redis.call('TDIGEST.ADD', k, ARGV[7])
      end
    end
  end
end

-- The job's all-time totals (Prometheus counters): every record's first terminal status,
-- whenever it ran; kept while the job runs at least once per compaction retention.
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[39], 'runs', 1)
  redis.call('HINCRBY', KEYS[39], 'status:' .. ARGV[2], 1)
  if ARGV[21] ~= '' then
    redis.call('HINCRBYFLOAT', KEYS[39], 'dur_sum', ARGV[7])
    redis.call('HINCRBY', KEYS[39], 'dur_n', 1)
    redis.call('HINCRBY', KEYS[39], ARGV[21], 1)
  end
  redis.call('PEXPIRE', KEYS[39], ARGV[12])
end

local function num(v) if v == nil or v == cjson.null then return nil end return v end
if ARGV[20] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  -- A run carrying the job's latest trigger has started: the job is not late.
  local stored = redis.call('JSON.GET', KEYS[3], '$')
  local state = stored and cjson.decode(stored)[1] or {}
  if state['last_trigger_id'] == ARGV[20] and num(state['last_trigger_started_at']) == nil then
    state['last_trigger_started_at'] = tonumber(ARGV[15])
    redis.call('JSON.SET', KEYS[3], '$', cjson.encode(state))
  end
end
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  local stored = redis.call('JSON.GET', KEYS[3], '$')
  local state = stored and cjson.decode(stored)[1] or {}
  local started, at = tonumber(ARGV[15]), tonumber(ARGV[18])
  local last = num(state['last_started_at'])
  if last == nil or started >= last then
    state['last_exec_id'] = ARGV[17]
    state['last_status'] = ARGV[2]
    state['last_started_at'] = started
    state['last_finished_at'] = ARGV[16] ~= '' and tonumber(ARGV[16]) or cjson.null
    state['last_duration_ms'] = ARGV[7] ~= '' and tonumber(ARGV[7]) or cjson.null
  end
  if ARGV[5] == '1' and (num(state['last_success_at']) or -1) < at then
    state['last_success_at'] = at
  end
  if ARGV[6] == '1' and (num(state['last_failure_at']) or -1) < at then
    state['last_failure_at'] = at
  end
  redis.call('JSON.SET', KEYS[3], '$', cjson.encode(state))
end

redis.call('PUBLISH', ARGV[9], ARGV[10] .. outcome .. '"}}')
return outcome
"""

# KEYS[1] a job's executions by started_at (see WRITE_EXECUTION). ARGV[1] the tenant's
# execution key prefix, ARGV[2] its cap (0 = none), ARGV[3] cutoff: records that started before
# it are past retention ('' = none), ARGV[4] most members to remove, ARGV[5] the grace of a
# record that arrived late (ms): past the cutoff with at most that left to live, it is left to
# expire. Documents go with their members; members of expired documents are just dropped.
# Builds document keys from members (same tenant, same key prefix), hence not all in KEYS.
# Returns how many members it removed.
SWEEP_EXECUTIONS = """
local budget, removed = tonumber(ARGV[4]), 0
local cap = tonumber(ARGV[2])
if cap > 0 then
  local excess = math.min(redis.call('ZCARD', KEYS[1]) - cap, budget)
  if excess > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[1], excess)
    for i = 1, #popped, 2 do redis.call('DEL', ARGV[1] .. popped[i]) end
    removed = excess
  end
end
if ARGV[3] ~= '' and removed < budget then
  local old = redis.call('ZRANGE', KEYS[1], '-inf', '(' .. ARGV[3], 'BYSCORE',
                         'LIMIT', 0, budget - removed)
  for _, member in ipairs(old) do
    local key = ARGV[1] .. member
    local left = redis.call('PTTL', key)
    if left == -1 or left > tonumber(ARGV[5]) then redis.call('DEL', key) end
    redis.call('ZREM', KEYS[1], member)
  end
  removed = removed + #old
end
return removed
"""

# KEYS[1] scratch key, then the sketches in groups. ARGV[1] the number of quantiles n,
# ARGV[2..n+1] the quantiles, then per group its size and an expiry (epoch ms). A group of
# one is a sketch, used if it exists. A larger group is a week: its weekly sketch, used if it
# exists, else made (and kept until the expiry) from those of its daily sketches that exist.
# Merges the sketches found and answers the quantiles; nil when there are none.
QUANTILES = """
-- Merged sketches get the default compression (100) rather than the sources' 200: merging
-- and reading them costs half, for p50/p95/p99 well within a percent.
local function merge(destination, sources)
  local args = {'TDIGEST.MERGE', destination, #sources}
  for _, source in ipairs(sources) do args[#args + 1] = source end
  args[#args + 1] = 'COMPRESSION'
  args[#args + 1] = 100
  redis.call(unpack(args))
end
local n = tonumber(ARGV[1])
local quantiles = {}
for i = 2, n + 1 do quantiles[#quantiles + 1] = ARGV[i] end
local present = {}
local k = 2
for g = n + 2, #ARGV, 2 do
  local size = tonumber(ARGV[g])
  if redis.call('EXISTS', KEYS[k]) == 1 then
    present[#present + 1] = KEYS[k]
  elseif size > 1 then
    local days = {}
    for j = k + 1, k + size - 1 do
      if redis.call('EXISTS', KEYS[j]) == 1 then days[#days + 1] = KEYS[j] end
    end
    if #days > 0 then
      merge(KEYS[k], days)
      redis.call('PEXPIREAT', KEYS[k], ARGV[g + 1])
      present[#present + 1] = KEYS[k]
    end
  end
  k = k + size
end
if #present == 0 then return nil end
local source = present[1]
if #present > 1 then
  merge(KEYS[1], present)
  redis.call('PEXPIRE', KEYS[1], 60000)
  source = KEYS[1]
end
local result = redis.call('TDIGEST.QUANTILE', source, unpack(quantiles))
-- RedisBloom 2.8 answers nan for every quantile of a one-observation sketch; when all
-- observations are equal (min == max), that value is every quantile.
local low, high = redis.call('TDIGEST.MIN', source), redis.call('TDIGEST.MAX', source)
if low ~= 'nan' and low == high then
  for i = 1, #result do result[i] = low end
end
if #present > 1 then redis.call('DEL', KEYS[1]) end
return result
"""

# KEYS: per job, per metric, one series per resolution used (ARGV[1] of them).
# ARGV[1] resolutions per metric, then per segment: the resolution's index (1-based), from,
# to (inclusive), '1' to add LATEST (a compaction's still-open bucket).
# Returns, per key group (job and metric), the sum of its samples over every segment; a
# series that does not exist counts zero.
TOTALS = """
local per = tonumber(ARGV[1])
local segments = {}
for i = 2, #ARGV, 4 do
  segments[#segments + 1] = {tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3] == '1'}
end
local out = {}
for base = 0, #KEYS - 1, per do
  local total = 0
  for _, s in ipairs(segments) do
    local width = tonumber(s[3]) - tonumber(s[2]) + 1
    local reply
    if s[4] then
      reply = redis.pcall('TS.RANGE', KEYS[base + s[1]], s[2], s[3], 'LATEST',
                          'ALIGN', '-', 'AGGREGATION', 'sum', width)
    else
      reply = redis.pcall('TS.RANGE', KEYS[base + s[1]], s[2], s[3],
                          'ALIGN', '-', 'AGGREGATION', 'sum', width)
    end
    if reply.err then
      if not string.find(string.lower(reply.err), 'does not exist') then return reply end
    else
      for _, sample in ipairs(reply) do
        local value = sample[2]  -- a status reply ({ok = '1.5'}) in RESP2
        if type(value) == 'table' then value = value.ok or value.double end
        total = total + tonumber(value)
      end
    end
  end
  out[#out + 1] = string.format('%.17g', total)
end
return out
"""

# KEYS[1] trigger record, KEYS[2] trigger stream, KEYS[3] the job's trigger list,
# KEYS[4] deadlines set, KEYS[5] job document, KEYS[6] job state.
# ARGV[1] record JSON, ARGV[2] trigger id, ARGV[3] scheduled for (ms), ARGV[4] deadline (ms),
# ARGV[5] deadlines member, ARGV[6] fired at (ms), ARGV[7] record TTL ms, ARGV[8] payload.
# Returns 1 if queued now, 0 if this trigger was queued before.
ENQUEUE_TRIGGER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.pcall('XGROUP', 'CREATE', KEYS[2], 'runners', '0', 'MKSTREAM')  -- exists: fine
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'p', ARGV[8])
redis.call('JSON.SET', KEYS[1], '$', ARGV[1])
redis.call('JSON.SET', KEYS[1], '$.ref', cjson.encode(id))
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -101)
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
if redis.call('EXISTS', KEYS[5]) == 1 then
  local stored = redis.call('JSON.GET', KEYS[6], '$')
  local state = stored and cjson.decode(stored)[1] or {}
  state['last_trigger_id'] = ARGV[2]
  state['last_fired_at'] = tonumber(ARGV[6])
  state['last_trigger_started_at'] = cjson.null
  redis.call('JSON.SET', KEYS[6], '$', cjson.encode(state))
end
return 1
"""

# KEYS[1] the schedule. ARGV[1] member, ARGV[2] expected score, ARGV[3] new score or ''.
ADVANCE_FIRE = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[1])
else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end
return 1
"""
