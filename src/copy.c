#include "kronos.h"
void kr_open_copy(lua_State *L) { (void)L; }
