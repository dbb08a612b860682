// Whether the CUDA part of the extension can run here, and why not.
#pragma once
#include <string>

namespace reactfast {
// True when compiled with CUDA and a device with a working driver is present;
// otherwise `reason` says why (not compiled, no driver, no device ...).
bool cuda_runtime_status(std::string& reason);
// Number of visible devices, 0 when unavailable.
int cuda_device_count();
}  // namespace reactfast
