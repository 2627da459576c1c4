-- The users service of examples/openresty: JSON over HTTP onto kronos.users.
--   POST /users               JSON object -> 201 with the user, 409 duplicate_email, 400 invalid
--   GET  /users/<id>          200 with the user, 404
--   GET  /users?limit=&after= 200 {"users": [...], "next": cursor or null}
-- A user is a JSON object with all nine fields; SQL NULLs are JSON null. Errors are
-- {"error": {"code", "message", "field"}}. Invalid input is 400 Bad Request, not 422: nginx
-- (Debian's 1.22) has no reason phrase for 422 and this lua-nginx-module cannot set one.
-- Each nginx worker holds one connection, opened in init_worker_by_lua. libpq calls block the
-- worker while they run: fine for short queries like these, see the README for the trade-off.
local cjson = require "cjson.safe"
local kronos = require "kronos"

local M = {}

local db, users -- this worker's connection and model

local function connect()
    local conn, err = kronos.connect(os.getenv("DATABASE_URL"))
    if not conn then return nil, err end
    db, users = conn, kronos.users(conn)
    return users
end

function M.init_worker()
    local ok, err = connect()
    -- Not fatal: the first request tries again, and answers 503 while the database is away.
    if not ok then ngx.log(ngx.ERR, "kronos: worker connection: ", tostring(err)) end
end

-- The model on a live connection, reconnecting after a lost one.
local function model()
    if db and db:status() == "ok" then return users end
    if db then
        local ok, err = db:reset()
        if ok then return users end
        return nil, err
    end
    return connect()
end

local function reply(status, body)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.say(body)
    return ngx.exit(status)
end

local function json(status, value)
    return reply(status, assert(cjson.encode(value)))
end

-- kronos leaves a NULL column out of the user table; the API spells it null.
local FIELDS = { "id", "email", "first_name", "last_name", "is_active", "profile_image_url",
                 "last_login", "created_at", "updated_at" }

local function user_json(user)
    local out = {}
    for _, k in ipairs(FIELDS) do
        local v = user[k]
        if v == nil then v = cjson.null end
        out[k] = v
    end
    return assert(cjson.encode(out))
end

-- kronos error code -> HTTP status.
local function status_for(err)
    local code = err.code or ""
    if code == "duplicate_email" then return 409 end
    if code == "not_found" then return 404 end
    if code:match("^invalid_") then return 400 end
    if code == "connection" then return 503 end
    return 500
end

local function fail(err, status)
    status = status or status_for(err)
    if status >= 500 then ngx.log(ngx.ERR, "kronos: ", tostring(err)) end
    local body = { error = { code = err.code, message = err.message, field = err.field } }
    return json(status, body)
end

-- Runs a model method; a raised error (a bug, not a user mistake) becomes a logged 500.
local function call(method, ...)
    local m, err = model()
    if not m then return nil, err end
    local ok, res, res2 = pcall(m[method], m, ...)
    if not ok then
        return nil, kronos.error("internal", tostring(res))
    end
    return res, res2
end

local function create()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then
        return fail(kronos.error("invalid_body", "a JSON object is expected as the request body"), 400)
    end
    local fields, jerr = cjson.decode(body)
    if fields == nil then
        return fail(kronos.error("invalid_json", "the body is not JSON: " .. tostring(jerr)), 400)
    end
    -- `[]` decodes to the same empty table as `{}`: the body's first character tells them apart
    if type(fields) ~= "table" or fields[1] ~= nil or not body:find("^[ \t\r\n]*{") then
        return fail(kronos.error("invalid_body", "a JSON object is expected as the request body"), 400)
    end
    local user, err = call("create", fields)
    if not user then return fail(err) end
    ngx.header["Location"] = "/users/" .. user.id
    return reply(201, user_json(user))
end

local function page()
    local args = ngx.req.get_uri_args()
    local opts = {}
    if args.limit ~= nil then
        opts.limit = type(args.limit) == "string" and tonumber(args.limit, 10) or nil
        if not opts.limit or opts.limit % 1 ~= 0 then
            return fail(kronos.error("invalid_limit", "limit must be an integer"))
        end
    end
    if args.after ~= nil then
        if type(args.after) ~= "string" then
            return fail(kronos.error("invalid_cursor", "after must be given once"))
        end
        opts.after = args.after
    end
    local list, next_cursor = call("list", opts)
    if not list then return fail(next_cursor) end
    -- lua-cjson encodes an empty table as {}: the array is assembled here.
    local items = {}
    for i, user in ipairs(list) do items[i] = user_json(user) end
    return reply(200, ('{"users":[%s],"next":%s}'):format(table.concat(items, ","),
        assert(cjson.encode(next_cursor or cjson.null))))
end

-- /users
function M.collection()
    local method = ngx.req.get_method()
    if method == "POST" then return create() end
    if method == "GET" then return page() end
    ngx.header["Allow"] = "GET, POST"
    return fail(kronos.error("method_not_allowed", "use GET or POST"), 405)
end

-- /users/<id>
function M.item()
    if ngx.req.get_method() ~= "GET" then
        ngx.header["Allow"] = "GET"
        return fail(kronos.error("method_not_allowed", "use GET"), 405)
    end
    local id = ngx.var.uri:match("^/users/([^/]+)$")
    -- Anything that is not a UUID names no user.
    if not id or not kronos.is_uuid(id) then
        return fail(kronos.error("not_found", "no such user"), 404)
    end
    local user, err = call("get", id)
    if not user then
        return fail(err or kronos.error("not_found", "no such user"))
    end
    return reply(200, user_json(user))
end

return M
