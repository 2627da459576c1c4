-- Writes N generated migrations, alike for kronos and Alembic, each creating one table with
-- three columns and an index, chained base -> head:
--   lua5.4 bench/gen500.lua DIR N   ->  DIR/kronos/*.lua, DIR/alembic/{alembic.ini,env.py,versions/*.py}
local dir, n = arg[1], tonumber(arg[2] or "500")
local root = assert(os.getenv("KRONOS_ROOT"), "KRONOS_ROOT")

local function write(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
end

local function copy(from, to)
    local f = assert(io.open(from, "rb"))
    write(to, f:read("a"))
    f:close()
end

os.execute(("rm -rf '%s' && mkdir -p '%s/kronos' '%s/alembic/versions'"):format(dir, dir, dir))
copy(root .. "/bench/alembic/env.py", dir .. "/alembic/env.py")
copy(root .. "/bench/alembic/alembic.ini", dir .. "/alembic/alembic.ini")

for i = 1, n do
    local rev, down, tbl = ("m%04d"):format(i), i > 1 and ("m%04d"):format(i - 1) or nil, ("t%04d"):format(i)
    write(("%s/kronos/%s_%s.lua"):format(dir, rev, tbl), ([[
return {
    revision = %q,
    down_revision = %s,
    message = "create %s",
    up = function(op)
        op.create_table(%q, {
            { name = "id", type = "bigint", primary_key = true },
            { name = "name", type = "string(100)", nullable = false },
            { name = "created_at", type = "timestamptz", nullable = false, server_default = op.sql("now()") },
        })
        op.create_index(nil, %q, { "name" })
    end,
    down = function(op)
        op.drop_table(%q)
    end,
}
]]):format(rev, down and ("%q"):format(down) or "nil", tbl, tbl, tbl, tbl))
    write(("%s/alembic/versions/%s_%s.py"):format(dir, rev, tbl), ([[
"""create %s"""
import sqlalchemy as sa
from alembic import op

revision = %q
down_revision = %s
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        %q,
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_%s"),
    )
    op.create_index("ix_%s_name", %q, ["name"])


def downgrade():
    op.drop_table(%q)
]]):format(tbl, rev, down and ("%q"):format(down) or "None", tbl, tbl, tbl, tbl, tbl))
end
io.write("generated=", n, "\n")
