#include "duplex/store/pool.h"
