-- Argo CD health check for sealcred.io/SealedStorageCred (Lua 5.1, as Argo CD runs it).
-- Healthy:     Ready=True for the object's current generation.
-- Progressing: no status yet, a generation the controller has not observed, or
--              Reconciling=True (a transient failure such as KmsUnavailable: retried with
--              backoff, the last Secret is kept).
-- Degraded:    Stalled=True: a failure that needs someone to act (InvalidSpec, DecryptFailed,
--              AccessDenied, SecretConflict, SecretWriteForbidden, AdmissionDenied, ...).
--              From a controller that sets neither Reconciling nor Stalled: Ready=False for
--              any reason but KmsUnavailable.
local hs = { status = "Progressing", message = "Waiting for sealcred-controller" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for sealcred-controller to observe generation " .. tostring(generation)
  return hs
end
local ready, stalled, reconciling
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    ready = c
  elseif c.type == "Stalled" and c.status == "True" then
    stalled = c
  elseif c.type == "Reconciling" and c.status == "True" then
    reconciling = c
  end
end
if ready == nil then
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  return hs
end
local message = ready.reason or ""
if ready.message ~= nil and ready.message ~= "" then
  message = message .. ": " .. ready.message
end
hs.message = message
if ready.status == "True" then
  hs.status = "Healthy"
elseif stalled ~= nil then
  hs.status = "Degraded"
elseif reconciling == nil and ready.status == "False" and ready.reason ~= "KmsUnavailable" then
  hs.status = "Degraded"
end
return hs
