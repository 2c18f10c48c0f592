-- Argo CD health check for agentpool.dev/AgentPool.
-- Healthy when Ready=True, Degraded when Degraded=True, Progressing otherwise, including while
-- the operator has not yet observed the latest spec (status.observedGeneration < generation).
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

-- A condition computed from an older spec says nothing about the current one.
local function stale(c, generation)
  return c ~= nil and generation ~= nil and c.observedGeneration ~= nil
    and c.observedGeneration < generation
end

local status = obj.status
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report the pool's status"
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

-- In order: a Degraded pool is reported so even when it is also Ready.
local verdicts = {
  { type = "Degraded", health = "Degraded", fallback = "The pool is degraded" },
  { type = "Ready", health = "Healthy", fallback = "The pool is ready" },
}
for _, verdict in ipairs(verdicts) do
  local found = condition(status, verdict.type)
  if found ~= nil and found.status == "True" and not stale(found, generation) then
    hs.status = verdict.health
    hs.message = describe(found, verdict.fallback)
    return hs
  end
end

hs.status = "Progressing"
hs.message = describe(condition(status, "Ready"), "Waiting for the pool to become ready")
return hs
