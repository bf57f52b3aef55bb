#pragma once
// Placeholder: replaced by the fake disk with power-loss simulation.
