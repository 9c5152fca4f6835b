"""Lua scripts: each runs atomically on the server, so one execution's writes (document,
counters, sketches, job state, live event) happen together or not at all, in one round trip.

Every key a script touches is passed in KEYS. Values that are JSON documents are passed as
JSON text and never re-encoded by Lua's cjson (which cannot tell ``[]`` from ``{}``).
"""

# KEYS[1] job document, KEYS[2] the tenant's job sequence counter.
# ARGV[1] the new document (its created_at/seq/state are placeholders), ARGV[2] now (ms).
# Keeps created_at, seq and state of an existing job. Returns 'created' or 'updated'.
UPSERT_JOB = """
local function raw(path)
  local v = redis.call('JSON.GET', KEYS[1], path)
  return string.sub(v, 2, -2)
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local created, seq, state = raw('$.created_at'), raw('$.seq'), raw('$.state')
  redis.call('JSON.SET', KEYS[1], '$', ARGV[1])
  redis.call('JSON.MSET', KEYS[1], '$.created_at', created, KEYS[1], '$.seq', seq,
             KEYS[1], '$.state', state)
  return 'updated'
end
redis.call('JSON.SET', KEYS[1], '$', ARGV[1])
local seq = redis.call('INCR', KEYS[2])
redis.call('JSON.MSET', KEYS[1], '$.created_at', ARGV[2], KEYS[1], '$.seq', seq)
return 'created'
"""

# KEYS[1] execution document, KEYS[2] job document,
# KEYS[3..32] series: for scope in (tenant, job), for metric in (runs, success, failure,
#   dur_sum, dur_n): raw, 1h, 1d;
# KEYS[33..36] sketches: tenant hourly, tenant daily, job hourly, job daily.
# ARGV[1] document JSON, ARGV[2] status, ARGV[3] '1' if terminal, ARGV[4] metric timestamp
# (minute, ms) or '' to count nothing, ARGV[5] success 0/1, ARGV[6] failure 0/1,
# ARGV[7] duration ms or '', ARGV[8] document TTL ms (0 = none), ARGV[9] channel,
# ARGV[10] event if created, ARGV[11] event if updated, ARGV[12] raw retention ms,
# ARGV[13] compaction retention ms, ARGV[14] hourly sketch expire-at ms (0 = skip),
# ARGV[15] daily sketch expire-at ms (0 = skip), ARGV[16] started_at, ARGV[17] finished_at
# or 'null', ARGV[18] exec id as JSON string, ARGV[19] duration or 'null',
# ARGV[20] the time the run counts as a success or failure (finished, else started; ms).
# Returns 'created', 'updated' or 'duplicate'.
WRITE_EXECUTION = """
local outcome = 'created'
local prev = redis.call('JSON.GET', KEYS[1], '$.status')
if prev then
  if cjson.decode(prev)[1] ~= 'running' or ARGV[3] ~= '1' then return 'duplicate' end
  outcome = 'updated'
end
redis.call('JSON.SET', KEYS[1], '$', ARGV[1])
if tonumber(ARGV[8]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[8]) end

if ARGV[3] == '1' and ARGV[4] ~= '' then
  local values = {1, tonumber(ARGV[5]), tonumber(ARGV[6])}
  if ARGV[7] ~= '' then
    values[4] = tonumber(ARGV[7]); values[5] = 1
  else
    values[4] = 0; values[5] = 0
  end
  for scope = 0, 1 do
    for m = 1, 5 do
      local i = 3 + scope * 15 + (m - 1) * 3
      if redis.call('EXISTS', KEYS[i]) == 0 then
        redis.call('TS.CREATE', KEYS[i], 'RETENTION', ARGV[12], 'DUPLICATE_POLICY', 'SUM')
        for j = 1, 2 do
          if redis.call('EXISTS', KEYS[i + j]) == 0 then
            redis.call('TS.CREATE', KEYS[i + j], 'RETENTION', ARGV[13],
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
    local expire = {ARGV[14], ARGV[15], ARGV[14], ARGV[15]}
    for s = 1, 4 do
      local k = KEYS[32 + s]
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

if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  local state = cjson.decode(redis.call('JSON.GET', KEYS[2], '$.state'))[1]
  local started = tonumber(ARGV[16])
  local last = state['last_started_at']
  if last == nil or last == cjson.null or started >= last then
    redis.call('JSON.MSET',
      KEYS[2], '$.state.last_exec_id', ARGV[18],
      KEYS[2], '$.state.last_status', cjson.encode(ARGV[2]),
      KEYS[2], '$.state.last_started_at', ARGV[16],
      KEYS[2], '$.state.last_finished_at', ARGV[17],
      KEYS[2], '$.state.last_duration_ms', ARGV[19])
  end
  local at = tonumber(ARGV[20])
  local function advance(field)
    local cur = state[field]
    if cur == nil or cur == cjson.null or at > cur then
      redis.call('JSON.SET', KEYS[2], '$.state.' .. field, ARGV[20])
    end
  end
  if ARGV[5] == '1' then advance('last_success_at') end
  if ARGV[6] == '1' then advance('last_failure_at') end
end

if outcome == 'created' then
  redis.call('PUBLISH', ARGV[9], ARGV[10])
else
  redis.call('PUBLISH', ARGV[9], ARGV[11])
end
return outcome
"""

# KEYS[1] scratch key, KEYS[2..] sketches. ARGV: the quantiles.
# Merges the sketches that exist and answers the quantiles; nil when none exist.
QUANTILES = """
local present = {}
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then present[#present + 1] = KEYS[i] end
end
if #present == 0 then return nil end
local source = present[1]
if #present > 1 then
  redis.call('TDIGEST.MERGE', KEYS[1], #present, unpack(present))
  redis.call('PEXPIRE', KEYS[1], 60000)
  source = KEYS[1]
end
local result = redis.call('TDIGEST.QUANTILE', source, unpack(ARGV))
-- RedisBloom 2.8 answers nan for every quantile of a one-observation sketch; when all
-- observations are equal (min == max), that value is every quantile.
local low, high = redis.call('TDIGEST.MIN', source), redis.call('TDIGEST.MAX', source)
if low ~= 'nan' and low == high then
  for i = 1, #result do result[i] = low end
end
if #present > 1 then redis.call('DEL', KEYS[1]) end
return result
"""
