-- Argo CD health check for agentpool.dev/BuildStep.
-- Succeeded and Skipped are Healthy: a step skipped after an earlier failure is the build working
-- as designed, and the failing step carries the Degraded status. Failed is Degraded. Cancelled is
-- Degraded too: the step is final and never ran to completion, and Suspended would suggest it can
-- be resumed, which a BuildStep cannot. Pending, Queued and Running are Progressing.
local hs = {}

local function explain(status, fallback, phase)
  -- The reason is left out when it only repeats the phase (reason Queued in phase Queued).
  local reason = status.reason
  local message = status.message
  local hasReason = reason ~= nil and reason ~= "" and reason ~= phase
  local hasMessage = message ~= nil and message ~= ""
  if hasReason and hasMessage then
    return reason .. ": " .. message
  elseif hasReason then
    return reason
  elseif hasMessage then
    return message
  end
  return fallback
end

-- Whether `text` already states the exit code (the operator's "exited with code 2").
local function mentionsCode(text, code)
  local c = tostring(code)
  for _, form in ipairs({"code " .. c, "exited " .. c, "exited with " .. c}) do
    local first, last = string.find(text, form, 1, true)
    if first ~= nil and not string.find(string.sub(text, last + 1, last + 1), "%d") then
      return true
    end
  end
  return false
end

local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to schedule the step"
  return hs
end

local phase = status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = explain(status, "Succeeded")
elseif phase == "Skipped" then
  hs.status = "Healthy"
  hs.message = "Skipped: " .. explain(status, "an earlier step of the build failed", "Skipped")
elseif phase == "Failed" then
  hs.status = "Degraded"
  local detail = explain(status, "the step failed")
  if status.exitCode ~= nil and not mentionsCode(detail, status.exitCode) then
    detail = detail .. " (exit code " .. tostring(status.exitCode) .. ")"
  end
  hs.message = detail
elseif phase == "Cancelled" then
  hs.status = "Degraded"
  hs.message = "Cancelled: " .. explain(status, "the step was cancelled", "Cancelled")
elseif phase == "Pending" or phase == "Queued" or phase == "Running" then
  hs.status = "Progressing"
  hs.message = phase .. ": " .. explain(status, "in progress", phase)
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
