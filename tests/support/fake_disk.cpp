#include "fake_disk.h"
