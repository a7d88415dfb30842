-- The status vocabulary of the runtime contract (API.md §3.2): the messages a runtime's statuses carry and
-- the exit message, the same words on every runtime. Adapters build statuses from these; the service's
-- own messages (deleting, expiring, interrupted provisioning) are in sandbox/model.lua, which takes these.
local M = {}

M.MESSAGES = {
    CONTAINER_STARTING = "Sandbox container is starting.",
    CONTAINER_RUNNING = "Sandbox container is running.",
    CONTAINER_RESTARTING = "Sandbox container is restarting.",
    CONTAINER_PAUSED = "Sandbox container is paused.",
    CONTAINER_REMOVING = "Sandbox is being deleted.",
    CONTAINER_EXITED = "Sandbox container exited successfully.",
}

--- "Sandbox container exited with code {n}." (with " (out of memory)" before the dot when oom).
function M.exit_message(code, oom)
    if oom then
        return string.format("Sandbox container exited with code %d (out of memory).", code)
    end
    return string.format("Sandbox container exited with code %d.", code)
end

return M
