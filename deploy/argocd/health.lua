-- Argo CD health check for sealcred.io/SealedStorageCred (Lua 5.1, as Argo CD runs it).
-- Healthy:     Ready=True for the object's current generation.
-- Progressing: no status yet, a generation the controller has not observed, or
--              Ready=False KmsUnavailable (retried with backoff; the last Secret is kept).
-- Degraded:    Ready=False for any other reason (InvalidSpec, DecryptFailed, AccessDenied,
--              SecretConflict, KmsError, ...): it will not fix itself.
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
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    if generation ~= nil and c.observedGeneration ~= nil and c.observedGeneration < generation then
      return hs
    end
    local message = c.reason or ""
    if c.message ~= nil and c.message ~= "" then
      message = message .. ": " .. c.message
    end
    hs.message = message
    if c.status == "True" then
      hs.status = "Healthy"
    elseif c.status == "False" and c.reason ~= "KmsUnavailable" then
      hs.status = "Degraded"
    end
    return hs
  end
end
return hs
