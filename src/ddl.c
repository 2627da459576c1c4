/* Placeholder until its issue lands: adds nothing to the module. */
#include "kronos.h"

void kr_open_ddl(lua_State *L)
{
    (void)L;
}
