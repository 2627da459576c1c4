-- kronos.users: the Kronos user model. Validation and SQL live in C (src/users.c); this file
-- only binds the model to a connection.
local core = require "kronos.core"

local M = {}

-- new(conn) -> the users object: users:create{...}, :get(id), :find_by_email(email),
-- :update(id, fields), :activate(id), :deactivate(id), :record_login(id), :delete(id),
-- :list{active =, limit =, after =}, :count{active =}, :create_many(list).
function M.new(conn)
    return core.users_new(conn)
end

return M
