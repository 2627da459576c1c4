-- The Kronos users table (the seed's single Alembic migration).
-- Revision: 4f1c2a9e7b30 (fixed: databases record it in kronos_version; never change it)
-- Revises: (base)
return {
    revision = "4f1c2a9e7b30",
    down_revision = nil,
    message = "create users table",

    up = function(op)
        op.create_table("users", {
            -- ids come from libuuid in the client (kronos.uuid()), so no server default
            { name = "id", type = "uuid", primary_key = true, nullable = false },
            { name = "email", type = "string(255)", nullable = false, unique = true },
            { name = "first_name", type = "string(100)" },
            { name = "last_name", type = "string(100)" },
            { name = "is_active", type = "boolean", nullable = false, server_default = true, index = true },
            { name = "profile_image_url", type = "string(2048)" },
            { name = "last_login", type = "timestamptz" },
            { name = "created_at", type = "timestamptz", nullable = false, server_default = op.sql("now()"), index = true },
            { name = "updated_at", type = "timestamptz", nullable = false, server_default = op.sql("now()"), index = true },
        }, {
            constraints = {
                { kind = "check", name = "ck_users_email_length", condition = "char_length(email) >= 5" },
            },
        })
        -- uq_users_email's unique index serves lookups by email: no separate ix_users_email
    end,

    down = function(op)
        -- the indexes and constraints go with the table
        op.drop_table("users")
    end,
}
