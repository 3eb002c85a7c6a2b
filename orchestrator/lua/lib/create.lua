-- create_job: create a job (the first update, or the first key of a secure-sum job, does it); needs emit.
--   tomb: the job's tombstone (the last version of an expired job of the same id: a new job carries on
--   from it, so listeners that saw the old one see a gapless sequence); indexes: {created, IN_PROGRESS,
--   deadlines}; fields: extra hash fields (aggregation backend, vector layout); instance: a random id of this
--   job instance (a jobId may be used again once a job has expired; the instance never repeats).
-- Returns the version the job carries on from (0 for a new id).
local function create_job(job, events, tomb, indexes, job_id, total, schema, digest, now, at, history, channel,
                          deadline, fields, instance)
  local base = tonumber(redis.call('GET', tomb) or '0')
  redis.call('DEL', tomb)
  redis.call('HSET', job, 'jobId', job_id, 'totalClients', total, 'doneCount', 0, 'schema', schema,
    'schemaDigest', digest, 'finalResult', '', 'status', 'IN_PROGRESS', 'createdAt', now, 'updatedAt', now,
    'version', base, 'deadlineAt', deadline, 'instance', instance, unpack(fields))
  redis.call('ZADD', indexes[1], now, job_id)
  redis.call('ZADD', indexes[2], now, job_id)
  redis.call('ZADD', indexes[3], tonumber(deadline), job_id)
  emit(job, events, job_id, at, history, channel, 'job.created',
    {totalClients = total, status = 'IN_PROGRESS', instanceId = instance})
  return base
end

-- The digest of the job's stored schema ('' when it has none): schemas are compared by digest, so an
-- update does not load a large schema. A job stored before digests existed is compared by its text.
local function schema_digest(job, stored, schema, digest)
  if stored and stored ~= '' then return stored end
  if redis.call('HSTRLEN', job, 'schema') == 0 then return '' end
  if schema ~= '' and redis.call('HGET', job, 'schema') == schema then return digest end
  return 'stored-before-digests'
end
