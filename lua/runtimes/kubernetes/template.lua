-- The operator's pod template (`kubernetes.pod_template_file`): a YAML Pod (or PodTemplate) whose metadata
-- labels and annotations and whose spec lie UNDER the pod the Kubernetes runtime makes for a sandbox:
-- nodeSelector, tolerations, affinity, runtimeClassName, priorityClassName, extra labels, a sidecar...
-- Ours win on every conflict.
--
--   load(path, read_file)   the file -> { metadata = { labels, annotations }, spec } or nil, err
--   merge(template, pod)    pure: a new pod manifest, `pod` laid over `template`
--
-- Merge rules: mappings merge key by key (ours win); lists whose items all have a `name` (containers,
-- volumes, env, imagePullSecrets...) merge item by item by name (a template item of the same name lies
-- under ours; ours come first, then the template's other items); any other list, and any scalar, is ours
-- when we set it. Template labels and annotations under `opensandbox.io/` are dropped: the sandbox's
-- identity is ours alone. YAML nulls and empty collections are dropped (YAML cannot tell `[]` from `{}`
-- once loaded, and neither changes a pod). The template is trusted configuration: it can make sandboxes
-- less isolated (hostNetwork, privileged), as an operator may mean to.
local lyaml = require("lyaml")
local json = require("common.json")

local M = {}

M.RESERVED_PREFIX = "opensandbox.io/"

local function is_array(t)
    if type(t) ~= "table" then
        return false
    end
    if getmetatable(t) == getmetatable(json.array()) then
        return true
    end
    local n = #t
    if n == 0 then
        return false
    end
    for k in pairs(t) do
        if math.type(k) ~= "integer" or k < 1 or k > n then
            return false
        end
    end
    return true
end

-- YAML (or decoded JSON) data -> plain tables for JSON: nulls and empty collections dropped, sequences marked
-- as arrays
local function clean(v)
    if v == lyaml.null or v == json.null then
        return nil
    end
    if type(v) ~= "table" then
        return v
    end
    if is_array(v) then
        local out = json.array()
        for _, x in ipairs(v) do
            local c = clean(x)
            if c ~= nil then
                out[#out + 1] = c
            end
        end
        return #out > 0 and out or nil
    end
    local out, any = {}, false
    for k, x in pairs(v) do
        local c = clean(x)
        if c ~= nil then
            out[k], any = c, true
        end
    end
    return any and out or nil
end

local function drop_reserved(map)
    if type(map) ~= "table" then
        return nil
    end
    local out = {}
    for k, v in pairs(map) do
        if type(k) == "string" and k:sub(1, #M.RESERVED_PREFIX) ~= M.RESERVED_PREFIX then
            out[k] = tostring(v)
        end
    end
    return next(out) and out or nil
end

--- The template of YAML text (`where` names it in errors): { metadata = { labels, annotations }, spec },
--- or nil and the error.
function M.parse(text, where)
    local ok, doc = pcall(lyaml.load, text)
    if not ok then
        return nil, string.format("pod template %s: invalid YAML: %s", where, tostring(doc))
    end
    doc = clean(doc)
    if type(doc) ~= "table" or is_array(doc) then
        return nil, string.format("pod template %s: not a mapping", where)
    end
    if doc.kind ~= nil and doc.kind ~= "Pod" and doc.kind ~= "PodTemplate" then
        return nil, string.format("pod template %s: kind %s is neither Pod nor PodTemplate", where, tostring(doc.kind))
    end
    if type(doc.template) == "table" then -- a PodTemplate
        doc = doc.template
    end
    local spec = doc.spec
    if spec ~= nil and (type(spec) ~= "table" or is_array(spec)) then
        return nil, string.format("pod template %s: spec is not a mapping", where)
    end
    local meta = type(doc.metadata) == "table" and doc.metadata or {}
    return {
        metadata = { labels = drop_reserved(meta.labels), annotations = drop_reserved(meta.annotations) },
        spec = spec or {},
    }
end

--- The template of a decoded object { metadata = { labels, annotations }, spec } (a pool's PodTemplateSpec,
--- runtimes.kubernetes.pool_template, already checked): cleaned as a file's, labels and annotations under
--- opensandbox.io/ dropped.
function M.from_object(doc)
    doc = clean(doc) or {}
    local meta = type(doc.metadata) == "table" and doc.metadata or {}
    return {
        metadata = { labels = drop_reserved(meta.labels), annotations = drop_reserved(meta.annotations) },
        spec = type(doc.spec) == "table" and doc.spec or {},
    }
end

--- Reads and parses the template file at `path` (read_file: fn(path) -> text | nil, err).
function M.load(path, read_file)
    local text, err = read_file(path)
    if not text then
        return nil, string.format("pod template %s: cannot be read: %s", path, tostring(err))
    end
    return M.parse(text, path)
end

local function all_named(list)
    for _, x in ipairs(list) do
        if type(x) ~= "table" or type(x.name) ~= "string" then
            return false
        end
    end
    return true
end

local merge

-- two lists of named items: ours (each over the template's item of its name), then the template's others
local function merge_named(base, ours)
    local by_name = {}
    for _, x in ipairs(base) do
        by_name[x.name] = x
    end
    local out, taken = json.array(), {}
    for _, x in ipairs(ours) do
        out[#out + 1] = merge(by_name[x.name], x)
        taken[x.name] = true
    end
    for _, x in ipairs(base) do
        if not taken[x.name] then
            out[#out + 1] = x
        end
    end
    return out
end

--- `ours` laid over `base` (see the rules at the top). Neither is changed; shared subtables are not copied.
function merge(base, ours)
    if ours == nil then
        return base
    end
    if base == nil or type(base) ~= "table" or type(ours) ~= "table" then
        return ours
    end
    local barr, oarr = is_array(base), is_array(ours)
    if barr and oarr then
        if all_named(base) and all_named(ours) then
            return merge_named(base, ours)
        end
        return ours
    end
    if barr or oarr then
        return ours
    end
    local out = {}
    for k, v in pairs(base) do
        out[k] = v
    end
    for k, v in pairs(ours) do
        out[k] = merge(base[k], v)
    end
    return out
end
M.merge_values = merge

--- `over` laid over `under` (two templates, either may be nil or false): the template of both.
function M.layer(under, over)
    if not under then
        return over or nil
    end
    if not over then
        return under
    end
    return {
        metadata = { labels = merge(under.metadata.labels, over.metadata.labels),
            annotations = merge(under.metadata.annotations, over.metadata.annotations) },
        spec = merge(under.spec, over.spec),
    }
end

--- The pod manifest `pod` laid over `template` (nil: `pod` itself).
function M.merge(template, pod)
    if not template then
        return pod
    end
    local out = merge({ metadata = template.metadata, spec = template.spec }, pod)
    -- only labels and annotations come from the template's metadata
    out.metadata = merge({ labels = template.metadata.labels, annotations = template.metadata.annotations },
        pod.metadata)
    return out
end

return M
