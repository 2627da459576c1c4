/* Placeholder until its issue lands: adds nothing to the module. */
#include "kronos.h"

void kr_open_migrate(lua_State *L)
{
    (void)L;
}
